"""Ensembl gene IDs are recognised by their full pattern, so symbols such as ENSA are symbols."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from geneattn.genes import ensembl_id, is_ensembl_id, looks_ensembl, strip_version
from geneattn.targets import choose_targets
from geneattn.tokenize import map_genes, study_gene_names
from geneattn.universe import column_gene_ids

# real HGNC symbols that start with ENS, and their Ensembl IDs (the pinned symbol map's)
NAME_MAP = {
    "ENSA": "ENSG00000143420",
    "ENSAP1": "ENSG00000224274",
    "ENSAP2": "ENSG00000259032",
    "CCL5": "ENSG00000271503",
}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ENSG00000143420", True),
        ("ENSG00000143420.12", True),
        ("ENSMUSG00000017167", True),
        ("ENSA", False),
        ("ENSAP1", False),
        ("ENSG", False),
        ("ENSG0000014342", False),  # 10 digits
        ("ENSG00000143420.", False),
        ("xENSG00000143420", False),
        ("CCL5", False),
    ],
)
def test_ensembl_ids_by_their_full_pattern(name, expected):
    assert is_ensembl_id(name) is expected


def test_versions_are_stripped_from_ids_only():
    assert strip_version("ENSG00000143420.12") == "ENSG00000143420"
    assert strip_version("ENSA") == "ENSA"
    assert strip_version("RP11-34P13.7") == "RP11-34P13.7"
    assert ensembl_id("ENSA", NAME_MAP) == "ENSG00000143420"
    assert ensembl_id("ENSG00000271503.3", NAME_MAP) == "ENSG00000271503"
    assert ensembl_id("ENSAP9", NAME_MAP) == ""


def test_symbols_starting_with_ens_do_not_look_like_ids():
    assert not looks_ensembl(["ENSA", "ENSAP1", "ENSAP2", "CD3E"])
    assert looks_ensembl(["ENSG00000143420", "ENSG00000224274.1", "ENSA"])


def test_universe_columns_map_ensa_through_the_symbol_map():
    ids = column_gene_ids(
        ["ENSA", "ENSAP1", "CCL5", "ENSG00000259032.2", "NOPE"],
        NAME_MAP,
        var_gene_ids=["", "", "", "", "ENSG00000000001"],
    )
    assert ids.tolist() == [
        "ENSG00000143420",
        "ENSG00000224274",
        "ENSG00000271503",
        "ENSG00000259032",
        "ENSG00000000001",
    ]


def test_tokenizer_takes_var_gene_ids_when_names_are_ens_symbols():
    adata = ad.AnnData(
        np.zeros((1, 4), dtype=np.float32),
        var=pd.DataFrame(
            {"gene_ids": ["ENSG00000143420", "ENSG00000224274", "ENSG00000259032", "ENSG1"]},
            index=["ENSA", "ENSAP1", "ENSAP2", "CD3E"],
        ),
    )
    assert study_gene_names(adata, gene_id="ensembl").tolist()[:3] == [
        "ENSG00000143420",
        "ENSG00000224274",
        "ENSG00000259032",
    ]
    ensembl, token, _ = map_genes(
        np.array(["ENSG00000143420.7", "ENSA"]),
        gene_id="ensembl",
        token_dictionary={"ENSG00000143420": 0},
        gene_medians=None,
    )
    assert ensembl.tolist() == ["ENSG00000143420", "ENSA"] and token.tolist() == [0, -1]


def test_listed_ensa_is_a_target():
    vocabulary = np.array(["ENSG00000143420", "ENSG00000271503", "ENSG00000224274"])
    presence = np.array([37, 50, 40])
    targets = choose_targets(
        genes_from="list",
        vocabulary=vocabulary,
        presence=presence,
        expressed=np.arange(3),
        name_map=NAME_MAP,
        genes=["ENSA", "CCL5", "ENSG00000224274.4"],
    )
    assert targets.tokens.tolist() == [0, 1, 2] and targets.skipped.empty


def test_demo_study_keeps_ensa(resources_dir):
    """On the demo data ENSA has a token, is expressed in Tumor cells and can be perturbed."""
    from geneattn.resources.load import load_gene_name_map, load_token_dictionary
    from geneattn.tokenize import tokenize_anndata

    gf = resources_dir / "geneformer_v1"
    adata = ad.read_h5ad(resources_dir / "wu2020_200.h5ad")
    tumor = adata[adata.obs["source"] == "Tumor"].copy()
    name_map = load_gene_name_map(gf / "gene_name_id.tsv")
    cells, _ = tokenize_anndata(
        tumor,
        token_dictionary=load_token_dictionary(gf / "token_dictionary.tsv"),
        name_map=name_map,
        medians="none",
    )
    presence = np.bincount(cells.tokens, minlength=len(cells.vocabulary))
    chosen = choose_targets(
        genes_from="list",
        vocabulary=cells.vocabulary,
        presence=presence,
        expressed=np.flatnonzero(presence >= 5),
        name_map=name_map,
        genes=["ENSA", "CCL5"],
    )
    assert cells.vocabulary[chosen.tokens].tolist() == [name_map["ENSA"], name_map["CCL5"]]

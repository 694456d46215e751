"""Perturbation targets: genes asked for but not perturbed are named, with the reason."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from geneattn.errors import InputError
from geneattn.targets import SKIPPED_COLUMNS, choose_targets

VOCABULARY = np.array([f"ENSG{t:011d}" for t in range(6)])
#: case cells expressing each token: tokens 1 and 4 in too few
PRESENCE = np.array([9, 2, 30, 12, 0, 7])
NAMES = {f"G{t}": f"ENSG{t:011d}" for t in range(6)}


def choose(**kw):
    kw.setdefault("min_cells", 5)
    return choose_targets(
        vocabulary=VOCABULARY,
        presence=PRESENCE,
        expressed=np.flatnonzero(PRESENCE >= kw["min_cells"]),
        name_map=NAMES,
        **kw,
    )


def test_listed_genes_skipped_are_named_with_the_reason(caplog):
    with caplog.at_level(logging.WARNING, logger="geneattn.targets"):
        chosen = choose(genes_from="list", genes=["TTN", "G1", "G2", "G3", "MYH7", "G2"])
    assert chosen.tokens.tolist() == [2, 3]
    skipped = chosen.skipped
    assert list(skipped.columns) == list(SKIPPED_COLUMNS)
    assert skipped.values.tolist() == [
        ["TTN", "", -1, "not_in_vocabulary", -1],
        ["G1", "ENSG00000000001", -1, "too_few_case_cells", 2],
        ["MYH7", "", -1, "not_in_vocabulary", -1],
    ]
    message = caplog.text
    assert "3 listed genes skipped" in message
    assert "TTN (not in the token vocabulary)" in message
    assert "G1 (in 2 case cells, fewer than 5)" in message


def test_genes_beyond_max_genes_are_skipped_too():
    chosen = choose(genes_from="list", genes=["G3", "G2", "G0"], max_genes=2)
    assert chosen.tokens.tolist() == [3, 2]
    assert chosen.skipped[["gene", "reason", "case_cells"]].values.tolist() == [
        ["G0", "over_max_genes", 9]
    ]


def test_no_listed_gene_left_is_one_clear_error():
    with pytest.raises(InputError) as err:
        choose(genes_from="list", genes=["TTN", "G4"])
    text = str(err.value)
    assert "\n" not in text
    assert text == (
        "none of the 2 listed genes can be perturbed: TTN (not in the token vocabulary), "
        "G4 (in 0 case cells, fewer than 5)"
    )


def test_hubs_passed_over_are_skipped_and_the_next_hubs_taken():
    hubs = pd.DataFrame(
        {
            "gene": ["G1", "G0", "G2", "G4", "G3", "G5"],
            "gene_id": list(VOCABULARY[[1, 0, 2, 4, 3, 5]]),
            "module": [1, 1, 1, 2, 2, 2],
            "hub_rank": [1, 2, 3, 1, 2, 3],
        }
    )
    chosen = choose(genes_from="hubs", hubs=hubs, hubs_per_module=2)
    assert chosen.tokens.tolist() == [0, 2, 3, 5]
    assert chosen.skipped[["gene", "module", "reason"]].values.tolist() == [
        ["G1", 1, "too_few_case_cells"],
        ["G4", 2, "too_few_case_cells"],
    ]
    # one hub per module: the passed-over hubs above it are named, those below are not asked for
    one = choose(genes_from="hubs", hubs=hubs, hubs_per_module=1)
    assert one.tokens.tolist() == [0, 3]
    assert one.skipped["gene"].tolist() == ["G1", "G4"]


def test_expressed_genes_skip_nothing():
    chosen = choose(genes_from="expressed", max_genes=3)
    assert chosen.tokens.tolist() == [2, 3, 0] and chosen.skipped.empty


def test_cli_writes_the_skipped_table_and_fails_when_none_is_left(tmp_path, capsys, caplog):
    import anndata as ad

    from geneattn.cli import main
    from geneattn.tokenize import TokenizedCells, save_tokens

    # 10 Tumor cells hold tokens 0..2; token 3 only in 2 of them
    seqs = [[0, 1, 2, 3] if c < 2 else [0, 1, 2] for c in range(10)] + [[0, 1]] * 4
    cells = TokenizedCells(
        tokens=np.concatenate(seqs).astype(np.int32),
        offsets=np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64),
        cell_ids=np.array([f"c{i}" for i in range(len(seqs))]),
        vocabulary=VOCABULARY,
    )
    save_tokens(tmp_path / "tokens.npz", cells)
    labels = ["Tumor"] * 10 + ["NAT"] * 4
    obs = pd.DataFrame({"source": labels}, index=cells.cell_ids)
    ad.AnnData(np.zeros((14, 1), dtype=np.float32), obs=obs).write_h5ad(tmp_path / "qc.h5ad")
    names = "".join(f"{g}\t{e}\n" for g, e in NAMES.items())
    (tmp_path / "names.tsv").write_text("symbol\tgene_id\n" + names)
    args = ["perturb-plan", str(tmp_path / "tokens.npz"), "--obs", str(tmp_path / "qc.h5ad")]
    args += ["--condition-column", "source", "--case", "Tumor", "--min-cells", "5"]
    args += ["--gene-names", str(tmp_path / "names.tsv"), "--genes-from", "list"]
    outs = ["--out", str(tmp_path / "plan.npz"), "--out-skipped", str(tmp_path / "skipped.tsv")]
    with caplog.at_level(logging.WARNING, logger="geneattn.targets"):
        assert main([*args, "--genes", "TTN", "G3", "G0", *outs]) == 0, capsys.readouterr().err
    skipped = pd.read_csv(tmp_path / "skipped.tsv", sep="\t", keep_default_na=False)
    assert skipped.to_dict("records") == [
        {
            "gene": "TTN",
            "gene_id": "",
            "module": -1,
            "reason": "not_in_vocabulary",
            "case_cells": -1,
        },
        {
            "gene": "G3",
            "gene_id": "ENSG00000000003",
            "module": -1,
            "reason": "too_few_case_cells",
            "case_cells": 2,
        },
    ]
    assert "TTN (not in the token vocabulary), G3 (in 2 case cells, fewer than 5)" in caplog.text
    # nothing left: exit 2, one line naming both genes, no outputs
    for path in (tmp_path / "plan.npz", tmp_path / "skipped.tsv"):
        path.unlink()
    assert main([*args, "--genes", "TTN", "G3", *outs]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("geneattn perturb-plan: error: none of the 2 listed genes")
    assert not (tmp_path / "plan.npz").exists() and not (tmp_path / "skipped.tsv").exists()

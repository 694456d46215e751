"""The module-analysis stage on a small synthetic study: planted modules, CLI, API."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import geneattn as ga
from geneattn.cli import main
from geneattn.errors import InputError
from geneattn.module_study import PRESERVATION_COLUMNS, TRAIT_COLUMNS, analyse_study_modules
from geneattn.network import GeneNetwork, save_network, write_table
from geneattn.store import network_to_uns

N_GENES = 30
#: Module 1: genes 0-9; module 2: genes 10-19; genes 20-29 unassigned.
MODULES = np.array([1] * 10 + [2] * 10 + [0] * 10)
GENE_IDS = [f"ENSG{i:011d}" for i in range(N_GENES)]
SYMBOLS = [f"G{i}" for i in range(N_GENES)]


def _counts(n_cells: int = 160, seed: int = 0) -> ad.AnnData:
    """Poisson counts: module 1's genes follow a cell factor raised in the Tumor cells,
    module 2's another factor; 8 patients, each with cells of both conditions."""
    rng = np.random.default_rng(seed)
    source = np.tile(["Tumor", "NAT"], n_cells // 2)
    patient = np.repeat([f"P{i}" for i in range(8)], n_cells // 8)
    f1 = rng.standard_normal(n_cells) + 0.8 * (source == "Tumor")
    f2 = rng.standard_normal(n_cells)
    log_rate = np.full((n_cells, N_GENES), 1.5)
    log_rate[:, :10] += 0.7 * f1[:, None]
    log_rate[:, 10:20] += 0.7 * f2[:, None]
    x = rng.poisson(np.exp(log_rate)).astype(np.float32)
    # n_counts as QC counts it, over the whole transcriptome (genes not in this table too):
    # normalisation by a library this large barely couples the 30 genes
    n_counts = x.sum(axis=1) + rng.poisson(5000, n_cells)
    obs = pd.DataFrame(
        {"source": source, "patient": patient, "n_counts": n_counts},
        index=[f"cell{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame({"gene_ids": GENE_IDS}, index=SYMBOLS)
    return ad.AnnData(X=sparse.csr_matrix(x), obs=obs, var=var)


def _network(condition: str, *, keep_module_2: bool, seed: int) -> GeneNetwork:
    """Mean attention with both modules' blocks (control), or the same pairs with a little
    noise and module 2's block replaced by background weights (case)."""
    rng = np.random.default_rng(0)
    w = rng.uniform(0.0, 0.01, (N_GENES, N_GENES))
    same = (MODULES[:, None] == MODULES[None, :]) & (MODULES[:, None] > 0)
    w[same] += rng.uniform(0.02, 0.06, (N_GENES, N_GENES))[same]
    if not keep_module_2:
        noise = np.random.default_rng(seed)
        w += noise.normal(0.0, 0.002, w.shape)
        w[np.ix_(range(10, 20), range(10, 20))] = noise.uniform(0.0, 0.01, (10, 10))
        w = np.clip(w, 1e-6, None)
    w = (w + w.T) / 2
    np.fill_diagonal(w, 0.0)
    mean = sparse.csr_matrix(w)
    return GeneNetwork(
        gene_ids=np.array(GENE_IDS),
        gene_symbols=np.array(SYMBOLS),
        adjacency=mean.copy(),
        mean_attention=mean,
        incoming=w.sum(axis=0),
        gene_cells=np.full(N_GENES, 80, dtype=np.int64),
        n_cells=80,
        condition=condition,
        directed=False,
        params={},
    )


def _modules() -> pd.DataFrame:
    return pd.DataFrame({"gene": SYMBOLS, "gene_id": GENE_IDS, "module": MODULES})


def _study(root):
    counts, modules = _counts(), _modules()
    case, control = (
        _network("Tumor", keep_module_2=False, seed=1),
        _network("NAT", keep_module_2=True, seed=2),
    )
    counts.write_h5ad(root / "qc.h5ad")
    write_table(root / "modules.tsv", modules)
    save_network(root / "case.npz", case)
    save_network(root / "control.npz", control)
    return counts, modules, case, control


OPTIONS = {"trait_permutations": 500, "preservation_permutations": 50, "seed": 3}


def _cli_args(root, out, counts="qc.h5ad"):
    return [
        "module-analysis",
        "--modules",
        str(root / "modules.tsv"),
        "--counts",
        str(root / counts),
        "--condition-column",
        "source",
        "--case",
        "Tumor",
        "--control",
        "NAT",
        "--sample-column",
        "patient",
        "--case-network",
        str(root / "case.npz"),
        "--control-network",
        str(root / "control.npz"),
        "--trait-permutations",
        "500",
        "--preservation-permutations",
        "50",
        "--seed",
        "3",
        "--out-kme",
        str(out / "module_kme.tsv"),
        "--out-eigengenes",
        str(out / "module_eigengenes.tsv"),
        "--out-traits",
        str(out / "module_traits.tsv"),
        "--out-preservation",
        str(out / "module_preservation.tsv"),
    ]


NAMES = ("module_kme.tsv", "module_eigengenes.tsv", "module_traits.tsv", "module_preservation.tsv")


def test_planted_modules_have_high_own_kme_and_a_kept_module_is_preserved():
    counts, modules = _counts(), _modules()
    result = analyse_study_modules(
        modules,
        counts,
        condition_column="source",
        case="Tumor",
        control="NAT",
        sample_column="patient",
        case_network=_network("Tumor", keep_module_2=False, seed=1),
        control_network=_network("NAT", keep_module_2=True, seed=2),
        **OPTIONS,
    )
    assert result.ids.tolist() == [1, 2]
    kme = result.kme
    assigned = kme[kme["module"] > 0]
    # every planted gene correlates with its own eigengene, and more than with the other
    assert (assigned["kme"] > 0.5).all(), assigned["kme"].min()
    own_col = np.where(assigned["module"] == 1, assigned["kme_M1"], assigned["kme_M2"])
    other = np.where(assigned["module"] == 1, assigned["kme_M2"], assigned["kme_M1"])
    assert (own_col > np.abs(other) + 0.3).all()
    assert not assigned["weak_member"].any()
    noise = kme[kme["module"] == 0]
    assert noise["kme"].isna().all() and noise["kme_rank"].isna().all()
    assert (noise[["kme_M1", "kme_M2"]].abs() < 0.35).all().all()
    # hub ranks: 1..10 within each module, by decreasing kME
    for m in (1, 2):
        members = kme[kme["module"] == m].sort_values("kme_rank")
        assert members["kme_rank"].tolist() == list(range(1, 11))
        assert members["kme"].is_monotonic_decreasing

    # module 1 is raised in the Tumor cells: paired over the 8 patients
    traits = result.traits
    assert list(traits.columns) == list(TRAIT_COLUMNS)
    assert traits["unit"].tolist() == ["samples_paired"] * 2
    assert traits["n_units"].tolist() == [8, 8] and traits["n_genes"].tolist() == [10, 10]
    one, two = traits.iloc[0], traits.iloc[1]
    assert one["diff"] > 0.5 and one["p_value"] <= 2 / 2**8
    assert two["p_value"] > one["p_value"]

    # preservation: module 1 kept in the case network, module 2 shuffled
    pres = result.preservation
    assert list(pres.columns) == list(PRESERVATION_COLUMNS)
    assert pres["reference"].tolist() == ["NAT", "NAT"] and pres["test"].tolist() == ["Tumor"] * 2
    assert pres.loc[0, "z_summary"] > 5 and pres.loc[1, "z_summary"] < 2
    assert pres.loc[0, "z_summary"] > pres.loc[1, "z_summary"] + 3

    # eigengene table: one row per cell, condition and sample, one ME column per module
    table = result.eigengene_table
    assert list(table.columns) == ["cell", "condition", "sample", "ME1", "ME2"]
    assert table["cell"].tolist() == counts.obs_names.tolist()
    np.testing.assert_allclose(table[["ME1", "ME2"]].std(ddof=0), 1.0)


def test_without_samples_the_unit_is_cells_and_single_condition_has_no_comparisons():
    counts, modules = _counts(), _modules()
    result = analyse_study_modules(
        modules, counts, condition_column="source", case="Tumor", control="NAT", **OPTIONS
    )
    assert result.traits["unit"].tolist() == ["cells", "cells"]
    assert result.traits["n_units"].tolist() == [160, 160]
    assert result.preservation.empty
    assert "sample" not in result.eigengene_table.columns
    single = analyse_study_modules(modules, counts, condition_column="source", case="Tumor")
    assert single.traits.empty and single.preservation.empty
    assert len(single.eigengene_table) == 80
    with pytest.raises(InputError, match="no obs column 'donor'"):
        analyse_study_modules(
            modules, counts, condition_column="source", case="Tumor", sample_column="donor"
        )


def test_cli_writes_four_tables_deterministically(tmp_path):
    _study(tmp_path)
    first, second = tmp_path / "a", tmp_path / "b"
    assert main(_cli_args(tmp_path, first)) == 0
    assert main(_cli_args(tmp_path, second)) == 0
    for name in NAMES:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert sorted(p.name for p in first.iterdir()) == sorted(NAMES)  # no temporaries left
    kme = pd.read_csv(first / "module_kme.tsv", sep="\t")
    assert kme["gene_id"].tolist() == GENE_IDS
    eig = pd.read_csv(first / "module_eigengenes.tsv", sep="\t")
    assert list(eig.columns) == ["cell", "condition", "sample", "ME1", "ME2"]
    traits = pd.read_csv(first / "module_traits.tsv", sep="\t")
    assert traits["unit"].tolist() == ["samples_paired"] * 2


def test_cli_refuses_counts_without_the_module_genes(tmp_path, capsys):
    counts, *_ = _study(tmp_path)
    other = counts.copy()
    other.var_names = [f"X{i}" for i in range(N_GENES)]
    other.var["gene_ids"] = [f"ENSG9{i:010d}" for i in range(N_GENES)]
    other.write_h5ad(tmp_path / "other.h5ad")
    out = tmp_path / "out"
    assert main(_cli_args(tmp_path, out, counts="other.h5ad")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "other.h5ad" in err[0] and "none of the module genes is in the counts" in err[0]
    assert not out.exists()


def test_api_equals_the_cli_tables(tmp_path):
    counts, modules, case, control = _study(tmp_path)
    out = tmp_path / "out"
    assert main(_cli_args(tmp_path, out)) == 0
    adata = counts.copy()
    adata.uns["qc"] = {"params": {"condition_column": "source", "keep": ["Tumor", "NAT"]}}
    adata.uns["modules"] = {"table": modules}
    adata.uns["network"] = {
        "networks": {"Tumor": network_to_uns(case), "NAT": network_to_uns(control)}
    }
    ga.tl.module_analysis(adata, sample_column="patient", **OPTIONS)
    stored = adata.uns["module_analysis"]
    for key, name in zip(("kme", "eigengenes", "traits", "preservation"), NAMES, strict=True):
        write_table(tmp_path / name, stored[key])
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name
    assert stored["modules"].tolist() == [1, 2]
    assert stored["params"]["sample_column"] == "patient"
    eig = pd.read_csv(out / "module_eigengenes.tsv", sep="\t")
    np.testing.assert_allclose(
        adata.obsm["X_module_eigengenes"], eig[["ME1", "ME2"]].to_numpy(), atol=1e-5
    )
    kme = pd.read_csv(out / "module_kme.tsv", sep="\t")
    np.testing.assert_allclose(adata.var["module_kme"], kme["kme"], atol=1e-6)
    adata.write_h5ad(tmp_path / "study.h5ad")  # h5ad keeps every table
    back = ad.read_h5ad(tmp_path / "study.h5ad")
    assert (
        back.uns["module_analysis"]["kme"]["kme_rank"].tolist()[:10]
        == (stored["kme"]["kme_rank"].tolist()[:10])
    )


# -- blocks of cells ----------------------------------------------------------------------


def test_blocked_eigengenes_equal_the_dense_ones():
    """Blocks of 7 cells, a subset of the rows, a constant gene and a module with no
    variance: eigengenes, variance explained and kME as the dense code gives them."""
    from geneattn.module_analysis import module_eigengenes, module_kme
    from geneattn.module_blocks import blocked_eigengenes
    from geneattn.module_study import module_expression

    counts, modules = _counts(n_cells=96, seed=5), _modules()
    x = counts.X.toarray()
    x[:, 20] = 0.0  # a gene no cell expresses (unassigned)
    modules.loc[25:26, "module"] = 3  # a module of two genes
    x[:, 25:27] = 0.0  # ... with no variance
    counts.X = sparse.csr_matrix(x)
    columns, expression = module_expression(modules, counts)
    rows = np.flatnonzero(np.arange(counts.n_obs) % 5 != 2)
    labels = modules["module"].to_numpy()[columns >= 0]
    ids, eig, explained = module_eigengenes(expression[rows], labels)
    kme = module_kme(expression[rows], eig)

    def blocks():
        for start in range(0, counts.n_obs, 7):
            stop = min(start + 7, counts.n_obs)
            yield start, stop, counts.X[start:stop]

    got = blocked_eigengenes(
        blocks,
        rows=rows,
        columns=columns[columns >= 0],
        modules=labels,
        n_counts=counts.obs["n_counts"].to_numpy(),
    )
    np.testing.assert_array_equal(got[0], ids)
    np.testing.assert_allclose(got[1], eig, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got[2], explained, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got[3], kme, rtol=0, atol=1e-9)
    assert np.all(got[1][:, 2] == 0) and np.all(got[3][:, 2] == 0)  # module 3: no variance


def test_cli_in_blocks_writes_the_in_memory_tables(tmp_path):
    _study(tmp_path)
    whole, blocked = tmp_path / "whole", tmp_path / "blocked"
    assert main(_cli_args(tmp_path, whole)) == 0
    assert main([*_cli_args(tmp_path, blocked), "--chunk-cells", "25"]) == 0
    for name in NAMES:
        a = pd.read_csv(whole / name, sep="\t")
        b = pd.read_csv(blocked / name, sep="\t")
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9, atol=1e-9)

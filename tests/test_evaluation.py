"""Module evaluation: enriched fraction and program cohesion against random gene sets."""

from __future__ import annotations

import numpy as np
import pandas as pd

from geneattn.cli import main
from geneattn.evaluation import enriched_fraction, program_cohesion


def _modules():
    genes = [f"G{i}" for i in range(200)]
    module = np.repeat(np.arange(1, 11), 20)  # 10 modules of 20 genes
    module[-5:] = 0
    return pd.DataFrame({"gene": genes, "module": module})


def test_planted_program_is_significant_and_scattered_is_not():
    mods = _modules()
    programs = {
        "planted": ["G40", "G41", "G42", "G43", "G44"],  # all in module 3
        "scattered": ["G0", "G25", "G50", "G75", "G100"],  # five different modules
        "absent": ["NOPE", "G199"],  # G199 is unassigned
    }
    out = program_cohesion(mods, programs, n_permutations=2000, seed=1).set_index("program")
    assert out.loc["planted", "together"] == 5 and out.loc["planted", "module"] == 3
    assert out.loc["planted", "p_value"] < 0.001
    assert out.loc["scattered", "together"] == 1 and out.loc["scattered", "p_value"] == 1.0
    assert out.loc["absent", "in_network"] == 0 and np.isnan(out.loc["absent", "p_value"])
    again = program_cohesion(mods, programs, n_permutations=2000, seed=1)
    assert again.equals(out.reset_index())


def test_enriched_fraction_counts_modules_once():
    enr = pd.DataFrame({"module": [1, 1, 2, 3], "fdr": [0.01, 0.2, 0.049, 0.5]})
    assert enriched_fraction(_modules(), enr) == {"n_modules": 10, "n_enriched": 2, "fraction": 0.2}


def test_cli_writes_table_and_refuses_bad_tables(tmp_path, capsys):
    _modules().to_csv(tmp_path / "m.tsv", sep="\t", index=False)
    pd.DataFrame({"module": [3], "fdr": [0.001]}).to_csv(tmp_path / "e.tsv", sep="\t", index=False)
    args = [
        "evaluate",
        "--modules",
        str(tmp_path / "m.tsv"),
        "--enrichment",
        str(tmp_path / "e.tsv"),
    ]
    assert main([*args, "--program", "p=G40,G41,G42", "--out", str(tmp_path / "ev.tsv")]) == 0
    text = (tmp_path / "ev.tsv").read_text()
    assert "# enriched at FDR < 0.05: 1 (0.100)" in text
    assert "\np\t3\t3\t3\t3\t" in text
    pd.DataFrame({"x": [1]}).to_csv(tmp_path / "bad.tsv", sep="\t", index=False)
    bad = [
        "evaluate",
        "--modules",
        str(tmp_path / "bad.tsv"),
        "--enrichment",
        str(tmp_path / "e.tsv"),
    ]
    assert main([*bad, "--out", str(tmp_path / "ev2.tsv")]) == 2
    assert "bad.tsv" in capsys.readouterr().err and not (tmp_path / "ev2.tsv").exists()


def test_cli_compares_with_coexpression_modules_and_pca(tmp_path):
    """Planted co-expressed gene groups: both methods keep a group together when the module
    table does; label transfer of a perfect embedding beats PCA-free random vectors."""
    import anndata as ad

    rng = np.random.default_rng(0)
    n_cells, groups = 120, 3
    kind = np.repeat(np.arange(groups), n_cells // groups)
    genes = [f"G{i}" for i in range(30)]
    rate = np.full((n_cells, 30), 1.0)
    for g in range(groups):  # genes 10g..10g+9 high in cells of kind g
        rate[np.ix_(kind == g, np.arange(10 * g, 10 * g + 10))] = 12.0
    counts = rng.poisson(rate).astype(np.float32)
    adata = ad.AnnData(counts)
    adata.var_names = genes
    adata.obs_names = [f"c{i}" for i in range(n_cells)]
    adata.obs["kind"] = [f"k{k}" for k in kind]
    adata.obs["n_counts"] = counts.sum(axis=1)
    adata.write_h5ad(tmp_path / "qc.h5ad")
    emb = ad.AnnData(np.zeros((n_cells, 1), dtype=np.float32), obs=adata.obs[["kind"]].copy())
    emb.obsm["X_geneattn"] = np.eye(groups)[kind] * 5 + rng.normal(0, 0.1, (n_cells, groups))
    emb.write_h5ad(tmp_path / "emb.h5ad")
    modules = pd.DataFrame({"gene": genes, "gene_id": genes, "module": np.repeat([1, 2, 3], 10)})
    modules.to_csv(tmp_path / "m.tsv", sep="\t", index=False)
    pd.DataFrame({"module": [1], "fdr": [0.001]}).to_csv(tmp_path / "e.tsv", sep="\t", index=False)
    out = tmp_path / "ev.tsv"
    args = ["evaluate", "--modules", str(tmp_path / "m.tsv"), "--enrichment"]
    args += [str(tmp_path / "e.tsv"), "--program", "a=G0,G1,G2,G3", "--program", "ab=G0,G15"]
    args += ["--counts", str(tmp_path / "qc.h5ad"), "--embeddings", str(tmp_path / "emb.h5ad")]
    args += ["--label-column", "kind", "--permutations", "500", "--top-k", "5", "--min-size", "3"]
    assert main([*args, "--coexpression-out", str(tmp_path / "co.tsv"), "--out", str(out)]) == 0
    text = out.read_text()
    table = pd.read_csv(out, sep="\t", comment="#").set_index("program")
    assert table.loc["a", "attention_fraction"] == 1.0
    assert table.loc["a", "coexpression_fraction"] == 1.0
    assert table.loc["ab", "attention_fraction"] == 0.0
    assert table.loc["a", "coexpression_p_value"] < 0.05
    assert "geneattn 1.000" in text and "label transfer of 'kind'" in text
    co = pd.read_csv(tmp_path / "co.tsv", sep="\t")
    assert len(set(co.loc[co.gene.isin(["G0", "G1", "G2", "G3"]), "module"])) == 1
    assert main([*args[:-6], "--label-column", "nope", "--out", str(tmp_path / "x.tsv")]) == 2
    assert not (tmp_path / "x.tsv").exists()

"""scanpy QC stage: each filter's count, clear errors, deterministic all-or-nothing outputs."""

from __future__ import annotations

import json
import logging
import os

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from geneattn.cli import main
from geneattn.errors import InputError
from geneattn.qc import PASSED, plot_qc, run_qc

GENES = ["MT-CO1", "MT-ND1", "G1", "G2", "G3", "G4", "RARE", "ONLYBAD"]
#: cell -> (condition, {gene: count}); each of the last four fails exactly one filter.
CELLS = {
    "t1": ("Tumor", {"MT-CO1": 1, "G1": 5, "G2": 5, "G3": 5, "G4": 5, "RARE": 2}),
    "t2": ("Tumor", {"MT-CO1": 1, "G1": 5, "G2": 5, "G3": 5, "G4": 5}),
    "t3": ("Tumor", {"MT-ND1": 2, "G1": 4, "G2": 4, "G3": 4, "G4": 4}),
    "n1": ("NAT", {"MT-CO1": 1, "G1": 3, "G2": 3, "G3": 3, "G4": 3}),
    "n2": ("NAT", {"G1": 6, "G2": 6, "G3": 6, "G4": 6}),
    "n3": ("NAT", {"MT-ND1": 1, "G1": 5, "G2": 5, "G3": 5}),
    # 2 genes (and 83 % mito: the earlier min_genes filter is the one that counts it)
    "lowgenes": ("Tumor", {"MT-CO1": 5, "G1": 1}),
    "mito": ("NAT", {"MT-CO1": 40, "G1": 5, "G2": 5, "G3": 5}),  # 73 % mito
    "deep": ("Tumor", {"MT-CO1": 1, "G1": 50, "G2": 50, "G3": 50, "G4": 50, "ONLYBAD": 10}),
    "blood": ("Blood", {"G1": 5, "G2": 5, "G3": 5, "G4": 5, "ONLYBAD": 3}),
}
THRESHOLDS = {"min_genes": 3, "min_cells": 2, "max_pct_mito": 30.0, "max_counts": 100.0}
KEEP = ("Tumor", "NAT")


def toy(genes=GENES) -> ad.AnnData:
    counts = np.zeros((len(CELLS), len(GENES)), dtype=np.float32)
    for i, (_, expressed) in enumerate(CELLS.values()):
        for gene, n in expressed.items():
            counts[i, GENES.index(gene)] = n
    obs = pd.DataFrame(
        {"source": [c for c, _ in CELLS.values()], "patient": ["P1"] * len(CELLS)},
        index=list(CELLS),
    )
    return ad.AnnData(sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=list(genes)))


def qc(adata=None, **kw):
    options = {"condition_column": "source", "keep": KEEP, **THRESHOLDS, **kw}
    return run_qc(toy() if adata is None else adata, **options)


# -- filters and summary ------------------------------------------------------------------


def test_each_filter_counted_in_order():
    result, summary = qc()
    steps = [
        (s["filter"], s["threshold"], s["removed"], s["remaining"]) for s in summary["cell_filters"]
    ]
    assert steps == [
        ("condition", ["Tumor", "NAT"], 1, 9),
        ("min_genes", 3, 1, 8),
        ("max_pct_mito", 30.0, 1, 7),
        ("max_counts", 100.0, 1, 6),
    ]
    assert summary["gene_filters"] == [
        {"filter": "min_cells", "threshold": 2, "removed": 2, "remaining": 6}
    ]
    assert list(result.obs_names) == ["t1", "t2", "t3", "n1", "n2", "n3"]
    assert list(result.var_names) == ["MT-CO1", "MT-ND1", "G1", "G2", "G3", "G4"]


def test_summary_numbers():
    _, summary = qc()
    assert summary["cells_before"] == 10
    assert summary["genes_before"] == 8
    assert summary["cells_after"] == 6
    assert summary["genes_after"] == 6
    assert summary["cells_removed"] == 4
    assert summary["genes_removed"] == 2
    assert summary["cells_per_condition"] == {"Tumor": 3, "NAT": 3}
    assert summary["cells_per_condition_before"] == {"Tumor": 5, "NAT": 4, "Blood": 1}
    assert summary["thresholds"] == {
        "min_genes": 3,
        "max_pct_mito": 30.0,
        "max_counts": 100.0,
        "min_cells": 2,
    }
    assert summary["mito"] == {"requested": "auto", "prefix": "MT-", "n_genes": 2}


def test_summary_is_json_with_a_fixed_key_order():
    _, first = qc()
    _, second = qc()
    assert json.dumps(first) == json.dumps(second)
    assert list(first) == [
        "source",
        "cells_before",
        "genes_before",
        "condition_column",
        "keep",
        "cells_per_condition_before",
        "cells_after",
        "genes_after",
        "cell_filters",
        "gene_filters",
        "cells_removed",
        "genes_removed",
        "cells_per_condition",
        "thresholds",
        "mito",
    ]


def test_no_max_counts_keeps_deep_cell():
    result, summary = qc(max_counts=None)
    assert summary["cell_filters"][-1] == {
        "filter": "max_counts",
        "threshold": None,
        "removed": 0,
        "remaining": 7,
    }
    assert "deep" in result.obs_names
    assert "ONLYBAD" not in result.var_names  # detected in "deep" only: below min_cells
    assert summary["cells_per_condition"] == {"Tumor": 4, "NAT": 3}


def test_counts_stay_raw_and_n_counts_covers_all_input_genes():
    adata = toy()
    result, _ = qc(adata)
    assert isinstance(result.X, sp.csr_matrix)
    assert result.X.dtype == np.float32
    np.testing.assert_array_equal(
        result.X.toarray(), adata[result.obs_names, result.var_names].X.toarray()
    )
    # t1 has 2 counts of RARE, a gene removed by min_cells: they still count.
    assert result.obs.loc["t1", "n_counts"] == 23.0
    assert result.X[0].sum() == 21.0
    np.testing.assert_allclose(result.obs["n_counts"], result.obs["total_counts"])


def test_obs_and_var_annotations():
    result, _ = qc()
    assert list(result.obs["source"].cat.categories) == ["Tumor", "NAT"]
    assert result.obs["patient"].tolist() == ["P1"] * 6
    assert result.obs.loc["t1", "pct_counts_mt"] == pytest.approx(100 / 23)
    assert result.obs.loc["n2", "pct_counts_mt"] == 0.0
    assert result.var["mt"].tolist() == [True, True, False, False, False, False]
    assert result.var["n_cells_by_counts"].tolist() == [3, 2, 6, 6, 6, 5]


def test_qc_cells_table_names_the_removing_filter():
    result, _ = qc()
    table = result.uns["qc_cells"]
    assert "blood" not in table.index
    assert table["qc"].to_dict() == {
        **dict.fromkeys(["t1", "t2", "t3", "n1", "n2", "n3"], PASSED),
        "lowgenes": "min_genes",
        "mito": "max_pct_mito",
        "deep": "max_counts",
    }


def test_input_is_not_modified():
    adata = toy()
    before = adata.X.toarray().copy()
    qc(adata)
    np.testing.assert_array_equal(adata.X.toarray(), before)
    assert list(adata.obs.columns) == ["source", "patient"]
    assert list(adata.var.columns) == []


def test_dense_integer_input():
    adata = toy()
    adata.X = adata.X.toarray().astype(np.int64)
    result, summary = qc(adata)
    assert summary["cells_after"] == 6
    assert isinstance(result.X, sp.csr_matrix)
    assert result.X.dtype == np.float32


# -- mitochondrial genes ------------------------------------------------------------------


def test_mouse_prefix_detected():
    mouse = [g.replace("MT-", "mt-") for g in GENES]
    _, summary = qc(toy(genes=mouse))
    assert summary["mito"] == {"requested": "auto", "prefix": "mt-", "n_genes": 2}
    assert summary["cell_filters"][2]["removed"] == 1


def test_explicit_prefix():
    genes = [g.replace("MT-", "chrM_") for g in GENES]
    _, summary = qc(toy(genes=genes), mito_prefix="chrM_")
    assert summary["mito"] == {"requested": "chrM_", "prefix": "chrM_", "n_genes": 2}
    assert summary["cell_filters"][2]["removed"] == 1


@pytest.mark.parametrize("prefix", ["auto", "MITO-"])
def test_no_mito_genes_warns_and_gives_zero(caplog, prefix):
    genes = [g.replace("MT-", "X") for g in GENES]
    with caplog.at_level(logging.WARNING, logger="geneattn.qc"):
        result, summary = qc(toy(genes=genes), mito_prefix=prefix, source="study.h5ad")
    assert "study.h5ad: no mitochondrial genes" in caplog.text
    assert summary["mito"]["n_genes"] == 0
    assert summary["mito"]["prefix"] == (None if prefix == "auto" else prefix)
    assert summary["cell_filters"][2]["removed"] == 0
    assert (result.obs["pct_counts_mt"] == 0).all()


# -- errors -------------------------------------------------------------------------------


def test_unknown_condition_label():
    with pytest.raises(InputError) as err:
        qc(keep=("Tumor", "Normal"), source="study.h5ad")
    assert str(err.value) == (
        "study.h5ad: unknown condition labels ['Normal'] in obs column 'source'; "
        "labels present: Tumor (5), NAT (4), Blood (1)"
    )


def test_missing_condition_column():
    with pytest.raises(InputError) as err:
        qc(condition_column="condition", source="study.h5ad")
    assert str(err.value) == (
        "study.h5ad: no obs column 'condition' for the conditions; "
        "available columns: source, patient"
    )


def test_repeated_keep_label():
    with pytest.raises(InputError, match="repeat a label"):
        qc(keep=("Tumor", "Tumor"))


@pytest.mark.parametrize(
    ("options", "subset", "message"),
    [
        (
            {"min_genes": 50},
            None,
            "no cell left after the min_genes filter (at least 50 detected genes), "
            "which removed the last 9 cells",
        ),
        (
            {"max_pct_mito": 0.0},
            lambda a: a[a.obs_names != "n2"].copy(),
            "no cell left after the max_pct_mito filter (at most 0.0% mitochondrial counts), "
            "which removed the last 7 cells",
        ),
        (
            {"max_counts": 1.0},
            None,
            "no cell left after the max_counts filter (at most 1.0 total counts), "
            "which removed the last 7 cells",
        ),
        (
            {"min_cells": 100},
            None,
            "no gene left after the min_cells filter (detected in at least 100 cells), "
            "which removed all 8 genes",
        ),
    ],
)
def test_empty_result_names_the_filter(options, subset, message):
    adata = toy() if subset is None else subset(toy())
    with pytest.raises(InputError) as err:
        qc(adata, source="study.h5ad", **options)
    assert str(err.value) == f"study.h5ad: {message}"


# -- plot ---------------------------------------------------------------------------------


def test_plot_is_a_deterministic_png(tmp_path):
    result, summary = qc()
    plot_qc(result, summary, tmp_path / "a.png")
    plot_qc(result, summary, tmp_path / "b.png")
    data = (tmp_path / "a.png").read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert data == (tmp_path / "b.png").read_bytes()
    assert b"Software" not in data


def test_plot_without_max_counts(tmp_path):
    result, summary = qc(max_counts=None)
    plot_qc(result, summary, tmp_path / "qc.png")
    assert (tmp_path / "qc.png").stat().st_size > 0


# -- command line -------------------------------------------------------------------------


def _argv(counts, out, *extra, keep=KEEP):
    return [
        "qc",
        str(counts),
        "--format",
        "auto",
        "--condition-column",
        "source",
        "--keep",
        *keep,
        "--min-genes",
        "3",
        "--min-cells",
        "2",
        "--max-pct-mito",
        "30",
        "--max-counts",
        "100",
        "--mito-prefix",
        "auto",
        "--out",
        str(out / "qc.h5ad"),
        "--summary",
        str(out / "qc_summary.json"),
        "--plot",
        str(out / "qc.png"),
        *extra,
    ]


@pytest.fixture
def toy_h5ad(tmp_path):
    path = tmp_path / "toy.h5ad"
    toy().write_h5ad(path)
    return path


def test_cli_writes_deterministic_outputs(tmp_path, toy_h5ad):
    for run in ("run1", "run2"):
        assert main(_argv(toy_h5ad, tmp_path / run)) == 0
    names = ["qc.h5ad", "qc_summary.json", "qc.png"]
    assert sorted(p.name for p in (tmp_path / "run1").iterdir()) == sorted(names)
    for name in names:
        assert (tmp_path / "run1" / name).read_bytes() == (tmp_path / "run2" / name).read_bytes()
    text = (tmp_path / "run1" / "qc_summary.json").read_text()
    summary = json.loads(text)
    assert text == json.dumps(summary, indent=2, sort_keys=True) + "\n"
    assert summary["cells_after"] == 6
    result = ad.read_h5ad(tmp_path / "run1" / "qc.h5ad")
    assert result.shape == (6, 6)
    assert result.obs.loc["t1", "n_counts"] == 23.0
    assert result.uns["qc_cells"]["qc"].tolist().count(PASSED) == 6


def test_cli_bad_label_exits_2_without_outputs(tmp_path, toy_h5ad, capsys):
    out = tmp_path / "out"
    status = main(_argv(toy_h5ad, out, keep=("Tumor", "Normal")))
    assert status == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"geneattn qc: error: {toy_h5ad}: unknown condition labels")
    assert not out.exists() or list(out.iterdir()) == []


def test_cli_bad_value_exits_2_without_outputs(tmp_path, capsys):
    counts = tmp_path / "counts.csv"
    counts.write_text(",MT-CO1,G1\nc1,1,2\nc2,1.5,3\n")
    out = tmp_path / "out"
    assert main(_argv(counts, out)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        f"geneattn qc: error: {counts}: non-integer value 1.5 at cell 'c2', gene 'MT-CO1' "
        "(row 1, column 0; 1 such entries); raw integer counts are expected "
        "(allow_non_integer / --allow-non-integer accepts them)"
    ]
    assert not out.exists() or list(out.iterdir()) == []


def test_cli_failure_while_writing_leaves_nothing(tmp_path, toy_h5ad, monkeypatch):
    def broken_plot(adata, summary, path):
        path.write_bytes(b"half a png")
        raise RuntimeError("disk full")

    monkeypatch.setattr("geneattn.qc.plot_qc", broken_plot)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="disk full"):
        main(_argv(toy_h5ad, out))
    assert list(out.iterdir()) == []  # neither final names nor temporary files


# -- real data ----------------------------------------------------------------------------


def test_wu2020_demo(resources_dir):
    from geneattn.io.readers import read_counts

    path = resources_dir / "wu2020_200.h5ad"
    adata = read_counts(path)
    result, summary = run_qc(adata, condition_column="source", keep=("Tumor", "NAT"), source=path)
    assert adata.shape == (200, 30727)
    assert summary["cells_per_condition_before"] == {"Tumor": 95, "NAT": 85, "Blood": 20}
    removed = {s["filter"]: s["removed"] for s in summary["cell_filters"]}
    # The file names mitochondrial genes ND1, COX1, ... without an MT- prefix.
    assert summary["mito"] == {"requested": "auto", "prefix": None, "n_genes": 0}
    assert removed == {"condition": 20, "min_genes": 4, "max_pct_mito": 0, "max_counts": 0}
    assert summary["cells_per_condition"] == {"Tumor": 95, "NAT": 81}
    assert summary["genes_after"] == 8802
    # Sanity of what is left: raw integer counts, thresholds hold, depth over all genes.
    x = result.X.toarray()
    np.testing.assert_array_equal(x, np.round(x))
    assert (result.obs["n_genes_by_counts"] >= 200).all()
    assert ((x > 0).sum(axis=0) >= 3).all()
    depth = np.asarray(adata[result.obs_names].X.sum(axis=1)).ravel()
    np.testing.assert_allclose(result.obs["n_counts"], depth)
    kept_depth = x.sum(axis=1)
    assert (result.obs["n_counts"] >= kept_depth).all()
    assert (result.obs["n_counts"] > kept_depth).any()  # rare genes dropped, depth kept


# -- single-condition studies -------------------------------------------------------------


def test_single_condition_keeps_every_label_under_one():
    data, summary = qc(condition_column=None, keep=None)
    assert set(data.obs["condition"]) == {"all"}
    assert summary["condition_column"] == "condition" and summary["keep"] == ["all"]
    # the Blood cell is no longer dropped for its label; the other filters are unchanged
    assert "blood" in data.obs_names
    assert summary["cell_filters"][0] == {
        "filter": "condition",
        "threshold": ["all"],
        "removed": 0,
        "remaining": len(CELLS),
    }


def test_single_condition_cli_needs_both_or_neither(tmp_path, capsys):
    path = tmp_path / "counts.h5ad"
    toy().write_h5ad(path)
    outs = ["--out", str(tmp_path / "o.h5ad"), "--summary", str(tmp_path / "s.json")]
    outs += ["--plot", str(tmp_path / "p.png"), "--min-genes", "3", "--min-cells", "2"]
    assert main(["qc", str(path), "--condition-column", "source", *outs]) == 2
    assert "--condition-column and --keep go together" in capsys.readouterr().err
    assert not (tmp_path / "o.h5ad").exists()
    assert main(["qc", str(path), *outs]) == 0
    assert set(ad.read_h5ad(tmp_path / "o.h5ad").obs["condition"]) == {"all"}


# -- cell metadata from a table (input.obs), unwritable outputs ----------------------------


def test_cli_conditions_from_a_metadata_table(tmp_path):
    """csv counts carry no labels: the condition column comes from --obs."""
    adata = toy()
    counts = tmp_path / "counts.csv"
    pd.DataFrame(adata.X.toarray(), index=adata.obs_names, columns=adata.var_names).to_csv(counts)
    meta = tmp_path / "cells.tsv"
    adata.obs[["source"]].iloc[::-1].to_csv(meta, sep="\t", index_label="barcode")
    out = tmp_path / "out"
    assert main([*_argv(counts, out), "--obs", str(meta)]) == 0
    result = ad.read_h5ad(out / "qc.h5ad")
    assert result.n_obs == 6
    expected = adata.obs.loc[result.obs_names, "source"].tolist()
    assert result.obs["source"].astype(str).tolist() == expected
    # without the table, the csv has no condition column
    assert main(_argv(counts, tmp_path / "bare")) == 2


def test_cli_metadata_table_without_a_cell_exits_2(tmp_path, toy_h5ad, capsys):
    meta = tmp_path / "cells.csv"
    meta.write_text("barcode,source\nt1,Tumor\nt2,Tumor\n")
    out = tmp_path / "out"
    assert main([*_argv(toy_h5ad, out), "--obs", str(meta)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"geneattn qc: error: {meta}: 8 of 10 cell barcodes of {toy_h5ad}")
    assert not out.exists()


def test_cli_unwritable_output_directory_is_one_line(tmp_path, toy_h5ad, capsys):
    """A results path that cannot be created: one line naming it, exit 2, no traceback."""
    blocker = tmp_path / "results"
    blocker.write_text("a file where the results directory should be")
    out = blocker / "study"
    assert main(_argv(toy_h5ad, out)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        f"geneattn qc: error: {out / 'qc.h5ad'}: cannot write this output (Not a directory)"
    ]


def test_cli_permission_denied_is_one_line(tmp_path, toy_h5ad, capsys, monkeypatch):
    """What a read-only results directory raises (tests may run as root, who may write)."""
    import tempfile

    def denied(*args, dir=None, **kwargs):
        raise PermissionError(13, "Permission denied", str(dir))

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    out = tmp_path / "out"
    assert main(_argv(toy_h5ad, out)) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"geneattn qc: error: {out / 'qc.h5ad'}: cannot write this output (Permission denied)"
    ]


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere"
)
def test_cli_read_only_results_directory(tmp_path, toy_h5ad, capsys):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o500)
    try:
        assert main(_argv(toy_h5ad, out)) == 2
    finally:
        out.chmod(0o700)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        f"geneattn qc: error: {out / 'qc.h5ad'}: cannot write this output (Permission denied)"
    ]


def test_cli_other_os_errors_keep_their_traceback(tmp_path, toy_h5ad, monkeypatch):
    """Only file errors that name a path become one line; others are bugs to see in full."""

    def broken(*args, **kwargs):
        raise OSError("something unexpected")

    monkeypatch.setattr("geneattn.qc.plot_qc", broken)
    with pytest.raises(OSError, match="something unexpected"):
        main(_argv(toy_h5ad, tmp_path / "out"))

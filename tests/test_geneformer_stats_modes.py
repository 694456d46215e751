"""Geneformer's stats modes through the stage commands: goal_state_shift with alternative
end states, vs_null against another study's per-cell shifts, mixture_model.

Small synthetic shards (a random study model, 60 cells in three conditions); each mode's
``perturbation_geneformer.tsv`` is compared with the library function called directly on
the shards' per-cell values, and its columns with Geneformer's own tables (golden files).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geneattn.cli import main
from geneattn.geneformer_perturb import geneformer_perturbation_shifts
from geneattn.geneformer_stats import goal_state_shift, mixture_model, vs_null
from geneattn.models.study import StudyModel
from geneattn.perturb import load_plan, perturbation_shifts
from geneattn.testing import toy
from geneattn.tokenize import load_tokens

VOCAB = 30
N_CELLS = 60
GOLDEN = Path(__file__).parent / "golden" / "geneformer"


def _golden_columns(name: str) -> list[str]:
    with gzip.open(GOLDEN / name, "rt") as fh:
        return fh.readline().rstrip("\n").split("\t")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Tokens, model, obs (Tumor / NAT / Other), embeddings, names and modules on disk."""
    import anndata as ad

    from geneattn.models.study import save_study_model
    from geneattn.tokenize import save_tokens

    d = tmp_path_factory.mktemp("gfstats")
    rng = np.random.default_rng(9)
    cells = toy.cells(8, N_CELLS, 20, vocab=VOCAB, min_len=3, frequent_first=False, prefix="c")
    save_tokens(d / "tokens.npz", cells)
    w = [rng.normal(0, 0.5, (8, 8)) for _ in range(4)]
    save_study_model(
        d / "model.npz", StudyModel(rng.normal(0, 1, (VOCAB, 8)), *w, n_heads=2, params={})
    )
    labels = np.array(["Tumor", "NAT", "Other"])[np.arange(N_CELLS) % 3]
    obs = pd.DataFrame({"source": pd.Categorical(labels)}, index=cells.cell_ids)
    ad.AnnData(np.zeros((N_CELLS, 1), dtype=np.float32), obs=obs).write_h5ad(d / "qc.h5ad")
    emb = ad.AnnData(np.zeros((N_CELLS, 0), dtype=np.float32), obs=obs)
    emb.obsm["X_geneattn"] = rng.normal(size=(N_CELLS, 8)).astype(np.float32)
    emb.write_h5ad(d / "embeddings.h5ad")
    names = "".join(f"G{i}\tENSG{i:011d}\n" for i in range(VOCAB))
    (d / "names.tsv").write_text("symbol\tgene_id\n" + names)
    return {"dir": d, "labels": labels, "emb": emb.obsm["X_geneattn"].astype(np.float64)}


def _plan(study: dict, name: str, case: str, control: str, *alt: str) -> list[str]:
    d = study["dir"]
    args = ["perturb-plan", str(d / "tokens.npz"), "--obs", str(d / "qc.h5ad")]
    args += ["--condition-column", "source", "--case", case, "--control", control]
    args += ["--embeddings", str(d / "embeddings.h5ad"), "--gene-names", str(d / "names.tsv")]
    args += ["--genes-from", "expressed", "--max-genes", "6", "--min-cells", "2"]
    args += ["--null-per-bin", "1", "--out", str(d / f"{name}.npz")]
    for state in alt:
        args += ["--alt-state", state]
    return args


def _shards(study: dict, plan: str, case: str, definition: str, prefix: str) -> list[str]:
    d = study["dir"]
    paths = []
    for s in range(2):
        out = d / f"{prefix}{s}.tsv"
        args = ["perturb", str(d / "tokens.npz"), "--model", str(d / "model.npz")]
        args += ["--obs", str(d / "qc.h5ad"), "--condition-column", "source", "--case", case]
        args += ["--plan", str(d / f"{plan}.npz"), "--shard", str(s), "--cells-per-shard", "12"]
        args += ["--definition", definition, "--out", str(out)]
        assert main(args) == 0
        paths.append(str(out))
    return paths


def _stats(study: dict, shards: list[str], name: str, *extra: str) -> pd.DataFrame:
    d = study["dir"]
    args = ["perturb-stats", *shards, "--gene-names", str(d / "names.tsv")]
    args += ["--out", str(d / f"{name}_perturbation.tsv")]
    args += ["--geneformer-out", str(d / f"{name}_gf.tsv"), *extra]
    assert main(args) == 0
    return pd.read_csv(d / f"{name}_gf.tsv", sep="\t")


def _cells(shards: list[str]) -> pd.DataFrame:
    """The (gene, cell) rows of the shards, read independently of geneattn."""
    table = pd.concat(
        [pd.read_csv(p, sep="\t", keep_default_na=False, na_values=["NA"]) for p in shards],
        ignore_index=True,
    )
    return table[table["cell"] != ""].reset_index(drop=True)


def _by_gene_id(expected: pd.DataFrame, genes: list[str]) -> pd.DataFrame:
    out = expected.copy()
    out["Gene"] = [genes[t] for t in out["Gene"]]
    return out


def _compare(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    """The written table (6 significant digits) against the library's."""
    got = got.drop(columns=["Gene_name", "Ensembl_ID"])
    assert list(got.columns) == list(expected.columns)
    assert got["Gene"].tolist() == expected["Gene"].tolist()
    for column in expected.columns[1:]:
        np.testing.assert_allclose(
            got[column].to_numpy(dtype=np.float64),
            expected[column].to_numpy(dtype=np.float64),
            rtol=1e-5,
            atol=1e-12,
            err_msg=column,
        )


@pytest.mark.parametrize("definition", ["geneattn", "geneformer"])
def test_goal_state_shift_with_alt_states_through_the_cli(study, definition):
    d = study["dir"]
    assert main(_plan(study, "plan_alt", "Tumor", "NAT", "Other")) == 0
    plan = load_plan(d / "plan_alt.npz")
    assert plan.alt_states.tolist() == ["Other"]
    other = study["emb"][study["labels"] == "Other"].mean(axis=0)
    np.testing.assert_allclose(plan.alt_goals[0], other)
    shards = _shards(study, "plan_alt", "Tumor", definition, f"alt_{definition}")
    rows = _cells(shards)
    assert rows["alt_shift_Other"].notna().all()
    # the alternative shifts are goal shifts toward the Other cells' state, computed apart
    tumor = np.flatnonzero(study["labels"] == "Tumor")
    cells = load_tokens(d / "tokens.npz", cells=tumor)
    model_args = (cells, plan.tokens, "delete")
    from geneattn.models import load_model

    model = load_model(d / "model.npz")
    if definition == "geneattn":
        direct = perturbation_shifts(model, *model_args, goal=other)["goal_shift"]
    else:
        direct = geneformer_perturbation_shifts(model, *model_args, states={"o": other})
        direct = direct["shift_to_o"]
    got = np.sort(rows["alt_shift_Other"].to_numpy())
    np.testing.assert_allclose(got, np.sort(direct.to_numpy()), rtol=1e-5, atol=1e-6)
    # the table equals goal_state_shift called directly, with Geneformer's columns
    table = _stats(study, shards, f"alt_{definition}")
    genes = sorted(set(rows["gene_id"]))
    frame = pd.DataFrame(
        {
            "token": rows["gene_id"].map({g: i for i, g in enumerate(genes)}),
            "shift_to_goal": rows["goal_shift"],
            "shift_to_Other": rows["alt_shift_Other"],
        }
    ).dropna()
    expected = goal_state_shift(frame, goal="goal", alt_states=["Other"])
    _compare(table, _by_gene_id(expected, genes))
    golden = _golden_columns("stats_goal_state_shift_delete.tsv.gz")
    assert list(table.columns) == [c.replace("Blood", "Other") for c in golden]


def test_mixture_model_through_the_cli(study):
    assert main(_plan(study, "plan_mm", "Tumor", "NAT")) == 0
    shards = _shards(study, "plan_mm", "Tumor", "geneformer", "mm")
    table = _stats(study, shards, "mm", "--geneformer-stats", "mixture_model")
    assert list(table.columns) == _golden_columns("stats_mixture_model_delete.tsv.gz")
    rows = _cells(shards)
    genes = sorted(set(rows["gene_id"]))
    frame = pd.DataFrame(
        {
            "token": rows["gene_id"].map({g: i for i, g in enumerate(genes)}),
            "cos_sim": 1.0 - rows["cosine_shift"],
        }
    ).dropna()
    _compare(table, _by_gene_id(mixture_model(frame), genes))
    assert table["Impact_component"].isin([0, 1]).all()


def test_vs_null_against_another_study_through_the_cli(study):
    d = study["dir"]
    # the null study: the Other cells perturbed toward NAT; it keeps its per-cell shifts
    assert main(_plan(study, "plan_null", "Other", "NAT")) == 0
    null_shards = _shards(study, "plan_null", "Other", "geneformer", "null")
    null_dir = d / "null_results"
    null_dir.mkdir()
    args = ["perturb-stats", *null_shards, "--gene-names", str(d / "names.tsv")]
    args += ["--out", str(null_dir / "perturbation.tsv")]
    args += ["--geneformer-out", str(null_dir / "perturbation_geneformer.tsv")]
    assert main([*args, "--cells-out", str(null_dir / "perturbation_cells.tsv")]) == 0
    assert main(_plan(study, "plan_test", "Tumor", "NAT")) == 0
    shards = _shards(study, "plan_test", "Tumor", "geneformer", "test")
    # without the null: a one-line error and no table
    bad = ["perturb-stats", *shards, "--gene-names", str(d / "names.tsv")]
    bad += ["--out", str(d / "bad.tsv"), "--geneformer-out", str(d / "bad_gf.tsv")]
    assert main([*bad, "--geneformer-stats", "vs_null"]) == 2
    assert main([*bad, "--geneformer-stats", "vs_null", "--null-shifts", str(d / "nope")]) == 2
    assert not (d / "bad.tsv").exists() and not (d / "bad_gf.tsv").exists()
    table = _stats(
        study, shards, "vn", "--geneformer-stats", "vs_null", "--null-shifts", str(null_dir)
    )
    assert list(table.columns) == _golden_columns("stats_vs_null_delete.tsv.gz")
    rows, null_rows = _cells(shards), _cells(null_shards)
    genes = sorted(set(rows["gene_id"]) | set(null_rows["gene_id"]))
    code = {g: i for i, g in enumerate(genes)}

    def frame(r: pd.DataFrame) -> pd.DataFrame:
        # a cell left without genes by the deletion has no similarity (NaN): not a value
        cos = pd.DataFrame({"token": r["gene_id"].map(code), "cos_sim": 1.0 - r["cosine_shift"]})
        return cos.dropna()

    _compare(table, _by_gene_id(vs_null(frame(rows), frame(null_rows)), genes))
    # the same genes were perturbed in both studies' cells: every gene has a null
    assert (table["N_Detections_null"] > 0).any()
    # the null given as the file itself: the same table
    again = _stats(
        study,
        shards,
        "vn_file",
        "--geneformer-stats",
        "vs_null",
        "--null-shifts",
        str(null_dir / "perturbation_cells.tsv"),
    )
    pd.testing.assert_frame_equal(again, table)


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ("Nope", "no cell labelled 'Nope' in 'source' (its labels: NAT, Other, Tumor)"),
        ("Tumor", "'Tumor' is the case label"),
        ("NAT", "'NAT' is the control label"),
    ],
)
def test_a_bad_alt_state_is_one_line_and_writes_nothing(study, capsys, state, message):
    d = study["dir"]
    capsys.readouterr()
    assert main(_plan(study, f"bad_{state}", "Tumor", "NAT", state)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "qc.h5ad" in err[0], err
    assert not (d / f"bad_{state}.npz").exists()


def test_alt_states_from_their_own_embeddings_file(study, capsys):
    """The workflow's path: QC keeps case and control only, so the alternative states' cells
    come with their own embeddings (--alt-embeddings), checked against their labels."""
    import anndata as ad

    d = study["dir"]
    keep = study["labels"] != "Other"
    obs = pd.DataFrame(
        {"source": pd.Categorical(study["labels"][keep])},
        index=load_tokens(d / "tokens.npz").cell_ids[keep],
    )
    ad.AnnData(np.zeros((int(keep.sum()), 1), dtype=np.float32), obs=obs).write_h5ad(d / "cc.h5ad")
    alt = ad.AnnData(
        np.zeros((7, 0), dtype=np.float32),
        obs=pd.DataFrame({"source": ["Other"] * 7}, index=[f"o{i}" for i in range(7)]),
    )
    alt.obsm["X_geneattn"] = np.random.default_rng(3).normal(size=(7, 8))
    alt.write_h5ad(d / "alt_embeddings.h5ad")
    args = _plan(study, "plan_own", "Tumor", "NAT", "Other")
    args[args.index("--obs") + 1] = str(d / "cc.h5ad")
    args += ["--alt-embeddings", str(d / "alt_embeddings.h5ad")]
    assert main(args) == 0
    plan = load_plan(d / "plan_own.npz")
    np.testing.assert_allclose(plan.alt_goals[0], alt.obsm["X_geneattn"].mean(axis=0))
    np.testing.assert_allclose(plan.goal, study["emb"][study["labels"] == "NAT"].mean(axis=0))
    # a label its cells do not carry: one line naming the alternative embeddings
    capsys.readouterr()
    bad = list(args)
    bad[bad.index("--out") + 1] = str(d / "plan_bad_own.npz")
    bad[bad.index("Other")] = "Blood"
    assert main(bad) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "alt_embeddings.h5ad" in err[0] and "'Blood'" in err[0], err
    assert not (d / "plan_bad_own.npz").exists()


def test_qc_keeps_the_cells_of_alternative_states(tmp_path, capsys):
    """`geneattn qc --keep` with the alternative labels only (the alt_states_qc rule); a label
    the data lacks is a one-line error and no output."""
    import json

    import anndata as ad
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    counts = sp.csr_matrix(rng.poisson(2.0, size=(30, 40)).astype(np.float32))
    labels = np.array(["Tumor", "NAT", "Blood"])[np.arange(30) % 3]
    obs = pd.DataFrame({"source": labels}, index=[f"c{i}" for i in range(30)])
    var = pd.DataFrame(index=[f"G{i}" for i in range(40)])
    ad.AnnData(counts, obs=obs, var=var).write_h5ad(tmp_path / "raw.h5ad")

    def qc(*keep: str, name: str) -> int:
        args = ["qc", str(tmp_path / "raw.h5ad"), "--condition-column", "source", "--keep"]
        args += [*keep, "--min-genes", "1", "--min-cells", "1"]
        args += ["--out", str(tmp_path / f"{name}.h5ad")]
        args += [
            "--summary",
            str(tmp_path / f"{name}.json"),
            "--plot",
            str(tmp_path / f"{name}.png"),
        ]
        return main(args)

    assert qc("Blood", name="alt") == 0
    kept = ad.read_h5ad(tmp_path / "alt.h5ad")
    assert set(kept.obs["source"].astype(str)) == {"Blood"} and kept.n_obs == 10
    summary = json.loads((tmp_path / "alt.json").read_text())
    assert summary["cells_per_condition"] == {"Blood": 10}
    capsys.readouterr()
    assert qc("Blood", "Nope", name="bad") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Nope" in err[0], err
    assert not any((tmp_path / f"bad.{ext}").exists() for ext in ("h5ad", "json", "png"))

"""In-silico perturbation: sequence edits, the O(n d) kernel against brute force, statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geneattn.edits import perturbed_tokens, plan_edits
from geneattn.models.study import StudyModel
from geneattn.perturb import (
    choose_null_tokens,
    load_plan,
    perturbation_shifts,
)
from geneattn.perturb_stats import goal_statistics
from geneattn.testing import reference, toy
from geneattn.tokenize import TokenizedCells

VOCAB = 30


def make_model(seed: int, d: int = 8, heads: int = 2, scale: float = 1.0) -> StudyModel:
    rng = np.random.default_rng(seed)
    w = [rng.normal(0, 0.5, (d, d)) for _ in range(4)]
    return StudyModel(rng.normal(0, scale, (VOCAB, d)), *w, n_heads=heads, params={})


def make_cells(seed: int, n_cells: int, max_len: int) -> TokenizedCells:
    return toy.cells(seed, n_cells, max_len, vocab=VOCAB, frequent_first=False, prefix="c")


def brute(model: StudyModel, seq: np.ndarray, pooled: np.ndarray) -> np.ndarray:
    """Mean over the pooled rows of the full forward pass of ``seq`` (numpy reference)."""
    x = model.gene_embeddings[seq]
    heads, _ = reference.multi_head_attention(x, model.w_q, model.w_k, model.w_v, model.n_heads)
    out = heads @ model.w_o
    return out[pooled].mean(axis=0) if pooled.any() else np.zeros(model.d_model)


def test_perturbed_tokens_modes():
    seq = np.array([10, 11, 12, 13, 14, 15, 16, 17])
    np.testing.assert_array_equal(perturbed_tokens(seq, 12, "delete"), [10, 11, 13, 14, 15, 16, 17])
    np.testing.assert_array_equal(
        perturbed_tokens(seq, 15, "overexpress"), [15, 10, 11, 12, 13, 14, 16, 17]
    )
    np.testing.assert_array_equal(
        perturbed_tokens(seq, 99, "overexpress"), [99, 10, 11, 12, 13, 14, 15, 16]
    )
    # shift 0.25 of 8 tokens = 2 positions
    np.testing.assert_array_equal(
        perturbed_tokens(seq, 12, "inhibit"), [10, 11, 13, 14, 12, 15, 16, 17]
    )
    np.testing.assert_array_equal(
        perturbed_tokens(seq, 12, "activate"), [12, 10, 11, 13, 14, 15, 16, 17]
    )
    np.testing.assert_array_equal(
        perturbed_tokens(seq, 16, "inhibit", shift=1.0), [10, 11, 12, 13, 14, 15, 17, 16]
    )
    with pytest.raises(ValueError, match="not in the cell"):
        perturbed_tokens(seq, 99, "delete")
    with pytest.raises(ValueError, match="unknown perturbation mode"):
        perturbed_tokens(seq, 12, "knockout")


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    mode=st.sampled_from(["delete", "overexpress", "inhibit", "activate"]),
    scale=st.sampled_from([0.3, 1.0, 4.0, 12.0]),
)
def test_kernel_equals_brute_force_forward(seed, mode, scale):
    model = make_model(seed, scale=scale)
    cells = make_cells(seed + 1, 4, 12)
    targets = [3, 7, 21]
    plan = plan_edits(cells, targets, mode)
    original, perturbed = model.edit_embeddings(cells, plan.cell, plan.token, mode, n_threads=2)
    for e in range(len(plan.cell)):
        seq = cells.cell(int(plan.cell[e])).astype(np.int64)
        token = int(plan.token[e])
        new = perturbed_tokens(seq, token, mode)
        pooled_orig = seq != token
        pooled_new = new != token
        want_o = brute(model, seq, pooled_orig)
        want_p = brute(model, new, pooled_new)
        tol = 1e-9 * (1 + np.abs(want_p).max())
        np.testing.assert_allclose(original[e], want_o, atol=tol, rtol=0)
        np.testing.assert_allclose(perturbed[e], want_p, atol=tol, rtol=0)


def test_shifts_do_not_depend_on_threads_or_chunks():
    model = make_model(5)
    cells = make_cells(6, 20, 15)
    goal = np.ones(model.d_model)
    a = perturbation_shifts(model, cells, [1, 2, 3], "delete", goal=goal, n_threads=1, chunk=64)
    b = perturbation_shifts(model, cells, [1, 2, 3], "delete", goal=goal, n_threads=2, chunk=3)
    pd.testing.assert_frame_equal(a, b, rtol=1e-12, atol=1e-15)
    assert set(a["token"]) == {1, 2, 3} and a["goal_shift"].notna().all()
    moved = perturbation_shifts(model, cells, [1], "activate", goal=goal)
    assert (moved["cosine_shift"].abs() < 1e-12).all()  # order-free attention: no effect


def test_statistics_find_a_shifted_gene():
    rng = np.random.default_rng(0)
    rows = []
    for token, mean in [(1, 0.5), (2, 0.0), (10, 0.0), (11, 0.0), (12, 0.0)]:
        for c in range(40):
            rows.append((token, c, abs(rng.normal()), rng.normal(mean, 0.2)))
    shifts = pd.DataFrame(rows, columns=["token", "cell", "cosine_shift", "goal_shift"])
    bins = {1: 0, 2: 0, 10: 0, 11: 0, 12: 0}
    table = goal_statistics(shifts, [1, 2], [10, 11, 12], bins)
    assert table.loc[0, "p_value"] < 1e-10 and table.loc[0, "statistic"] > 0.8
    assert table.loc[1, "p_value"] > 0.01
    assert list(table["n_cells"]) == [40, 40]


def test_null_tokens_are_matched_by_frequency_and_seeded():
    candidates = np.arange(100)
    presence = np.arange(100) + 1
    drawn, bin_of = choose_null_tokens(candidates, presence, [5, 95], per_bin=2, seed=3)
    again, _ = choose_null_tokens(candidates, presence, [5, 95], per_bin=2, seed=3)
    np.testing.assert_array_equal(drawn, again)
    assert len(drawn) == 20 and not {5, 95} & set(drawn.tolist())
    assert sorted(bin_of[t] for t in drawn.tolist()) == sorted(list(range(10)) * 2)


def test_cli_shards_gather_to_a_sorted_table(tmp_path, capsys):
    import anndata as ad

    from geneattn.cli import main
    from geneattn.models.study import save_study_model
    from geneattn.tokenize import save_tokens

    cells = make_cells(8, 40, 20)
    save_tokens(tmp_path / "tokens.npz", cells)
    save_study_model(tmp_path / "model.npz", make_model(9))
    labels = np.where(np.arange(40) % 2 == 0, "Tumor", "NAT")
    obs = pd.DataFrame({"source": pd.Categorical(labels)}, index=cells.cell_ids)
    ad.AnnData(np.zeros((40, 1), dtype=np.float32), obs=obs).write_h5ad(tmp_path / "qc.h5ad")
    names = "".join(f"G{i}\tENSG{i:011d}\n" for i in range(VOCAB))
    (tmp_path / "names.tsv").write_text("symbol\tgene_id\n" + names)
    modules = pd.DataFrame(
        {
            "gene": [f"G{i}" for i in range(6)],
            "gene_id": [f"ENSG{i:011d}" for i in range(6)],
            "module": [1, 1, 1, 2, 2, 2],
            "hub_rank": [1, 2, 3, 1, 2, 3],
        }
    )
    modules.to_csv(tmp_path / "modules.tsv", sep="\t", index=False)
    # the control centroid comes from the embed stage's output
    emb = ad.AnnData(np.zeros((40, 0), dtype=np.float32), obs=obs)
    emb.obsm["X_geneattn"] = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    emb.write_h5ad(tmp_path / "embeddings.h5ad")
    tokens = str(tmp_path / "tokens.npz")
    where = ["--obs", str(tmp_path / "qc.h5ad"), "--condition-column", "source"]
    plan_args = ["perturb-plan", tokens, *where, "--case", "Tumor", "--control", "NAT"]
    plan_args += ["--embeddings", str(tmp_path / "embeddings.h5ad")]
    plan_args += ["--gene-names", str(tmp_path / "names.tsv"), "--modules"]
    plan_args += [str(tmp_path / "modules.tsv"), "--hubs-per-module", "2", "--min-cells", "2"]
    plan_args += ["--null-per-bin", "1", "--out", str(tmp_path / "plan.npz")]
    assert main(plan_args) == 0, capsys.readouterr().err
    plan = load_plan(tmp_path / "plan.npz")
    np.testing.assert_allclose(
        plan.goal, emb.obsm["X_geneattn"][labels == "NAT"].astype(np.float64).mean(axis=0)
    )
    shards = []
    for s in range(2):
        out = tmp_path / f"shard{s}.tsv"
        args = ["perturb", tokens, "--model", str(tmp_path / "model.npz"), *where]
        args += ["--case", "Tumor", "--plan", str(tmp_path / "plan.npz")]
        args += ["--shard", str(s), "--cells-per-shard", "12"]
        assert main([*args, "--out", str(out)]) == 0, capsys.readouterr().err
        shards.append(str(out))
    # 20 Tumor cells at 12 per shard make 2 shards: a third does not exist
    args = ["perturb", tokens, "--model", str(tmp_path / "model.npz"), *where, "--case", "Tumor"]
    args += ["--plan", str(tmp_path / "plan.npz"), "--shard", "2", "--cells-per-shard", "12"]
    assert main([*args, "--out", str(tmp_path / "shard2.tsv")]) == 2
    assert "2 shard(s)" in capsys.readouterr().err and not (tmp_path / "shard2.tsv").exists()
    tumor = cells.cell_ids[labels == "Tumor"].astype(str)
    for s, path in enumerate(shards):
        part = pd.read_csv(path, sep="\t", keep_default_na=False)
        seen = set(part.loc[part["cell"] != "", "cell"])
        assert seen and seen <= set(tumor[12 * s : 12 * (s + 1)])
    table_path = tmp_path / "perturbation.tsv"
    args = ["perturb-stats", *shards, "--gene-names", str(tmp_path / "names.tsv")]
    args += ["--modules", str(tmp_path / "modules.tsv")]
    assert main([*args, "--out", str(table_path)]) == 0, capsys.readouterr().err
    table = pd.read_csv(table_path, sep="\t")
    assert list(table.columns[:4]) == ["gene", "ensembl_id", "module", "mode"]
    assert sorted(table["gene"]) == ["G0", "G1", "G3", "G4"]
    assert table["mean_goal_shift"].is_monotonic_decreasing
    assert (table["n_cells"] > 0).all() and table["fdr"].between(0, 1).all()
    # a broken shard: a clear error naming it, and no table
    (tmp_path / "bad.tsv").write_text("gene_id\trole\nx\ttarget\n")
    bad_out = tmp_path / "bad_out.tsv"
    args = ["perturb-stats", str(tmp_path / "bad.tsv"), "--gene-names", str(tmp_path / "names.tsv")]
    assert main([*args, "--out", str(bad_out)]) == 2
    assert "bad.tsv" in capsys.readouterr().err and not bad_out.exists()
    # Geneformer's definitions through the same stages: gene-level shift sums per shard,
    # gathered by gene-shifts, and the goal_state_shift table with Geneformer's columns
    gf_shards, sums = [], []
    for s in range(2):
        args = ["perturb", tokens, "--model", str(tmp_path / "model.npz"), *where]
        args += ["--case", "Tumor", "--plan", str(tmp_path / "plan.npz"), "--mode", "delete"]
        args += ["--shard", str(s), "--cells-per-shard", "12", "--definition", "geneformer"]
        args += ["--gene-shifts", str(tmp_path / f"gs{s}.npz")]
        assert main([*args, "--out", str(tmp_path / f"gf{s}.tsv")]) == 0, capsys.readouterr().err
        gf_shards.append(str(tmp_path / f"gf{s}.tsv"))
        sums.append(str(tmp_path / f"gs{s}.npz"))
    gf = pd.concat([pd.read_csv(p, sep="\t", keep_default_na=False) for p in gf_shards])
    ours = pd.concat([pd.read_csv(p, sep="\t", keep_default_na=False) for p in shards])
    assert len(gf) == len(ours)  # delete: the same (gene, cell) pairs, other definitions
    args = ["gene-shifts", *sums, "--tokens", tokens, "--gene-names", str(tmp_path / "names.tsv")]
    assert main([*args, "--out", str(tmp_path / "gene_shifts.tsv")]) == 0
    gene_shifts = pd.read_csv(tmp_path / "gene_shifts.tsv", sep="\t")
    assert set(gene_shifts["perturbed_gene"]) <= {"G0", "G1", "G3", "G4"}
    assert gene_shifts["cosine_sim_mean"].between(-1, 1).all()
    args = ["perturb-stats", *gf_shards, "--gene-names", str(tmp_path / "names.tsv")]
    args += ["--out", str(tmp_path / "p.tsv"), "--geneformer-out", str(tmp_path / "gf.tsv")]
    assert main(args) == 0, capsys.readouterr().err
    gf_table = pd.read_csv(tmp_path / "gf.tsv", sep="\t")
    assert list(gf_table.columns[:5]) == [
        "Gene",
        "Gene_name",
        "Ensembl_ID",
        "Shift_to_goal_end",
        "Goal_end_vs_random_pval",
    ]
    assert {"Goal_end_FDR", "N_Detections", "Sig"} <= set(gf_table.columns)
    assert len(gf_table) == gf.loc[gf["cell"] != "", "gene_id"].nunique()
    args = ["perturb", tokens, "--model", str(tmp_path / "model.npz"), *where, "--case", "Tumor"]
    args += ["--plan", str(tmp_path / "plan.npz"), "--gene-shifts", str(tmp_path / "x.npz")]
    assert main([*args, "--out", str(tmp_path / "x.tsv")]) == 2  # needs definition geneformer
    # the goal state as Geneformer's exact_median state embedding
    median_args = [*plan_args[:-1], str(tmp_path / "plan_median.npz"), "--summary-stat"]
    assert main([*median_args, "exact_median"]) == 0, capsys.readouterr().err
    x = np.sort(emb.obsm["X_geneattn"][labels == "NAT"].astype(np.float64), axis=0)
    np.testing.assert_allclose(load_plan(tmp_path / "plan_median.npz").goal, x[(len(x) - 1) // 2])
    # groups perturbed together and anchor pairs (Geneformer's genes_to_perturb list and
    # anchor_gene), by symbol through --gene-names
    args = ["perturb", tokens, "--model", str(tmp_path / "model.npz"), *where, "--case", "Tumor"]
    args += ["--plan", str(tmp_path / "plan.npz"), "--definition", "geneformer"]
    args += ["--gene-names", str(tmp_path / "names.tsv"), "--anchor", "G0"]
    args += ["--group", "G0,G1", "--group", "ENSG00000000003"]
    assert main([*args, "--out", str(tmp_path / "pairs.tsv")]) == 0, capsys.readouterr().err
    pairs = pd.read_csv(tmp_path / "pairs.tsv", sep="\t", keep_default_na=False)
    done = pairs[pairs["cell"] != ""]
    assert set(done.loc[done["role"] != "group", "anchor"]) == {"ENSG00000000000"}
    assert "ENSG00000000000" not in set(done.loc[done["role"] != "group", "gene_id"])
    assert set(done.loc[done["role"] == "group", "gene_id"]) <= {
        "ENSG00000000000+ENSG00000000001",
        "ENSG00000000003",
    }
    args = ["perturb-stats", str(tmp_path / "pairs.tsv"), "--gene-names"]
    args += [str(tmp_path / "names.tsv"), "--out", str(tmp_path / "pt.tsv")]
    assert main([*args, "--groups-out", str(tmp_path / "groups.tsv")]) == 0
    groups = pd.read_csv(tmp_path / "groups.tsv", sep="\t")
    assert groups["group"].tolist() == ["G0+G1", "G3"] and (groups["n_cells"] > 0).all()
    bad = ["perturb", tokens, "--model", str(tmp_path / "model.npz"), *where, "--case", "Tumor"]
    bad += ["--plan", str(tmp_path / "plan.npz"), "--definition", "geneformer", "--anchor", "NOPE"]
    assert main([*bad, "--out", str(tmp_path / "bad.tsv")]) == 2
    # the shard tables are read with categorical text columns, to hold a million cells'
    # rows: every table made from them equals the one made from plain text columns
    from geneattn.geneformer_perturb import group_table
    from geneattn.geneformer_stats import geneformer_table
    from geneattn.perturb import perturbation_table, read_shift_tables
    from geneattn.resources.load import load_gene_name_map

    name_map = load_gene_name_map(tmp_path / "names.tsv")
    samples = {c: f"p{i % 3}" for i, c in enumerate(cells.cell_ids.astype(str))}
    for paths in (shards, gf_shards, [str(tmp_path / "pairs.tsv")]):
        plain = pd.concat(
            [pd.read_csv(p, sep="\t", keep_default_na=False, na_values=["NA"]) for p in paths],
            ignore_index=True,
        )
        read = read_shift_tables(paths)
        assert (read["cell"].dtype, read["gene_id"].dtype) == ("category", "category")
        pd.testing.assert_frame_equal(read.astype(plain.dtypes.to_dict()), plain)
        for kwargs in ({}, {"samples": samples}):
            pd.testing.assert_frame_equal(
                perturbation_table(read, name_map=name_map, **kwargs),
                perturbation_table(plain, name_map=name_map, **kwargs),
            )
        pd.testing.assert_frame_equal(
            group_table(read, name_map=name_map), group_table(plain, name_map=name_map)
        )
        for stats in ("goal_state_shift", "mixture_model", "vs_null"):
            null = stats == "vs_null"
            pd.testing.assert_frame_equal(
                geneformer_table(read, name_map=name_map, stats=stats, null=read if null else None),
                geneformer_table(
                    plain, name_map=name_map, stats=stats, null=plain if null else None
                ),
            )

"""Baselines on seeded toy data whose answer is known."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geneattn.baselines import (
    coexpression_graph,
    coexpression_modules,
    label_transfer,
    pca_embedding,
    random_embedding,
    topological_overlap,
)
from geneattn.errors import InputError
from geneattn.evaluation import immune_marker_programs, program_pair_sharing


def planted_expression(n_cells=300, group_sizes=(12, 10, 8), n_noise=20, seed=0):
    """Genes in groups driven by one latent factor each, plus independent noise genes."""
    rng = np.random.default_rng(seed)
    columns, truth = [], []
    for g, size in enumerate(group_sizes):
        factor = rng.standard_normal(n_cells)
        for _ in range(size):
            columns.append(factor + 0.5 * rng.standard_normal(n_cells))
            truth.append(g + 1)
    for _ in range(n_noise):
        columns.append(rng.standard_normal(n_cells))
        truth.append(0)
    return np.column_stack(columns), np.array(truth)


def tom_loops(a):
    a = np.array(a, dtype=float)
    np.fill_diagonal(a, 0.0)
    n = len(a)
    k = a.sum(axis=1)
    out = np.eye(n)
    for i in range(n):
        for j in range(n):
            if i != j:
                shared = sum(a[i, u] * a[u, j] for u in range(n))
                out[i, j] = (shared + a[i, j]) / (min(k[i], k[j]) + 1 - a[i, j])
    return out


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 7), st.integers(0, 2**31 - 1))
def test_topological_overlap_matches_the_formula(n, seed):
    rng = np.random.default_rng(seed)
    a = rng.random((n, n))
    a = (a + a.T) / 2
    tom = topological_overlap(a)
    np.testing.assert_allclose(tom, tom_loops(a), rtol=1e-12, atol=1e-12)
    assert np.all(tom <= 1 + 1e-12) and np.all(tom >= 0)


def test_topological_overlap_rejects_bad_adjacency():
    with pytest.raises(ValueError, match="symmetric"):
        topological_overlap(np.array([[0.0, 0.2], [0.5, 0.0]]))
    with pytest.raises(ValueError, match="square"):
        topological_overlap(np.zeros((2, 3)))


@pytest.mark.parametrize(
    ("graph", "tom"), [("knn", False), ("soft", False), ("soft", True), ("knn", True)]
)
def test_coexpression_modules_recover_planted_groups(graph, tom):
    x, truth = planted_expression()
    modules = coexpression_modules(
        x, graph=graph, tom=tom, top_k=8, min_size=5, seed=0, min_kme=0.3
    )
    assert modules.shape == truth.shape
    found = []
    for g in (1, 2, 3):
        labels = set(modules[truth == g].tolist())
        assert len(labels) == 1 and 0 not in labels, (g, labels)
        found.append(labels.pop())
    assert len(set(found)) == 3
    # with WGCNA's minKMEtoStay no noise gene stays in a planted module; without it the kNN
    # graph links every noise gene somewhere
    assert not set(modules[truth == 0].tolist()) & set(found)
    loose = coexpression_modules(x, graph=graph, tom=tom, top_k=8, min_size=5, seed=0)
    assert np.sum(loose[truth == 0] > 0) >= np.sum(modules[truth == 0] > 0)


def test_coexpression_modules_are_seeded_and_small_communities_grey():
    x, _ = planted_expression(seed=3)
    a = coexpression_modules(x, seed=1)
    assert np.array_equal(a, coexpression_modules(x, seed=1))
    big = coexpression_modules(x, min_size=11, seed=1, min_kme=0.3)
    # only the 12-gene group can reach 11 genes; everything else is grey
    assert set(big.tolist()) <= {0, 1}
    assert np.sum(big == 1) >= 11


def test_coexpression_graph_is_symmetric_sparse_and_positive():
    x, _ = planted_expression(seed=2)
    w = coexpression_graph(x, top_k=3)
    assert (w != w.T).nnz == 0
    assert w.diagonal().sum() == 0
    assert np.all(w.data > 0)
    # every gene keeps at most ... its own top 3 plus those that picked it; at least 3
    assert np.all(np.diff(w.indptr) >= 3)
    dense = coexpression_graph(x, graph="soft", top_k=None)
    corr = np.corrcoef(x, rowvar=False)
    np.fill_diagonal(corr, 0)
    np.testing.assert_allclose(dense.toarray(), np.clip(corr, 0, 1) ** 6, atol=1e-10)
    with pytest.raises(ValueError, match="graph"):
        coexpression_graph(x, graph="hclust")


def test_pca_embedding_equals_principal_components_up_to_sign():
    rng = np.random.default_rng(0)
    x = rng.poisson(2.0, size=(60, 30)).astype(float)
    scores = pca_embedding(x, n_components=5, seed=0)
    centred = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    reference = u[:, :5] * s[:5]
    for c in range(5):
        assert (
            min(
                np.abs(scores[:, c] - reference[:, c]).max(),
                np.abs(scores[:, c] + reference[:, c]).max(),
            )
            < 1e-6 * s[0]
        )
    np.testing.assert_array_equal(scores, pca_embedding(x, n_components=5, seed=0))
    with pytest.raises(InputError, match="n_components"):
        pca_embedding(x, n_components=60)


def test_label_transfer_separable_random_and_dropped_labels():
    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b", "c"], 40)
    centres = {"a": 0.0, "b": 10.0, "c": 20.0}
    emb = np.array([[centres[y], 0.0] for y in labels]) + rng.standard_normal((120, 2))
    res = label_transfer(emb, labels, k=10, n_folds=5, seed=0)
    assert res["balanced_accuracy"] == 1.0 and res["n_labels"] == 3
    noise = label_transfer(random_embedding(120, 8, seed=1), labels, seed=0)
    assert noise["balanced_accuracy"] < 0.6
    with_rare = np.concatenate([labels, ["rare"] * 3, [None]])
    emb2 = np.vstack([emb, rng.standard_normal((4, 2))])
    res2 = label_transfer(emb2, with_rare, seed=0)
    assert res2["labels_dropped"] == 1 and res2["n_cells"] == 120
    assert res2["balanced_accuracy"] == 1.0
    with pytest.raises(InputError, match="labels"):
        label_transfer(emb, labels[:-1])


def test_program_pair_sharing_counts_pairs_over_the_whole_universe():
    genes = [f"g{i}" for i in range(40)]
    modules = np.array([1] * 10 + [2] * 10 + [3] * 10 + [0] * 10)
    table = pd.DataFrame({"gene": genes, "module": modules})
    programs = {
        "together": ["g0", "g1", "g2", "g3"],
        "split": ["g0", "g1", "g10", "g11"],
        "unassigned": ["g30", "g31", "g32"],
        "one": ["g5", "absent"],
    }
    out = program_pair_sharing(table, programs, n_permutations=2000, seed=0).set_index("program")
    assert out.loc["together", "pairs"] == 6 and out.loc["together", "shared_pairs"] == 6
    assert out.loc["together", "fraction"] == 1.0
    assert out.loc["together", "module"] == 1
    assert out.loc["together", "members"] == "g0,g1,g2,g3"
    assert out.loc["split", "shared_pairs"] == 2
    assert out.loc["split", "fraction"] == pytest.approx(1 / 3)
    assert out.loc["unassigned", "fraction"] == 0.0 and out.loc["unassigned", "assigned"] == 0
    assert out.loc["unassigned", "p_value"] == 1.0
    assert out.loc["one", "in_universe"] == 1 and np.isnan(out.loc["one", "p_value"])
    # chance that a random pair shares one of three 10-gene modules in 40 genes
    expected = 3 * (10 * 9) / (40 * 39)
    assert out.loc["together", "expected_fraction"] == pytest.approx(expected, abs=0.02)
    # all four in one module: p = P(4 random genes share a module) ~ 3 * C(10,4)/C(40,4)
    exact = 3 * 210 / 91390
    assert out.loc["together", "p_value"] < exact * 3 + 5 / 2000
    with pytest.raises(ValueError, match="non-negative"):
        program_pair_sharing(table.assign(module=-1), programs)


def test_immune_marker_programs_reads_nested_positive_markers(tmp_path):
    data = {
        "title": "toy",
        "cell_types": [
            {
                "name": "T cell",
                "markers": [{"genes": ["CD3D+", "CD3E+", "CD3G+", "CD19-"], "weight": 1}],
                "subtypes": {
                    "title": "T subtypes",
                    "cell_types": [
                        {"name": "CD8", "markers": [{"genes": ["CD8A+", "CD8B+", "CD3D+"]}]},
                        {"name": "tiny", "markers": [{"genes": ["X+"]}]},
                    ],
                },
            }
        ],
    }
    path = tmp_path / "m.json"
    path.write_text(json.dumps(data))
    programs = immune_marker_programs(path)
    assert programs == {
        "markers:T cell": ["CD3D", "CD3E", "CD3G"],
        "markers:CD8": ["CD8A", "CD8B", "CD3D"],
    }
    path.write_text("[1, 2]")
    with pytest.raises(InputError, match="cell_types"):
        immune_marker_programs(path)
    with pytest.raises(InputError, match="not found"):
        immune_marker_programs(tmp_path / "nope.json")


def test_baseline_evaluation_does_not_depend_on_the_module_table_order():
    """The co-expression modules of the same genes come out the same however the module
    table lists them (Leiden depends on node order; the baseline sorts genes by ID)."""
    import anndata as ad

    from geneattn.baselines import evaluate_against_baselines

    x, truth = planted_expression(n_cells=120, group_sizes=(10, 9, 8, 7, 6, 5), n_noise=30)
    rng = np.random.default_rng(1)
    counts = rng.poisson(np.exp(1.0 + 0.6 * (x - x.min(axis=0)) / x.std(axis=0))).astype(float)
    genes = [f"G{i}" for i in range(counts.shape[1])]
    adata = ad.AnnData(
        counts,
        var=pd.DataFrame({"gene_ids": [f"ENSG{i:011d}" for i in range(len(genes))]}, index=genes),
    )
    table = pd.DataFrame({"gene": genes, "gene_id": adata.var["gene_ids"], "module": truth})
    programs = {"first": genes[:10], "second": genes[10:19]}

    def partition(order):
        res = evaluate_against_baselines(
            table.iloc[order].reset_index(drop=True), adata, programs, fdr=0.05,
            n_enriched=0, n_modules=6, fraction=0.0, n_permutations=200, min_size=3,
        )  # fmt: skip
        by_gene = dict(zip(res["coexpression"]["gene"], res["coexpression"]["module"], strict=True))
        labels = np.array([by_gene[g] for g in genes])
        same = labels[:, None] == labels[None, :]
        return same & (labels[:, None] > 0), res["table"]

    first, table_a = partition(np.arange(len(genes)))
    second, table_b = partition(rng.permutation(len(genes)))
    np.testing.assert_array_equal(first, second)  # same genes together, labels aside
    np.testing.assert_array_equal(
        table_a["coexpression_fraction"], table_b["coexpression_fraction"]
    )


@given(
    n_cells=st.integers(2, 60),
    chunk=st.integers(1, 70),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=40, deadline=None)
def test_blocked_correlation_equals_the_whole_matrix(n_cells, chunk, seed):
    """Adding up blocks' sums and cross-products gives pearson_correlation within
    round-off; a single block gives it bit for bit."""
    from scipy import sparse

    from geneattn.baselines import blocked_correlation
    from geneattn.diffusion import pearson_correlation

    rng = np.random.default_rng(seed)
    x = sparse.random(n_cells, 9, density=0.4, random_state=rng, format="csr") * 5
    x[:, 3] = 0.0  # a constant gene
    blocks = [x[i : i + chunk] for i in range(0, n_cells, chunk)]
    whole = pearson_correlation(x)
    got = blocked_correlation(iter(blocks))
    if len(blocks) == 1:
        np.testing.assert_array_equal(got, whole)
    np.testing.assert_allclose(got, whole, rtol=1e-9, atol=1e-9)


def _planted_study(n_cells=150):
    import anndata as ad

    x, truth = planted_expression(n_cells=n_cells, group_sizes=(10, 9, 8, 7), n_noise=20)
    rng = np.random.default_rng(3)
    counts = rng.poisson(np.exp(1.0 + 0.6 * (x - x.min(axis=0)) / x.std(axis=0))).astype(float)
    genes = [f"G{i}" for i in range(counts.shape[1])]
    labels = np.where(np.arange(n_cells) % 3 == 0, "a", np.where(np.arange(n_cells) % 3, "b", "c"))
    adata = ad.AnnData(
        counts,
        obs=pd.DataFrame({"label": labels}, index=[f"c{i}" for i in range(n_cells)]),
        var=pd.DataFrame({"gene_ids": [f"ENSG{i:011d}" for i in range(len(genes))]}, index=genes),
    )
    table = pd.DataFrame({"gene": genes, "gene_id": adata.var["gene_ids"], "module": truth})
    embedding = x[:, :6] + 0.1 * rng.standard_normal((n_cells, 6))
    return adata, table, embedding


def test_evaluation_reads_counts_in_blocks_and_backed(tmp_path):
    """Blocks smaller than the study, in memory or from a backed file, give the same tables
    as the whole matrix (the demo's are byte-identical too; see the issue note)."""
    import anndata as ad

    from geneattn.baselines import evaluate_against_baselines

    adata, table, embedding = _planted_study()
    programs = {"first": list(table["gene"][:10]), "second": list(table["gene"][10:19])}
    kw = dict(
        fdr=0.05, n_enriched=0, n_modules=4, fraction=0.0, n_permutations=200, min_size=3,
        embedding=embedding, cell_names=adata.obs_names, label_column="label",
    )  # fmt: skip
    whole = evaluate_against_baselines(table, adata, programs, chunk_cells=10_000, **kw)
    adata.write_h5ad(tmp_path / "qc.h5ad")
    backed = ad.read_h5ad(tmp_path / "qc.h5ad", backed="r")
    try:
        for counts in (adata, backed):
            blocks = evaluate_against_baselines(table, counts, programs, chunk_cells=40, **kw)
            assert blocks["head"] == whole["head"]
            pd.testing.assert_frame_equal(blocks["table"], whole["table"])
            pd.testing.assert_frame_equal(blocks["coexpression"], whole["coexpression"])
            pd.testing.assert_frame_equal(blocks["transfer"], whole["transfer"])
    finally:
        backed.file.close()


def test_label_transfer_runs_on_a_seeded_subsample_of_a_large_study():
    from geneattn.baselines import evaluate_against_baselines

    adata, table, embedding = _planted_study()
    kw = dict(
        fdr=0.05, n_enriched=0, n_modules=4, fraction=0.0, n_permutations=50, min_size=3,
        embedding=embedding, cell_names=adata.obs_names, label_column="label", chunk_cells=40,
    )  # fmt: skip
    a = evaluate_against_baselines(table, adata, {}, transfer_cells=90, **kw)
    b = evaluate_against_baselines(table, adata, {}, transfer_cells=90, **kw)
    assert "on a random 90 of the 150 embedded cells (seed 0)" in a["head"]
    assert (a["transfer"]["n_cells"] == 90).all()
    pd.testing.assert_frame_equal(a["transfer"], b["transfer"])
    whole = evaluate_against_baselines(table, adata, {}, transfer_cells=150, **kw)
    assert "random" not in whole["head"].split("label transfer")[1].split(":")[0]
    assert (whole["transfer"]["n_cells"] == 150).all()

"""The cell-label differential test: per-cell module kernel against numpy, the test, the CLIs."""

from __future__ import annotations

import itertools

import anndata as ad
import networkx as nx
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import geneattn.differential as differential
from geneattn import _kernels
from geneattn.attention import aggregate_attention, subset_cells
from geneattn.cli import main
from geneattn.differential import (
    ModuleAttention,
    cell_label_test,
    gather_module_attention,
    load_module_attention,
    module_attention,
    read_module_labels,
    save_module_attention,
)
from geneattn.errors import InputError
from geneattn.models.study import StudyModel, save_study_model
from geneattn.modules import DIFFERENTIAL_COLUMNS
from geneattn.network import build_network, save_network
from geneattn.testing import toy
from geneattn.tokenize import TokenizedCells, save_tokens

VOCAB = 30


def make_cells(seed: int, n_cells: int, max_len: int, *, repeats: bool = False) -> TokenizedCells:
    """Cells of 0..max_len tokens, frequent tokens more likely (repeated tokens if asked)."""
    return toy.cells(seed, n_cells, max_len, vocab=VOCAB, min_len=0, repeats=repeats)


def make_model(seed: int, d: int = 8, n_heads: int = 2) -> StudyModel:
    """The attention tests' random model over this file's vocabulary."""
    return toy.study_model(seed, d=d, n_heads=n_heads, vocab=VOCAB)


def head_averaged(x: np.ndarray, w_q: np.ndarray, w_k: np.ndarray, h: int) -> np.ndarray:
    """Head-averaged attention weights of one cell, straight from the formula."""
    q, k = x @ w_q, x @ w_k
    dh = x.shape[1] // h
    a = np.zeros((len(x), len(x)))
    for hh in range(h):
        s = q[:, hh * dh : (hh + 1) * dh] @ k[:, hh * dh : (hh + 1) * dh].T / np.sqrt(dh)
        e = np.exp(s - s.max(axis=1, keepdims=True))
        a += e / (e.sum(axis=1, keepdims=True) + 1e-30) / h
    return a


def numpy_module_cells(
    cells: TokenizedCells, model: StudyModel, gene_tokens: np.ndarray, gene_modules: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per cell: within-module attention over distinct module genes, and their pair count."""
    numbers = np.unique(gene_modules[gene_modules > 0])
    module_of_token = np.zeros(VOCAB, dtype=np.int64)
    module_of_token[gene_tokens] = gene_modules
    sums = np.zeros((cells.n_cells, len(numbers)))
    pairs = np.zeros((cells.n_cells, len(numbers)), dtype=np.int64)
    for c in range(cells.n_cells):
        toks = cells.cell(c).astype(np.int64)
        if len(toks) == 0:
            continue
        a = head_averaged(model.gene_embeddings[toks], model.w_q, model.w_k, model.n_heads)
        mod = module_of_token[toks]
        for col, k in enumerate(numbers):
            same = (mod[:, None] == k) & (mod[None, :] == k) & (toks[:, None] != toks[None, :])
            sums[c, col] = a[same].sum()
            n = len(np.unique(toks[mod == k]))
            pairs[c, col] = n * (n - 1)
    return sums, pairs


def random_modules(seed: int, n_genes: int, n_modules: int) -> tuple[np.ndarray, np.ndarray]:
    """Random universe genes (tokens) and their modules 0..n_modules (0: unassigned)."""
    rng = np.random.default_rng(seed)
    tokens = rng.permutation(VOCAB)[:n_genes].astype(np.int64)
    return tokens, rng.integers(0, n_modules + 1, size=n_genes).astype(np.int64)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    n_cells=st.integers(0, 10),
    max_len=st.integers(0, 25),
    heads=st.sampled_from([(4, 1), (8, 2), (6, 3)]),
    n_genes=st.integers(1, VOCAB),
    n_modules=st.integers(1, 5),
    f32=st.booleans(),
    i64=st.booleans(),
    repeats=st.booleans(),
)
def test_kernel_matches_numpy(seed, n_cells, max_len, heads, n_genes, n_modules, f32, i64, repeats):
    d, n_heads = heads
    cells = make_cells(seed, n_cells, max_len, repeats=repeats)
    model = make_model(seed + 1, d, n_heads)
    gene_tokens, gene_modules = random_modules(seed + 2, n_genes, n_modules)
    want_sums, want_pairs = numpy_module_cells(cells, model, gene_tokens, gene_modules)
    numbers = np.unique(gene_modules[gene_modules > 0])
    universe = np.full(VOCAB, -1, dtype=np.int64)
    universe[gene_tokens] = np.arange(n_genes)
    column = np.where(gene_modules > 0, np.searchsorted(numbers, gene_modules), -1)
    dtype = np.float32 if f32 else np.float64
    sums, pairs = _kernels.mha_module_cells(
        cells.tokens.astype(np.int64 if i64 else np.int32),
        cells.offsets,
        model.gene_embeddings.astype(dtype),
        model.w_q.astype(dtype),
        model.w_k.astype(dtype),
        n_heads,
        universe,
        column.astype(np.int64),
        len(numbers),
        n_threads=2,
    )
    assert sums.dtype == np.float64 and pairs.dtype == np.int64
    assert sums.shape == pairs.shape == (n_cells, len(numbers))
    tol = 1e-4 if f32 else 1e-11
    np.testing.assert_allclose(sums, want_sums, rtol=tol, atol=tol)
    np.testing.assert_array_equal(pairs, want_pairs)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), n_modules=st.integers(1, 4))
def test_cells_add_up_to_the_within_module_attention_sums(seed, n_modules):
    """Summed over cells, S and N are the module blocks of the gene x gene sums and counts."""
    cells = make_cells(seed, 12, 20)
    model = make_model(seed + 1)
    gene_tokens, gene_modules = random_modules(seed + 2, 20, n_modules)
    result = module_attention(cells, model, gene_tokens, gene_modules)
    whole = aggregate_attention(cells, model, gene_tokens)
    for col, k in enumerate(result.modules.tolist()):
        block = np.ix_(gene_modules == k, gene_modules == k)
        sums, counts = whole.sums[block].copy(), whole.counts[block].copy()
        np.fill_diagonal(sums, 0.0)
        np.fill_diagonal(counts, 0)
        assert result.sums[:, col].sum() == pytest.approx(sums.sum(), rel=1e-12, abs=1e-12)
        assert result.pairs[:, col].sum() == counts.sum()
        assert result.module_sizes[col] == (gene_modules == k).sum()


def test_kernel_is_bit_identical_for_any_thread_count():
    cells = make_cells(3, 40, 30)
    model = make_model(4)
    gene_tokens, gene_modules = random_modules(5, 25, 4)
    first = module_attention(cells, model, gene_tokens, gene_modules, n_threads=1)
    for threads in (2, 3, 7):
        again = module_attention(cells, model, gene_tokens, gene_modules, n_threads=threads)
        np.testing.assert_array_equal(again.sums, first.sums)
        np.testing.assert_array_equal(again.pairs, first.pairs)
    assert first.sums.any() and first.pairs.any()


def test_kernel_refuses_bad_input():
    cells = make_cells(0, 3, 5)
    model = make_model(0)
    universe = np.full(VOCAB, -1, dtype=np.int64)
    universe[:4] = np.arange(4)
    modules = np.array([0, 0, 1, -1], dtype=np.int64)
    args = [cells.tokens, cells.offsets, model.gene_embeddings, model.w_q, model.w_k, 2]
    with pytest.raises(TypeError, match="modules must be a 1-D numpy array of dtype int64"):
        _kernels.mha_module_cells(*args, universe, modules.astype(np.int32), 2)
    with pytest.raises(ValueError, match=r"modules\[2\] = 1 is neither -1 nor a module in 0..1"):
        _kernels.mha_module_cells(*args, universe, modules, 1)
    with pytest.raises(ValueError, match="universe"):
        _kernels.mha_module_cells(*args, universe, modules[:3], 2)
    with pytest.raises(ValueError, match="one entry per table row"):
        _kernels.mha_module_cells(*args, universe[:-1], modules, 2)
    with pytest.raises(TypeError, match="w_k"):
        _kernels.mha_module_cells(*args[:4], model.w_k.astype(np.float32), 2, universe, modules, 2)
    with pytest.raises(ValueError, match="n_threads"):
        _kernels.mha_module_cells(*args, universe, modules, 2, n_threads=0)
    with pytest.raises(InputError, match="repeat a token"):
        module_attention(cells, model, np.array([1, 1]), np.array([1, 1]))
    with pytest.raises(InputError, match="vocabulary"):
        module_attention(cells, model, np.array([1, VOCAB]), np.array([1, 1]))


def _attention(sums, pairs, condition, modules=None) -> ModuleAttention:
    sums = np.asarray(sums, dtype=np.float64)
    k = sums.shape[1]
    return ModuleAttention(
        modules=np.arange(1, k + 1) if modules is None else np.asarray(modules),
        module_sizes=np.full(k, 5),
        cell_ids=np.array([f"{condition}{i}" for i in range(len(sums))]),
        sums=sums,
        pairs=np.asarray(pairs, dtype=np.int64),
        condition=condition,
    )


def test_cell_label_test_by_hand_against_every_relabelling():
    # module 1: case cells attend more; module 2: no pair in the control cells
    case = _attention([[3.0, 1.0], [2.0, 0.5]], [[2, 2], [2, 2]], "Tumor")
    control = _attention([[1.0, 0.0], [0.4, 0.0], [1.0, 0.0]], [[2, 0], [2, 0], [4, 0]], "NAT")
    table = cell_label_test(case, control, n_permutations=4000, seed=3)
    assert list(table.columns) == list(DIFFERENTIAL_COLUMNS)
    row = table.iloc[0]
    assert row["case_mean"] == pytest.approx(5 / 4) and row["control_mean"] == pytest.approx(0.3)
    assert row["diff"] == pytest.approx(0.95) and row["n_pairs"] == 12
    # the exact permutation p-value over the 10 relabellings of 5 cells into 2 + 3
    s, n = np.array([3.0, 2.0, 1.0, 0.4, 1.0]), np.array([2, 2, 2, 2, 4])
    null = []
    for chosen in itertools.combinations(range(5), 2):
        mask = np.isin(np.arange(5), chosen)
        null.append(s[mask].sum() / n[mask].sum() - s[~mask].sum() / n[~mask].sum())
    exact = np.mean(np.abs(null) >= 0.95 - 1e-12)
    assert exact == pytest.approx(0.1)  # only the observed labelling is as extreme
    assert row["p_value"] == pytest.approx(exact, abs=0.015)
    assert (row["p_value"] * 4001 - 1) == pytest.approx(round(row["p_value"] * 4001 - 1))
    nan_row = table.iloc[1]
    assert np.isnan(nan_row["diff"]) and np.isnan(nan_row["p_value"]) and np.isnan(nan_row["fdr"])
    assert row["fdr"] == row["p_value"]  # the only module with a p-value
    assert (table["test"] == "cells").all() and (table["n_permutations"] == 4000).all()


def test_cell_label_test_holds_its_level_and_finds_a_planted_difference():
    """Cells drawn from one distribution: about 5% of modules at p < 0.05; a shifted module
    is found."""
    rng = np.random.default_rng(0)
    k = 400
    pairs = rng.integers(0, 30, size=(60, k))
    sums = pairs * rng.gamma(20.0, 0.001, size=(60, k))
    sums[:25, 0] *= 1.6  # module 1: case cells attend more
    case = _attention(sums[:25], pairs[:25], "case")
    control = _attention(sums[25:], pairs[25:], "control")
    table = cell_label_test(case, control, n_permutations=199, seed=1)
    p = table["p_value"].to_numpy()
    assert p[0] == pytest.approx(1 / 200)
    rate = np.mean(p[1:] < 0.05)
    assert 0.02 < rate < 0.09, rate
    # p-values are uniform-ish over the null modules
    assert 0.4 < np.mean(p[1:] < 0.5) < 0.6


def test_cell_label_test_is_seeded_and_independent_of_blocking(monkeypatch):
    rng = np.random.default_rng(2)
    pairs = rng.integers(0, 10, size=(30, 6))
    sums = pairs * rng.random((30, 6))
    case, control = _attention(sums[:12], pairs[:12], "a"), _attention(sums[12:], pairs[12:], "b")
    table = cell_label_test(case, control, n_permutations=250, seed=7)
    pd.testing.assert_frame_equal(table, cell_label_test(case, control, n_permutations=250, seed=7))
    monkeypatch.setattr(differential, "_BLOCK_ENTRIES", 30 * 7)  # 7 relabellings per block
    pd.testing.assert_frame_equal(table, cell_label_test(case, control, n_permutations=250, seed=7))
    other_seed = cell_label_test(case, control, n_permutations=250, seed=8)
    assert not other_seed["p_value"].equals(table["p_value"])


def test_cell_label_test_refuses_mismatched_or_empty_groups():
    case = _attention([[1.0, 1.0]], [[2, 2]], "a")
    with pytest.raises(InputError, match="different modules"):
        cell_label_test(case, _attention([[1.0, 1.0]], [[2, 2]], "b", modules=[1, 3]))
    empty = _attention(np.zeros((0, 2)), np.zeros((0, 2)), "b")
    with pytest.raises(InputError, match="both need cells"):
        cell_label_test(case, empty)
    with pytest.raises(ValueError, match="n_permutations"):
        cell_label_test(case, case, n_permutations=0)


def test_files_round_trip_and_shards_concatenate(tmp_path):
    cells = make_cells(1, 20, 15)
    model = make_model(2)
    gene_tokens, gene_modules = random_modules(3, 20, 3)
    whole = module_attention(cells, model, gene_tokens, gene_modules, condition="Tumor")
    paths = []
    for i, part in enumerate(np.array_split(np.arange(20), 3)):
        shard = module_attention(
            subset_cells(cells, part), model, gene_tokens, gene_modules, condition="Tumor"
        )
        paths.append(tmp_path / f"shard{i}.npz")
        save_module_attention(paths[-1], shard)
    gathered = gather_module_attention(paths)
    np.testing.assert_array_equal(gathered.sums, whole.sums)
    np.testing.assert_array_equal(gathered.pairs, whole.pairs)
    np.testing.assert_array_equal(gathered.cell_ids, whole.cell_ids)
    assert gathered.condition == "Tumor"
    save_module_attention(tmp_path / "again.npz", load_module_attention(paths[0]))
    assert (tmp_path / "again.npz").read_bytes() == paths[0].read_bytes()

    other = module_attention(cells, model, gene_tokens, gene_modules, condition="NAT")
    save_module_attention(tmp_path / "nat.npz", other)
    with pytest.raises(InputError, match="condition 'NAT' differs"):
        gather_module_attention([paths[0], tmp_path / "nat.npz"])
    with pytest.raises(InputError, match="file not found"):
        load_module_attention(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", modules=np.array([1]))
    with pytest.raises(InputError, match="missing module_sizes"):
        load_module_attention(tmp_path / "bad.npz")


def test_read_module_labels(tmp_path):
    path = tmp_path / "modules.tsv"
    path.write_text("gene\tgene_id\tmodule\nA\tE1\t2\nB\tE2\t0\n")
    gene_ids, modules = read_module_labels(path)
    assert gene_ids.tolist() == ["E1", "E2"] and modules.tolist() == [2, 0]
    path.write_text("gene\tgene_id\tmodule\nA\tE1\t2\nB\tE1\t0\n")
    with pytest.raises(InputError, match="more than once"):
        read_module_labels(path)
    path.write_text("gene\tgene_id\tmodule\nA\tE1\t1.5\n")
    with pytest.raises(InputError, match="not a non-negative integer"):
        read_module_labels(path)
    path.write_text("gene\tmodule\nA\t1\n")
    with pytest.raises(InputError, match="no column gene_id"):
        read_module_labels(path)


@pytest.fixture
def study(tmp_path):
    """A synthetic two-condition study with its networks and modules: every input of
    `module-attention` and `differential`."""
    cells = make_cells(11, 60, 25)
    model = make_model(12)
    save_tokens(tmp_path / "tokens.npz", cells)
    save_study_model(tmp_path / "model.npz", model)
    labels = np.where(np.arange(60) % 3 == 0, "NAT", "Tumor")
    obs = pd.DataFrame({"source": pd.Categorical(labels)}, index=cells.cell_ids)
    ad.AnnData(np.zeros((60, 1), dtype=np.float32), obs=obs).write_h5ad(tmp_path / "qc.h5ad")
    universe = np.arange(VOCAB)
    for role, label in (("case", "Tumor"), ("control", "NAT")):
        sums = aggregate_attention(
            subset_cells(cells, np.flatnonzero(labels == label)), model, universe, condition=label
        )
        network = build_network(sums, min_cells=2, top_k=4, symmetric=True)
        save_network(tmp_path / f"{role}.npz", network)
    gmt = tmp_path / "sets.gmt"
    gmt.write_text("SET\tdesc\tG1\tG2\tG3\n")
    args = ["modules", "--case", str(tmp_path / "case.npz")]
    args += ["--control", str(tmp_path / "control.npz"), "--detect-on", "pooled"]
    args += ["--min-size", "3", "--gmt", str(gmt), "--out-modules", str(tmp_path / "modules.tsv")]
    args += ["--out-enrichment", str(tmp_path / "enrichment.tsv")]
    assert main([*args, "--out-graphml", str(tmp_path / "plain.graphml")]) == 0
    assert not (tmp_path / "differential.tsv").exists()
    return tmp_path, labels


def _module_attention_args(root, condition, out, *extra):
    return [
        "module-attention", str(root / "tokens.npz"), "--model", str(root / "model.npz"),
        "--obs", str(root / "qc.h5ad"), "--condition-column", "source",
        "--condition", condition, "--modules", str(root / "modules.tsv"),
        "--out", str(out), *extra,
    ]  # fmt: skip


def _differential_args(root, case, control, out, *extra):
    return [
        "differential", "--case-cells", *map(str, case), "--control-cells", *map(str, control),
        "--permutations", "99", "--seed", "0", "--out", str(out), *extra,
    ]  # fmt: skip


def test_cli_end_to_end(study, capsys):
    root, labels = study
    shards = {}
    for condition in ("Tumor", "NAT"):
        whole = root / f"{condition}.npz"
        assert main(_module_attention_args(root, condition, whole)) == 0, capsys.readouterr().err
        shards[condition] = [root / f"{condition}.{i}.npz" for i in range(2)]
        for i, path in enumerate(shards[condition]):
            extra = ("--shard", str(i), "--n-shards", "2", "--threads", "2")
            assert main(_module_attention_args(root, condition, path, *extra)) == 0
        gathered = gather_module_attention(shards[condition])
        np.testing.assert_array_equal(gathered.sums, load_module_attention(whole).sums)
        assert gathered.n_cells == (labels == condition).sum()

    graph_args = ["--modules", str(root / "modules.tsv"), "--case", str(root / "case.npz")]
    graph_args += ["--control", str(root / "control.npz"), "--detect-on", "pooled"]
    for run in ("a", "b"):
        out = root / run
        args = _differential_args(root, shards["Tumor"], shards["NAT"], out / "differential.tsv")
        assert main([*args, *graph_args, "--out-graphml", str(out / "modules.graphml")]) == 0
    for name in ("differential.tsv", "modules.graphml"):
        assert (root / "a" / name).read_bytes() == (root / "b" / name).read_bytes()
    table = pd.read_csv(root / "a" / "differential.tsv", sep="\t")
    assert list(table.columns) == list(DIFFERENTIAL_COLUMNS)
    assert (table["test"] == "cells").all() and len(table) >= 2
    modules = pd.read_csv(root / "modules.tsv", sep="\t")
    sizes = modules.loc[modules["module"] > 0, "module"].value_counts().sort_index()
    assert table["size"].tolist() == sizes.tolist()

    # the GraphML is the modules command's, with this table's results as module attributes
    graph = nx.read_graphml(root / "a" / "modules.graphml")
    plain = nx.read_graphml(root / "plain.graphml")
    assert sorted(graph.edges) == sorted(plain.edges)
    by_module = table.set_index("module")
    for node, attrs in graph.nodes(data=True):
        shared = {k: v for k, v in attrs.items() if not k.startswith("module_")}
        assert shared == plain.nodes[node]
        if attrs["module"] > 0 and np.isfinite(by_module.loc[attrs["module"], "p_value"]):
            assert attrs["module_p_value"] == pytest.approx(
                by_module.loc[attrs["module"], "p_value"]
            )


def test_cli_bad_input_exits_2_without_output(study, capsys):
    root, _ = study
    tumor, nat = root / "Tumor.npz", root / "NAT.npz"
    assert main(_module_attention_args(root, "Tumor", tumor)) == 0
    assert main(_module_attention_args(root, "NAT", nat)) == 0
    out = root / "out" / "differential.tsv"
    cases = [
        (_differential_args(root, [tumor], [nat], out, "--out-graphml", "g.graphml"), "needs"),
        (_differential_args(root, [tumor], [root / "missing.npz"], out), "file not found"),
        (_differential_args(root, [tumor], [nat], out, "--permutations", "0"), "at least 1"),
        (_module_attention_args(root, "Blood", root / "out" / "x.npz"), "labels: NAT, Tumor"),
    ]
    other = root / "other_modules.tsv"
    other.write_text("gene\tgene_id\tmodule\nX\tNOT_A_GENE\t1\n")
    bad_modules = _module_attention_args(root, "Tumor", root / "out" / "x.npz")
    bad_modules[bad_modules.index("--modules") + 1] = str(other)
    cases.append((bad_modules, "not tokens of"))
    # modules of the pooled network, GraphML asked for on the case network
    graph = ["--modules", str(root / "modules.tsv"), "--case", str(root / "case.npz")]
    graph += ["--control", str(root / "control.npz"), "--out-graphml", str(root / "out" / "g")]
    cases.append((_differential_args(root, [tumor], [nat], out, *graph), "hub ranks"))
    for args, message in cases:
        capsys.readouterr()
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert not (root / "out").exists() or list((root / "out").iterdir()) == []

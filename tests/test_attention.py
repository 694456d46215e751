"""The attention stage: fused kernel against numpy, universe, shards and the CLI."""

from __future__ import annotations

import logging
from itertools import pairwise

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from geneattn import _kernels
from geneattn.attention import aggregate_attention
from geneattn.attention_sums import (
    check_attention_sums,
    gather_attention_sums,
    load_attention_sums,
    save_attention_sums,
)
from geneattn.cli import main
from geneattn.errors import InputError
from geneattn.models.study import StudyModel, save_study_model
from geneattn.shards import Shard, n_shards_for, shard_bounds
from geneattn.testing import toy
from geneattn.tokenize import TokenizedCells, save_tokens, subset_cells
from geneattn.universe import (
    choose_universe,
    highly_variable_universe,
    load_universe,
    symbols_for,
)

VOCAB = 40


def make_cells(seed: int, n_cells: int, max_len: int, vocab: int = VOCAB) -> TokenizedCells:
    """Cells of 1..max_len distinct tokens, frequent tokens more likely."""
    return toy.cells(seed, n_cells, max_len, vocab=vocab)


def make_model(seed: int, d: int = 8, n_heads: int = 2, vocab: int = VOCAB) -> StudyModel:
    return toy.study_model(seed, d=d, n_heads=n_heads, vocab=vocab)


def numpy_sums(
    cells: TokenizedCells, model: StudyModel, universe: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell numpy attention, np.add.at into the G x G sums."""
    g = len(universe)
    index = np.full(model.gene_embeddings.shape[0], -1)
    index[universe] = np.arange(g)
    sums, incoming = np.zeros((g, g)), np.zeros(g)
    d, h = model.d_model, model.n_heads
    dh = d // h
    for c in range(cells.n_cells):
        toks = cells.cell(c)
        x = model.gene_embeddings[toks]
        q, k = x @ model.w_q, x @ model.w_k
        a = np.zeros((len(toks), len(toks)))
        for hh in range(h):
            s = q[:, hh * dh : (hh + 1) * dh] @ k[:, hh * dh : (hh + 1) * dh].T / np.sqrt(dh)
            e = np.exp(s - s.max(axis=1, keepdims=True))
            a += e / (e.sum(axis=1, keepdims=True) + 1e-30) / h
        u = index[toks]
        keep = u >= 0
        np.add.at(sums, (u[keep][:, None], u[keep][None, :]), a[np.ix_(keep, keep)])
        np.add.at(incoming, u[keep], a[:, keep].sum(axis=0))
    return sums, incoming


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    n_cells=st.integers(1, 12),
    max_len=st.integers(1, 30),
    heads=st.sampled_from([(4, 1), (8, 2), (8, 4), (6, 3)]),
    keep=st.floats(0.0, 1.0),
    f32=st.booleans(),
)
def test_kernel_matches_numpy(seed, n_cells, max_len, heads, keep, f32):
    d, n_heads = heads
    cells = make_cells(seed, n_cells, max_len)
    model = make_model(seed + 1, d, n_heads)
    rng = np.random.default_rng(seed + 2)
    universe = rng.permutation(VOCAB)[: max(1, int(keep * VOCAB))]
    want_sums, want_in = numpy_sums(cells, model, universe)
    dtype = np.float32 if f32 else np.float64
    index = np.full(VOCAB, -1, dtype=np.int64)
    index[universe] = np.arange(len(universe))
    sums, incoming = _kernels.mha_aggregate_cells(
        cells.tokens,
        cells.offsets,
        model.gene_embeddings.astype(dtype),
        model.w_q.astype(dtype),
        model.w_k.astype(dtype),
        n_heads,
        index,
        len(universe),
        n_threads=2,
    )
    tol = 1e-4 if f32 else 1e-11
    np.testing.assert_allclose(sums, want_sums, rtol=tol, atol=tol)
    np.testing.assert_allclose(incoming, want_in, rtol=tol, atol=tol)


def test_single_token_cells_attend_to_themselves():
    cells = make_cells(0, 5, 1)
    model = make_model(1)
    universe = np.arange(VOCAB)
    result = aggregate_attention(cells, model, universe, condition="x")
    seen = np.bincount(cells.tokens, minlength=VOCAB).astype(float)
    np.testing.assert_allclose(np.diagonal(result.sums), seen, rtol=1e-12)
    np.testing.assert_allclose(result.incoming, seen, rtol=1e-12)
    assert result.sums.sum() == pytest.approx(5.0)


def test_bit_identical_for_any_threads_and_chunking():
    cells = make_cells(3, 60, 35)
    model = make_model(4, 8, 4)
    universe = choose_universe(cells, min_cells=2, max_genes=25)
    runs = [
        aggregate_attention(cells, model, universe, n_threads=t, chunks=c)
        for t, c in ((1, 1), (2, 1), (3, 7), (2, 60))
    ]
    for r in runs[1:]:
        assert np.array_equal(r.sums, runs[0].sums)
        assert np.array_equal(r.incoming, runs[0].incoming)


def test_aggregate_counts_and_contract():
    cells = make_cells(5, 30, 20)
    model = make_model(6)
    universe = choose_universe(cells, min_cells=3, max_genes=15)
    result = check_attention_sums(aggregate_attention(cells, model, universe, condition="c"))
    present = np.zeros((cells.n_cells, len(universe)), dtype=np.int64)
    for c in range(cells.n_cells):
        present[c] = np.isin(universe, cells.cell(c))
    np.testing.assert_array_equal(result.counts, present.T @ present)
    np.testing.assert_array_equal(result.gene_cells, present.sum(axis=0))
    np.testing.assert_array_equal(result.gene_ids, cells.vocabulary[universe])
    assert result.n_cells == 30 and result.condition == "c"
    want, want_in = numpy_sums(cells, model, universe)
    np.testing.assert_allclose(result.sums, want, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(result.incoming, want_in, rtol=1e-11, atol=1e-12)


def test_shards_gather_to_the_whole(tmp_path):
    cells = make_cells(7, 41, 25)
    model = make_model(8)
    universe = choose_universe(cells, min_cells=2, max_genes=30)
    whole = aggregate_attention(cells, model, universe, condition="c")
    paths = []
    for i in range(3):
        start, stop = shard_bounds(cells.n_cells, i, 3)
        part = subset_cells(cells, np.arange(start, stop))
        paths.append(tmp_path / f"s{i}.npz")
        save_attention_sums(paths[-1], aggregate_attention(part, model, universe, condition="c"))
    gathered = gather_attention_sums(paths)
    np.testing.assert_allclose(gathered.sums, whole.sums, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(gathered.incoming, whole.incoming, rtol=1e-13)
    np.testing.assert_array_equal(gathered.counts, whole.counts)
    assert gathered.n_cells == whole.n_cells


def test_shard_bounds_cover_without_overlap():
    for n, k in ((0, 1), (10, 3), (3, 5), (100, 7)):
        bounds = [shard_bounds(n, i, k) for i in range(k)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in pairwise(bounds))
    with pytest.raises(InputError):
        shard_bounds(10, 3, 3)


@pytest.mark.parametrize(("n", "size"), [(0, 5), (1, 5), (10, 5), (11, 5), (99, 7)])
def test_fixed_size_shards_cover_without_overlap(n, size):
    n_shards = n_shards_for(n, size)
    # the rule files count shards as max(1, ceil(n / size)) (workflow/rules/common.smk)
    assert n_shards == max(1, -(-n // size))
    bounds = [Shard(i, cells_per_shard=size).bounds(n) for i in range(n_shards)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in pairwise(bounds))
    assert all(0 <= b - a <= size for a, b in bounds)
    with pytest.raises(InputError, match="does not exist"):
        Shard(n_shards, cells_per_shard=size).bounds(n)


def test_subset_cells_keeps_tokens():
    cells = make_cells(9, 10, 8)
    sub = subset_cells(cells, np.array([7, 2, 2]))
    for i, c in enumerate([7, 2, 2]):
        np.testing.assert_array_equal(sub.cell(i), cells.cell(c))
    assert sub.cell_ids.tolist() == ["cell7", "cell2", "cell2"]


def test_choose_universe_frequency_then_token_id():
    tokens = [[5, 1, 2], [2, 5], [5, 3, 2], [1, 3], [7]]
    cells = TokenizedCells(
        tokens=np.concatenate(tokens).astype(np.int32),
        offsets=np.concatenate([[0], np.cumsum([len(t) for t in tokens])]).astype(np.int64),
        cell_ids=np.arange(5).astype(str),
        vocabulary=np.arange(8).astype(str),
    )
    # frequencies: 2 -> 3, 5 -> 3, 1 -> 2, 3 -> 2, 7 -> 1
    np.testing.assert_array_equal(
        choose_universe(cells, min_cells=1, max_genes=10), [2, 5, 1, 3, 7]
    )
    np.testing.assert_array_equal(choose_universe(cells, min_cells=2, max_genes=3), [2, 5, 1])
    with pytest.raises(InputError, match="at least 4"):
        choose_universe(cells, min_cells=4, max_genes=3)


def test_symbols_prefer_study_names_then_alphabetical():
    name_map = {"B": "E1", "A": "E1", "C": "E2", "Z": "E3", "Y": "E3"}
    got = symbols_for(np.array(["E1", "E2", "E3", "E4"]), name_map, preferred={"Z"})
    assert got.tolist() == ["A", "C", "Z", ""]


def test_kernel_refuses_bad_input():
    cells = make_cells(0, 3, 5)
    model = make_model(0)
    index = np.full(VOCAB, -1, dtype=np.int64)
    index[:4] = np.arange(4)
    args = [cells.tokens, cells.offsets, model.gene_embeddings, model.w_q, model.w_k, 2]
    with pytest.raises(TypeError, match="universe"):
        _kernels.mha_aggregate_cells(*args, index.astype(np.float64), 4)
    with pytest.raises(ValueError, match="universe"):
        _kernels.mha_aggregate_cells(*args, index, 3)
    with pytest.raises(ValueError, match="one entry per table row"):
        _kernels.mha_aggregate_cells(*args, index[:-1], 4)
    bad_offsets = cells.offsets.copy()
    bad_offsets[-1] += 1
    with pytest.raises(ValueError, match="offsets"):
        _kernels.mha_aggregate_cells(cells.tokens, bad_offsets, *args[2:], index, 4)
    with pytest.raises(TypeError, match="w_q"):
        _kernels.mha_aggregate_cells(
            cells.tokens,
            cells.offsets,
            model.gene_embeddings,
            model.w_q.astype(np.float32),
            model.w_k,
            2,
            index,
            4,
        )
    with pytest.raises(ValueError, match="n_heads"):
        _kernels.mha_aggregate_cells(*args[:5], 9, index, 4)
    with pytest.raises(ValueError, match="shape"):
        _kernels.mha_aggregate_cells(*args, index, 4, sums=np.zeros((3, 3)), incoming=np.zeros(3))
    with pytest.raises(TypeError, match="sums"):
        _kernels.mha_aggregate_cells(
            *args, index, 4, sums=np.zeros((4, 4), np.float32), incoming=np.zeros(4)
        )


@pytest.fixture
def study(tmp_path):
    """Tokens, model, obs h5ad and gene-name map of 50 synthetic cells in two conditions."""
    cells = make_cells(11, 50, 25)
    save_tokens(tmp_path / "tokens.npz", cells)
    save_study_model(tmp_path / "model.npz", make_model(12))
    labels = np.where(np.arange(50) % 3 == 0, "NAT", "Tumor")
    obs = pd.DataFrame({"source": pd.Categorical(labels)}, index=cells.cell_ids[::-1])
    obs["source"] = pd.Categorical(labels[::-1])
    adata = ad.AnnData(np.zeros((50, 2), dtype=np.float32), obs=obs)
    adata.var_names = ["SYM1", "SYM0"]
    adata.write_h5ad(tmp_path / "qc.h5ad")
    names = "symbol\tgene_id\nSYM0\tENSG00000000000\nSYM1\tENSG00000000001\n"
    (tmp_path / "names.tsv").write_text(names)
    return tmp_path, cells, labels


def _cli(root, *extra):
    return [
        "attention", str(root / "tokens.npz"), "--model", str(root / "model.npz"),
        "--obs", str(root / "qc.h5ad"), "--condition-column", "source",
        "--gene-names", str(root / "names.tsv"), "--min-cells", "5", "--max-genes", "20",
        *extra,
    ]  # fmt: skip


def test_universe_table_is_what_the_attention_stage_would_choose(study, capsys):
    root, cells, _ = study
    table = root / "universe.tsv"
    args = ["universe", str(root / "tokens.npz"), "--obs", str(root / "qc.h5ad")]
    args += ["--gene-names", str(root / "names.tsv"), "--min-cells", "5", "--max-genes", "20"]
    assert main([*args, "--out", str(table)]) == 0, capsys.readouterr().err
    tokens, symbols = load_universe(table, cells.vocabulary)
    np.testing.assert_array_equal(tokens, choose_universe(cells, min_cells=5, max_genes=20))
    assert symbols[:2].tolist() == ["SYM0", "SYM1"]
    chosen, from_table = root / "chosen.npz", root / "from_table.npz"
    assert main([*_cli(root, "--condition", "NAT", "--out", str(chosen))]) == 0
    args = _cli(root, "--condition", "NAT", "--universe-table", str(table))
    assert main([*args, "--out", str(from_table)]) == 0
    a, b = load_attention_sums(chosen), load_attention_sums(from_table)
    np.testing.assert_array_equal(a.sums, b.sums)
    np.testing.assert_array_equal(a.gene_ids, b.gene_ids)
    # a table of other tokens is refused, naming it
    other = cells.vocabulary.copy()
    other[tokens[0]] = "ENSG99999999999"
    with pytest.raises(InputError, match=r"universe\.tsv"):
        load_universe(table, other)


def test_cli_writes_sums_and_shards_gather(study, capsys, caplog):
    caplog.set_level(logging.INFO)
    root, cells, labels = study
    whole = root / "Tumor.npz"
    assert main([*_cli(root, "--condition", "Tumor", "--out", str(whole))]) == 0, (
        capsys.readouterr().err
    )
    got = load_attention_sums(whole)
    tumor = np.flatnonzero(labels == "Tumor")
    universe = choose_universe(cells, min_cells=5, max_genes=20)
    want = aggregate_attention(subset_cells(cells, tumor), make_model(12), universe)
    np.testing.assert_array_equal(got.sums, want.sums)
    np.testing.assert_array_equal(got.counts, want.counts)
    assert got.n_cells == len(tumor) and got.condition == "Tumor"
    assert got.gene_symbols[:2].tolist() == ["SYM0", "SYM1"]
    assert any("100%" in r.getMessage() for r in caplog.records)

    shards = [root / f"Tumor.{i}.npz" for i in range(2)]
    for i, path in enumerate(shards):
        args = _cli(root, "--condition", "Tumor", "--shard", str(i), "--n-shards", "2")
        assert main([*args, "--threads", "2", "--out", str(path)]) == 0
    gathered = gather_attention_sums(shards)
    np.testing.assert_allclose(gathered.sums, got.sums, rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(gathered.gene_cells, got.gene_cells)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--condition": "Blood"}, "labels: NAT, Tumor"),
        ({"--model": "missing.npz"}, "file not found"),
        ({"--obs": "missing.h5ad"}, "file not found"),
        ({"--condition-column": "patient"}, "no obs column"),
        ({"--shard": "2", "--n-shards": "2"}, "shard"),
    ],
)
def test_cli_bad_input_exits_2_without_output(study, capsys, change, message):
    root, _, _ = study
    args = _cli(root, "--condition", "Tumor", "--out", str(root / "out.npz"))
    for flag, value in change.items():
        value = str(root / value) if value.startswith("missing") else value
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (root / "out.npz").exists()


def test_variable_universe_prefers_dispersed_genes_among_frequent_tokens():
    rng = np.random.default_rng(3)
    n_cells, n_genes = 150, 400
    rates = np.exp(rng.uniform(np.log(0.5), np.log(30.0), n_genes))
    counts = rng.poisson(rates, (n_cells, n_genes)).astype(np.float64)
    markers = [3, 117, 231, 345]  # markers of a minor population: 20 cells, high expression
    counts[:, markers] = rng.poisson(rates[markers] / 10, (n_cells, len(markers)))
    counts[:20, markers] += rng.poisson(60.0, (20, len(markers)))
    counts[:, 9] = 0
    counts[:4, 9] = 200  # as dispersed, but present in 4 cells only
    # tokens: gene g is token 500 - g; the last gene has no token (unmapped column)
    gene_ids = np.array([f"E{500 - g}" for g in range(n_genes - 1)] + [""], dtype=object)
    vocabulary = np.array([f"E{t}" for t in range(501)])
    per_cell = [
        np.array([500 - g for g in np.flatnonzero(row[:-1] > 0)], dtype=np.int32) for row in counts
    ]
    cells = TokenizedCells(
        tokens=np.concatenate(per_cell),
        offsets=np.concatenate([[0], np.cumsum([len(t) for t in per_cell])]).astype(np.int64),
        cell_ids=np.arange(n_cells).astype(str),
        vocabulary=vocabulary,
    )
    got = highly_variable_universe(
        cells, sp.csr_matrix(counts), gene_ids, min_cells=10, max_genes=8
    )
    assert set(500 - np.array(markers)) <= set(got.tolist())
    assert 500 - 9 not in got and len(got) == 8
    again = highly_variable_universe(
        cells, sp.csr_matrix(counts), gene_ids, min_cells=10, max_genes=8
    )
    np.testing.assert_array_equal(got, again)
    with pytest.raises(InputError, match="at least 500"):
        highly_variable_universe(cells, counts, gene_ids, min_cells=500, max_genes=5)

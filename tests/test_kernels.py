"""The Rust attention kernels against the plain-numpy references, and their input checks."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from geneattn import _kernels
from geneattn.testing import reference as ref

DTYPES = (np.float32, np.float64)


def _rand(rng: np.random.Generator, shape: tuple[int, ...], scale: float, dtype) -> np.ndarray:
    return (rng.normal(size=shape) * scale).astype(dtype)


# --- Gaussian attention ---------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(1, 40),
    m=st.integers(1, 40),
    d=st.integers(1, 12),
    dv=st.integers(1, 6),
    log_sigma=st.floats(-2, 2),
    log_scale=st.floats(-3, 2),
    offset=st.floats(-100, 100),
    f32=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_gaussian_matches_reference(n, m, d, dv, log_sigma, log_scale, offset, f32, seed):
    dtype = np.float32 if f32 else np.float64
    rng = np.random.default_rng(seed)
    sigma, scale = 10.0**log_sigma, 10.0**log_scale
    # a shared offset moves every vector away from the origin; distances do not change
    q = _rand(rng, (n, d), scale, dtype) + dtype(offset)
    k = _rand(rng, (m, d), scale, dtype) + dtype(offset)
    v = _rand(rng, (m, dv), 1.0, dtype)
    out, w = _kernels.gaussian_attention(q, k, v, sigma, return_weights=True, n_threads=2)
    assert out.dtype == dtype and w.dtype == dtype
    assert out.shape == (n, dv) and w.shape == (n, m)
    assert np.isfinite(out).all() and np.isfinite(w).all()
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=0, atol=1e-5 if f32 else 1e-12)
    q64, k64, v64 = (a.astype(np.float64) for a in (q, k, v))
    w_ref = ref.gaussian_weights(q64, k64, sigma, exact=True)
    # error of a log-weight ~ eps * (|q - mean k|^2 + |k - mean k|^2) / (2 sigma^2)
    spread = max(np.abs(q64 - k64.mean(0)).max(), np.abs(k64 - k64.mean(0)).max())
    tol = 50 * np.finfo(dtype).eps * (1.0 + d * spread**2 / (2 * sigma**2))
    if tol < 0.05:  # beyond that the dtype cannot resolve the weights at all
        np.testing.assert_allclose(w, w_ref, rtol=0, atol=tol)
        np.testing.assert_allclose(out, w_ref @ v64, rtol=0, atol=tol * np.abs(v64).sum(0).max())
    weights_only = _kernels.gaussian_weights(q, k, sigma)
    np.testing.assert_array_equal(weights_only, w)
    np.testing.assert_array_equal(_kernels.gaussian_attention(q, k, v, sigma), out)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gaussian_extreme_distances_stay_finite(dtype):
    rng = np.random.default_rng(0)
    q = _rand(rng, (30, 8), 1e3, dtype)
    k = _rand(rng, (20, 8), 1e3, dtype)
    v = _rand(rng, (20, 3), 1e3, dtype)
    out, w = _kernels.gaussian_attention(q, k, v, 1e-3, return_weights=True)
    assert np.isfinite(out).all() and np.isfinite(w).all()
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-6)
    # each query attends (essentially) only to its nearest key
    nearest = ref.squared_distances(q.astype(float), k.astype(float), exact=True).argmin(1)
    np.testing.assert_array_equal(w.argmax(axis=1), nearest)
    # and a huge bandwidth gives uniform weights
    w_flat = _kernels.gaussian_weights(q, k, 1e9)
    np.testing.assert_allclose(w_flat, 1.0 / 20, rtol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gaussian_thread_count_does_not_change_results(dtype):
    rng = np.random.default_rng(1)
    q, k, v = (_rand(rng, (150, 16), 1.0, dtype) for _ in range(3))
    one = _kernels.gaussian_attention(q, k, v, 0.8, return_weights=True, n_threads=1)
    two = _kernels.gaussian_attention(q, k, v, 0.8, return_weights=True, n_threads=2)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])


# --- multi-head attention -------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(1, 40),
    d=st.integers(1, 16),
    n_heads=st.integers(1, 16),
    log_scale=st.floats(-2, 0.7),
    f32=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_multi_head_matches_reference(n, d, n_heads, log_scale, f32, seed):
    n_heads = min(n_heads, d)
    dtype = np.float32 if f32 else np.float64
    rng = np.random.default_rng(seed)
    scale = 10.0**log_scale
    x = _rand(rng, (n, d), scale, dtype)
    w_q, w_k, w_v = (_rand(rng, (d, d), scale, dtype) for _ in range(3))
    heads, w = _kernels.multi_head_attention(
        x, w_q, w_k, w_v, n_heads, return_weights=True, n_threads=2
    )
    assert heads.dtype == dtype and heads.shape == (n, d) and w.shape == (n, n)
    heads_ref, w_ref = ref.multi_head_attention(
        *(a.astype(np.float64) for a in (x, w_q, w_k, w_v)), n_heads
    )
    # score error ~ eps * |x|^2 |w|^2 * d; weights are relative to that
    score_mag = (np.abs(x).max() * np.abs(w_q).max() * d) ** 2 / np.sqrt(d // n_heads) + 1
    tol = 50 * np.finfo(dtype).eps * score_mag
    np.testing.assert_allclose(w, w_ref, rtol=0, atol=tol)
    v_mag = np.abs(x.astype(float) @ w_v.astype(float)).max() + 1e-300
    np.testing.assert_allclose(heads, heads_ref, rtol=0, atol=tol * v_mag * 4)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-5 if f32 else 1e-12)
    np.testing.assert_array_equal(_kernels.multi_head_weights(x, w_q, w_k, n_heads), w)
    np.testing.assert_array_equal(_kernels.multi_head_attention(x, w_q, w_k, w_v, n_heads), heads)


@pytest.mark.parametrize("dtype", DTYPES)
def test_multi_head_extreme_scores_and_threads(dtype):
    rng = np.random.default_rng(2)
    x = _rand(rng, (100, 8), 1e3, dtype)
    w = _rand(rng, (8, 8), 1.0, dtype)
    one = _kernels.multi_head_attention(x, w, w, w, 2, return_weights=True, n_threads=1)
    two = _kernels.multi_head_attention(x, w, w, w, 2, return_weights=True, n_threads=2)
    assert np.isfinite(one[0]).all() and np.isfinite(one[1]).all()
    np.testing.assert_allclose(one[1].sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])


def test_multi_head_uneven_heads_leave_trailing_columns_zero():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 7))
    w_q, w_k, w_v = (rng.normal(size=(7, 7)) for _ in range(3))
    heads = _kernels.multi_head_attention(x, w_q, w_k, w_v, 3)
    assert np.all(heads[:, 6] == 0.0)
    np.testing.assert_allclose(heads, ref.multi_head_attention(x, w_q, w_k, w_v, 3)[0], atol=1e-14)


# --- batched cells --------------------------------------------------------------------


def _ragged(rng: np.random.Generator, n_cells: int, vocab: int, max_len: int):
    lens = rng.integers(0, max_len + 1, n_cells)
    lens[0] = 0  # always one empty cell
    cells = [rng.choice(vocab, size=min(n, vocab), replace=False) for n in lens]
    offsets = np.concatenate([[0], np.cumsum([c.size for c in cells])]).astype(np.int64)
    tokens = np.concatenate(cells).astype(np.int64)
    return cells, tokens, offsets


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    d=st.integers(1, 10),
    rank_scale=st.booleans(),
    int32=st.booleans(),
)
def test_gaussian_cells_equal_per_cell_reference(seed, d, rank_scale, int32):
    rng = np.random.default_rng(seed)
    vocab = 30
    cells, tokens, offsets = _ragged(rng, 7, vocab, 40)
    table = rng.normal(size=(vocab, d))
    w_q, w_k = rng.normal(size=(d, 5)), rng.normal(size=(d, 5))
    w_v = rng.normal(size=(d, 3))
    toks = tokens.astype(np.int32) if int32 else tokens
    got = _kernels.gaussian_encode_cells(
        toks, offsets, table, w_q, w_k, w_v, 1.3, rank_scale=rank_scale, n_threads=2
    )
    assert got.shape == (7, 3)
    for c, ids in enumerate(cells):
        if ids.size == 0:
            assert np.all(got[c] == 0.0)
            continue
        t = table[ids]
        if rank_scale:
            t = t * (1.0 / (np.arange(ids.size) + 1.0))[:, None]
        want = ref.gaussian_attention(t @ w_q, t @ w_k, t @ w_v, 1.3, exact=True).mean(axis=0)
        np.testing.assert_allclose(got[c], want, rtol=1e-9, atol=1e-12)
    one = _kernels.gaussian_encode_cells(
        toks, offsets, table, w_q, w_k, w_v, 1.3, rank_scale=rank_scale, n_threads=1
    )
    np.testing.assert_array_equal(one, got)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), d=st.integers(1, 12), n_heads=st.integers(1, 4))
def test_mha_cells_equal_per_cell_reference(seed, d, n_heads):
    n_heads = min(n_heads, d)
    rng = np.random.default_rng(seed)
    vocab = 25
    cells, tokens, offsets = _ragged(rng, 6, vocab, 30)
    table = rng.normal(size=(vocab, d))
    w_q, w_k, w_v = (rng.normal(size=(d, d)) for _ in range(3))
    got = _kernels.mha_encode_cells(tokens, offsets, table, w_q, w_k, w_v, n_heads, n_threads=2)
    for c, ids in enumerate(cells):
        if ids.size == 0:
            assert np.all(got[c] == 0.0)
            continue
        heads, _ = ref.multi_head_attention(table[ids], w_q, w_k, w_v, n_heads)
        np.testing.assert_allclose(got[c], heads.mean(axis=0), rtol=1e-9, atol=1e-12)
    one = _kernels.mha_encode_cells(tokens, offsets, table, w_q, w_k, w_v, n_heads, n_threads=1)
    np.testing.assert_array_equal(one, got)


def test_cells_f32():
    rng = np.random.default_rng(4)
    _, tokens, offsets = _ragged(rng, 5, 20, 15)
    table = rng.normal(size=(20, 8)).astype(np.float32)
    w = rng.normal(size=(8, 8)).astype(np.float32)
    g32 = _kernels.gaussian_encode_cells(tokens, offsets, table, w, w, w, 2.0, rank_scale=True)
    g64 = _kernels.gaussian_encode_cells(
        tokens, offsets, table.astype(float), *(w.astype(float),) * 3, 2.0, rank_scale=True
    )
    assert g32.dtype == np.float32
    np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-5)
    m32 = _kernels.mha_encode_cells(tokens, offsets, table, w, w, w, 2)
    m64 = _kernels.mha_encode_cells(
        tokens, offsets, table.astype(float), *(w.astype(float),) * 3, 2
    )
    assert m32.dtype == np.float32
    np.testing.assert_allclose(m32, m64, rtol=1e-4, atol=1e-5)


def _edits(offsets: np.ndarray) -> tuple[np.ndarray, ...]:
    """One delete of position 0 and one add of token 3 in every cell with a token."""
    cells = np.flatnonzero(np.diff(offsets) > 0).astype(np.int64)
    cell = np.repeat(cells, 2)
    remove = np.tile(np.array([0, -1], dtype=np.int64), cells.size)
    add = np.tile(np.array([-1, 3], dtype=np.int64), cells.size)
    exclude = np.tile(np.array([0, -1], dtype=np.int64), cells.size)
    return cell, remove, add, exclude


def test_edit_effects_take_either_dtype_and_check_their_edits():
    rng = np.random.default_rng(7)
    _, tokens, offsets = _ragged(rng, 5, 20, 12)
    table = rng.normal(size=(20, 8))
    w = [rng.normal(size=(8, 8)) for _ in range(3)]
    edits = _edits(offsets)
    prior = sp.random(20, 20, density=0.3, random_state=1, format="csr")
    genohoption = {
        "indptr": prior.indptr.astype(np.int64),
        "indices": prior.indices.astype(np.int64),
        "diffusion": "ppr",
        "alpha": 0.25,
        "t": 5.0,
        "iterations": 4,
    }
    kernels = {
        "dense": lambda *a, **kw: _kernels.mha_edit_effects(*a, **kw),
        "genohoption": lambda *a, **kw: _kernels.mha_genohoption_edit_effects(
            *a, genohoption, **kw
        ),
    }
    for name, kernel in kernels.items():
        o64, p64 = kernel(tokens, offsets, table, *w, 2, *edits, rank_values=True)
        o32, p32 = kernel(
            tokens.astype(np.int32), offsets, table.astype(np.float32),
            *(x.astype(np.float32) for x in w), 2, *edits, rank_values=True,
        )  # fmt: skip
        assert o32.dtype == p32.dtype == np.float32, name
        assert o64.shape == (edits[0].size, 8), name
        np.testing.assert_allclose(o32, o64, rtol=1e-4, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(p32, p64, rtol=1e-4, atol=1e-5, err_msg=name)
        # no edit_move with rank values is every edit's move -1
        moves = np.full(edits[0].size, -1, dtype=np.int64)
        o, p = kernel(tokens, offsets, table, *w, 2, *edits, rank_values=True, edit_move=moves)
        np.testing.assert_array_equal(o, o64)
        np.testing.assert_array_equal(p, p64)
        with pytest.raises(ValueError, match="edit_move needs rank_values=True"):
            kernel(tokens, offsets, table, *w, 2, *edits, edit_move=moves)
        bad = (edits[0], edits[1].astype(np.int32), *edits[2:])
        with pytest.raises(TypeError, match="edit_remove must be a 1-D numpy array of dtype int64"):
            kernel(tokens, offsets, table, *w, 2, *bad)
        with pytest.raises(TypeError, match=r"w_k must .* dtype float32 \(the dtype of table\)"):
            kernel(tokens, offsets, table.astype(np.float32), w[0].astype(np.float32), *w[1:], 2,
                   *edits)  # fmt: skip


def test_no_cells_gives_empty_result():
    table = np.ones((3, 4))
    w = np.eye(4)
    offsets = np.zeros(1, dtype=np.int64)
    tokens = np.empty(0, dtype=np.int64)
    out = _kernels.gaussian_encode_cells(tokens, offsets, table, w, w, w, 1.0, rank_scale=False)
    assert out.shape == (0, 4)
    assert _kernels.mha_encode_cells(tokens, offsets, table, w, w, w, 2).shape == (0, 4)


# --- prior-graph neighbour embeddings -------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), density=st.floats(0.0, 0.5))
def test_neighbour_embeddings_match_reference(seed, density):
    rng = np.random.default_rng(seed)
    n, d = 25, 6
    a = sp.random(
        n, n, density=density, random_state=rng, data_rvs=lambda k: rng.uniform(-0.2, 1, k)
    )
    a = sp.csr_matrix(a + a.T)
    emb = rng.normal(size=(n, d))
    genes = rng.choice(n, size=10, replace=False)
    want = ref.neighbour_embeddings(a, emb, genes)
    np.testing.assert_allclose(ref.neighbour_embeddings(a.toarray(), emb, genes), want, atol=1e-14)
    a.sort_indices()
    indptr = a.indptr.astype(np.int64)
    sub = a[genes]
    got = _kernels.neighbour_embeddings(
        sub.indptr.astype(np.int64),
        sub.indices.astype(np.int32),
        sub.data,
        emb,
        row_genes=genes.astype(np.int64),
        n_threads=2,
    )
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    table = _kernels.neighbour_embeddings(indptr, a.indices.astype(np.int32), a.data, emb)
    np.testing.assert_allclose(table[genes], want, rtol=1e-12, atol=1e-15)


# --- bad input: clear Python errors, never a panic ------------------------------------


def _qkv():
    rng = np.random.default_rng(5)
    return rng.normal(size=(4, 3)), rng.normal(size=(5, 3)), rng.normal(size=(5, 2))


def test_non_contiguous_input_is_refused():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="keys must be C-contiguous"):
        _kernels.gaussian_attention(q, np.asfortranarray(k), v, 1.0)
    wide = np.ones((5, 6))
    with pytest.raises(ValueError, match="values must be C-contiguous"):
        _kernels.gaussian_attention(q, k, wide[:, ::3], 1.0)
    x = np.ones((4, 8))[:, ::2]
    w = np.eye(4)
    with pytest.raises(ValueError, match="x must be C-contiguous"):
        _kernels.multi_head_attention(x, w, w, w, 2)


def test_wrong_dtype_or_ndim_is_refused():
    q, k, v = _qkv()
    with pytest.raises(TypeError, match="queries must be a 2-D numpy array of dtype float32 or"):
        _kernels.gaussian_attention(q.astype(np.int64), k, v, 1.0)
    with pytest.raises(TypeError, match=r"keys must .* dtype float32 \(the dtype of queries\)"):
        _kernels.gaussian_attention(q.astype(np.float32), k, v, 1.0)
    with pytest.raises(TypeError, match="values must be a 2-D numpy array"):
        _kernels.gaussian_attention(q, k, v.ravel(), 1.0)
    with pytest.raises(TypeError, match="queries must be a 2-D numpy array"):
        _kernels.gaussian_attention([[1.0, 2.0, 3.0]], k, v, 1.0)
    with pytest.raises(TypeError, match="tokens must be a 1-D numpy array of dtype int32 or int64"):
        _kernels.gaussian_encode_cells(
            np.zeros(2), np.array([0, 2]), k, np.eye(3), np.eye(3), np.eye(3), 1.0, rank_scale=True
        )
    with pytest.raises(TypeError, match="offsets must be a 1-D numpy array of dtype int64"):
        _kernels.mha_encode_cells(
            np.zeros(2, dtype=np.int64), np.array([0, 2], dtype=np.int32), k, *(np.eye(3),) * 3, 1
        )


def test_wrong_shapes_and_values_are_refused():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="same number of columns"):
        _kernels.gaussian_attention(q, k[:, :2].copy(), v, 1.0)
    with pytest.raises(ValueError, match="one row per key"):
        _kernels.gaussian_attention(q, k, v[:3].copy(), 1.0)
    with pytest.raises(ValueError, match="keys must have at least one row"):
        _kernels.gaussian_attention(q, k[:0].copy(), v[:0].copy(), 1.0)
    with pytest.raises(ValueError, match="sigma must be a positive finite number"):
        _kernels.gaussian_attention(q, k, v, -1.0)
    with pytest.raises(ValueError, match="sigma must be a positive finite number"):
        _kernels.gaussian_attention(q, k, v, float("nan"))
    bad = k.copy()
    bad[2, 1] = np.inf
    with pytest.raises(ValueError, match="keys has a non-finite value at row 2, column 1"):
        _kernels.gaussian_attention(q, bad, v, 1.0)
    with pytest.raises(ValueError, match="n_threads must be between 1 and"):
        _kernels.gaussian_attention(q, k, v, 1.0, n_threads=0)
    x = np.ones((3, 4))
    with pytest.raises(ValueError, match="n_heads must be between 1 and d = 4"):
        _kernels.multi_head_attention(x, np.eye(4), np.eye(4), np.eye(4), 5)
    with pytest.raises(ValueError, match="w_k must be 4 x 4"):
        _kernels.multi_head_attention(x, np.eye(4), np.eye(3), np.eye(4), 2)


def test_bad_ragged_cells_are_refused():
    table = np.ones((3, 4))
    w = np.eye(4)

    def run(tokens, offsets):
        return _kernels.gaussian_encode_cells(
            np.asarray(tokens, dtype=np.int64),
            np.asarray(offsets, dtype=np.int64),
            table,
            w,
            w,
            w,
            1.0,
            rank_scale=True,
        )

    with pytest.raises(ValueError, match=r"token 3 is outside the table's rows 0\.\.3"):
        run([0, 3], [0, 2])
    with pytest.raises(ValueError, match="token -1 is outside"):
        run([0, -1], [0, 2])
    with pytest.raises(ValueError, match="offsets end at 1 but there are 2 tokens"):
        run([0, 1], [0, 1])
    with pytest.raises(ValueError, match="offsets must be non-decreasing"):
        run([0, 1], [0, 2, 1, 2])
    with pytest.raises(ValueError, match="offsets must start at 0"):
        run([0, 1], [1, 2])
    with pytest.raises(ValueError, match="w_v must have one row per table column"):
        _kernels.gaussian_encode_cells(
            np.zeros(1, dtype=np.int64),
            np.array([0, 1]),
            table,
            w,
            w,
            np.eye(3),
            1.0,
            rank_scale=True,
        )


def test_bad_graph_is_refused():
    emb = np.ones((3, 2))
    with pytest.raises(ValueError, match=r"column index 7 is outside 0\.\.3"):
        _kernels.neighbour_embeddings(
            np.array([0, 1], dtype=np.int64), np.array([7], dtype=np.int32), np.ones(1), emb
        )
    with pytest.raises(TypeError, match="data must be a 1-D numpy array of dtype float64"):
        _kernels.neighbour_embeddings(
            np.array([0, 1], dtype=np.int64),
            np.array([1], dtype=np.int32),
            np.ones(1, dtype=np.float32),
            emb,
        )
    with pytest.raises(ValueError, match=r"row_genes entry 5 is outside 0\.\.3"):
        _kernels.neighbour_embeddings(
            np.array([0, 0], dtype=np.int64),
            np.empty(0, dtype=np.int32),
            np.empty(0),
            emb,
            row_genes=np.array([5], dtype=np.int64),
        )


def test_zero_queries_give_empty_results():
    k, v = np.ones((2, 3)), np.ones((2, 4))
    out, w = _kernels.gaussian_attention(np.zeros((0, 3)), k, v, 1.0, return_weights=True)
    assert out.shape == (0, 4) and w.shape == (0, 2)
    eye = np.eye(4)
    heads, w = _kernels.multi_head_attention(
        np.zeros((0, 4)), eye, eye, eye, 2, return_weights=True
    )
    assert heads.shape == (0, 4) and w.shape == (0, 0)


def test_stub_lists_every_kernel():
    import ast
    from pathlib import Path

    import geneattn

    stub = Path(geneattn.__file__).with_name("_kernels.pyi")
    tree = ast.parse(stub.read_text(encoding="utf-8"))
    typed = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    public = {n for n in dir(_kernels) if not n.startswith("_")}
    assert typed == public

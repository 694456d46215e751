"""The encoder's packed GEMM and fused attention against numpy, over shapes (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geneattn import _kernels
from geneattn.models.bert import BertEncoder
from geneattn.models.bert_weights import BertConfig, BertWeights

EPS32 = float(np.finfo(np.float32).eps)


def _attention64(q, k, v, n_heads: int, scale: float) -> np.ndarray:
    """Softmax attention per head in float64, straight from the formula."""
    n, d = q.shape
    dh = d // n_heads
    out = np.zeros((n, d))
    for h in range(n_heads):
        c = slice(h * dh, (h + 1) * dh)
        s = scale * (q[:, c].astype(np.float64) @ k[:, c].astype(np.float64).T)
        w = np.exp(s - s.max(axis=1, keepdims=True))
        out[:, c] = (w / w.sum(axis=1, keepdims=True)) @ v[:, c].astype(np.float64)
    return out


@settings(max_examples=60, deadline=None)
@given(
    m=st.integers(0, 300),
    k=st.integers(0, 600),
    n=st.integers(1, 70),
    bias=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_linear_matches_numpy(m, k, n, bias, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(m, k)).astype(np.float32)
    w = rng.normal(size=(n, k)).astype(np.float32)
    b = rng.normal(size=n).astype(np.float32) if bias else None
    got = _kernels.linear(x, w, b, n_threads=2)
    assert got.dtype == np.float32 and got.shape == (m, n)
    want = x.astype(np.float64) @ w.astype(np.float64).T
    if b is not None:
        want += b
    # a sum of k products of N(0, 1) values: rounding grows like sqrt(k) per term
    np.testing.assert_allclose(got, want, rtol=0, atol=8 * EPS32 * (k + 1) ** 1.5 + 1e-6)
    np.testing.assert_array_equal(_kernels.linear(x, w, b, n_threads=1), got)
    # every row is computed alone: a slice of rows gives the same bits
    if m > 7:
        np.testing.assert_array_equal(_kernels.linear(x[3:7], w, b), got[3:7])


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 200),
    m=st.integers(1, 300),
    n_heads=st.integers(1, 4),
    dh=st.integers(1, 70),
    log_scale=st.floats(-2, 1),
    seed=st.integers(0, 2**32 - 1),
)
def test_flash_attention_matches_numpy(n, m, n_heads, dh, log_scale, seed):
    rng = np.random.default_rng(seed)
    d = n_heads * dh
    q = rng.normal(size=(n, d)).astype(np.float32)
    k = rng.normal(size=(m, d)).astype(np.float32)
    v = rng.normal(size=(m, d)).astype(np.float32)
    scale = 10.0**log_scale
    got = _kernels.flash_attention(q, k, v, n_heads, scale=scale, n_threads=2)
    assert got.dtype == np.float32 and got.shape == (n, d)
    want = _attention64(q, k, v, n_heads, scale)
    # float32 scores are off by ~eps |score|, which moves a weight by that relative amount
    biggest = scale * np.abs(q).max() * np.abs(k).max() * dh
    tol = (1e-5 + 8 * EPS32 * biggest) * np.abs(v).max()
    np.testing.assert_allclose(got, want, rtol=0, atol=tol)
    np.testing.assert_array_equal(
        _kernels.flash_attention(q, k, v, n_heads, scale=scale, n_threads=1), got
    )
    # each query row depends only on itself, the keys and the values
    np.testing.assert_array_equal(
        _kernels.flash_attention(q[n // 2 :], k, v, n_heads, scale=scale), got[n // 2 :]
    )


def test_flash_attention_defaults_and_extremes():
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(70, 12)).astype(np.float32) for _ in range(3))
    np.testing.assert_allclose(
        _kernels.flash_attention(q, k, v, 3),
        _attention64(q, k, v, 3, 1 / np.sqrt(4)),
        rtol=0,
        atol=2e-6,
    )
    # scores in the thousands: one-hot rows, never NaN
    big = _kernels.flash_attention(q * 100, k * 100, v, 1, scale=1.0)
    assert np.isfinite(big).all()
    np.testing.assert_allclose(big, _attention64(q * 100, k * 100, v, 1, 1.0), atol=1e-5)
    # no keys: zero rows
    none = np.zeros((0, 12), dtype=np.float32)
    assert not _kernels.flash_attention(q, none, none, 3).any()


@pytest.mark.parametrize(
    ("dtype", "k_cols", "heads", "error", "match"),
    [
        (np.float64, 4, 2, TypeError, "queries must be a 2-D numpy array of dtype float32"),
        (np.float32, 5, 1, ValueError, "the same number of columns"),
        (np.float32, 4, 3, ValueError, "multiple of the number of heads 3"),
    ],
)
def test_flash_attention_refuses_bad_input(dtype, k_cols, heads, error, match):
    q = np.ones((2, 4), dtype)
    k = np.ones((3, k_cols), np.float32)
    with pytest.raises(error, match=match):
        _kernels.flash_attention(q, k, k, heads)


def test_flash_attention_refuses_non_finite_and_linear_shapes():
    x = np.ones((3, 4), np.float32)
    bad = x.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="keys has a non-finite value at row 1"):
        _kernels.flash_attention(x, bad, x, 2)
    with pytest.raises(ValueError, match="must have 4 columns like the input, got 5"):
        _kernels.linear(x, np.ones((2, 5), np.float32))
    with pytest.raises(ValueError, match="bias must have 2 entries"):
        _kernels.linear(x, np.ones((2, 4), np.float32), np.ones(3, np.float32))


def test_fused_and_exact_attention_give_the_same_layer():
    """A layer whose weights are returned runs the exact softmax; its output matches the
    fused attention that runs otherwise."""
    config = BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=300,
        hidden_act="gelu",
    )
    model = BertEncoder(config, BertWeights.random(config, seed=3), version="V1")
    rng = np.random.default_rng(4)
    lengths = [0, 1, 47, 130, 300]
    ids = np.concatenate([rng.integers(0, 50, n) for n in lengths]).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    fused = model.forward(ids, offsets, hidden_layers=[1, 2], n_threads=2)["hidden"]
    exact = model.forward(ids, offsets, hidden_layers=[1, 2], attention_layers=[0, 1], n_threads=2)[
        "hidden"
    ]
    for a, b in zip(fused, exact, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-5)

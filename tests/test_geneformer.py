"""GeneformerInterface: seed-000 contract, edge cases, weight assignment, batches."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp

from geneattn import GeneformerInterface, rank_value_encode
from geneattn.testing import reference as ref

RTOL = 1e-9


def _close(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=1e-15 * max(1.0, np.abs(b).max(initial=0)))


@pytest.fixture(scope="module")
def model() -> GeneformerInterface:
    m = GeneformerInterface(d_model=32, n_genes=80, n_heads=4, mask_ratio=0.15, seed=5)
    # larger weights than the N(0, 0.02) default, so attention is far from uniform
    m._w_q = m._w_q * 200
    m._w_k = m._w_k * 200
    return m


def _expr(seed: int, n: int = 80, lam: float = 2.0) -> np.ndarray:
    return np.random.default_rng(seed).poisson(lam, n).astype(np.float64)


def test_fields_and_defaults():
    names = [f.name for f in dataclasses.fields(GeneformerInterface)]
    assert names == ["d_model", "n_genes", "n_heads", "mask_ratio", "seed"]
    m = GeneformerInterface()
    assert (m.d_model, m.n_genes, m.n_heads, m.mask_ratio, m.seed, m.n_threads) == (
        256,
        2000,
        4,
        0.15,
        42,
        1,
    )


def test_initialisation_draws_in_seed_order():
    m = GeneformerInterface(d_model=8, n_genes=12, n_heads=2, seed=9)
    rng = np.random.default_rng(9)
    np.testing.assert_array_equal(m._gene_embeddings, rng.normal(0.0, 0.02, (12, 8)))
    for name in ("_w_q", "_w_k", "_w_v", "_w_o"):
        np.testing.assert_array_equal(getattr(m, name), rng.normal(0.0, 0.02, (8, 8)))
    np.testing.assert_array_equal(m._mlm_head, rng.normal(0.0, 0.02, (12, 8)))


def test_tokenise(model):
    e = _expr(0, 100)
    medians = np.random.default_rng(1).uniform(0.1, 5, 100)
    for med in (None, medians):
        t = model.tokenise(e, med)
        assert t.dtype == np.int64
        want = rank_value_encode(e, med)
        np.testing.assert_array_equal(t, want[want < 80])


def test_mask_tokens(model):
    tokens = np.arange(100, 141, dtype=np.int64)  # 41 tokens: floor(0.15 * 41) = 6
    masked, mask = model.mask_tokens(tokens, rng_seed=3)
    assert mask.dtype == bool and mask.sum() == 6
    assert np.all(masked[mask] == -1) and np.all(masked[~mask] == tokens[~mask])
    assert np.all(tokens == np.arange(100, 141))  # input untouched
    chosen = np.random.default_rng(3).choice(41, size=6, replace=False)
    np.testing.assert_array_equal(np.flatnonzero(mask), np.sort(chosen))
    # default seed is self.seed; few tokens still mask one
    _, by_default = model.mask_tokens(tokens)
    np.testing.assert_array_equal(by_default, model.mask_tokens(tokens, rng_seed=model.seed)[1])
    assert model.mask_tokens(np.array([4, 2]))[1].sum() == 1
    with pytest.raises(ValueError, match="empty token sequence"):
        model.mask_tokens(np.array([], dtype=np.int64))


def test_methods_match_reference(model):
    medians = np.random.default_rng(2).uniform(0.1, 5, 80)
    for seed in range(3):
        e = _expr(seed)
        for med in (None, medians):
            _close(model.encode_cell(e, med), ref.encode_cell(model, e, med))
            _close(model.gene_network_attention(e, med), ref.gene_network_attention(model, e, med))
            got = model.predict_masked_genes(e, med, rng_seed=seed)
            want = ref.predict_masked_genes(model, e, med, rng_seed=seed)
            for a, b in zip(got, want, strict=True):
                np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(0).normal(size=(11, 32))
    _close(model.multi_head_attention(x), ref.mha_output(model, x))


def test_shapes_and_claims(model):
    e = _expr(4)
    n = int((e > 0).sum())
    assert model.encode_cell(e).shape == (32,)
    a = model.gene_network_attention(e)
    assert a.shape == (n, n)
    np.testing.assert_allclose(a.sum(axis=1), 1.0, atol=1e-12)
    mask, true_ids, pred = model.predict_masked_genes(e, rng_seed=1)
    assert mask.shape == (n,) and mask.dtype == bool and mask.sum() == max(1, int(n * 0.15))
    assert true_ids.dtype == np.int64 and pred.dtype == np.int64
    assert true_ids.shape == pred.shape == (mask.sum(),)
    np.testing.assert_array_equal(true_ids, model.tokenise(e)[mask])
    assert np.all((pred >= 0) & (pred < 80))


def test_masked_positions_are_zero_vectors(model):
    e = _expr(6)
    tokens = model.tokenise(e)
    mask, _, pred = model.predict_masked_genes(e, rng_seed=2)
    x = model._gene_embeddings[tokens].copy()
    x[mask] = 0.0
    logits = model.multi_head_attention(x)[mask] @ model._mlm_head.T
    np.testing.assert_array_equal(pred, logits.argmax(axis=1))


# --- Appendix A -----------------------------------------------------------------------


def test_all_zero_expression(model):
    zero = np.zeros(80)
    out = model.encode_cell(zero)
    assert out.shape == (32,) and np.all(out == 0)
    mask, true_ids, pred = model.predict_masked_genes(zero)
    assert (mask.dtype, true_ids.dtype, pred.dtype) == (bool, np.int64, np.int64)
    assert mask.size == true_ids.size == pred.size == 0
    a = model.gene_network_attention(zero)
    assert a.shape == (1, 0)
    np.testing.assert_array_equal(a, np.array([[]]))


def test_single_expressed_gene(model):
    e = np.zeros(80)
    e[10] = 2.0
    emb = model._gene_embeddings[10]
    # attention over one token is the token's own value, projected by W_O
    _close(model.encode_cell(e), emb @ model._w_v @ model._w_o)
    assert all(x.size == 0 for x in model.predict_masked_genes(e))
    assert model.gene_network_attention(e).shape == (1, 0)


def test_genes_beyond_vocabulary_are_dropped(model):
    e = _expr(8)
    longer = np.concatenate([e, np.full(30, 500.0)])
    np.testing.assert_array_equal(model.tokenise(longer), model.tokenise(e))
    _close(model.encode_cell(longer), model.encode_cell(e))
    _close(model.gene_network_attention(longer), model.gene_network_attention(e))
    for a, b in zip(
        model.predict_masked_genes(longer, rng_seed=0),
        model.predict_masked_genes(e, rng_seed=0),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    only_beyond = np.concatenate([np.zeros(80), np.ones(4)])
    assert np.all(model.encode_cell(only_beyond) == 0)


def test_uneven_heads_and_extreme_scores():
    m = GeneformerInterface(d_model=10, n_genes=30, n_heads=3, seed=0)  # dh = 3, column 9 unused
    e = _expr(1, 30)
    _close(m.encode_cell(e), ref.encode_cell(m, e))
    m._w_q = m._w_q * 1e5
    m._w_k = m._w_k * 1e5
    a = m.gene_network_attention(e)
    assert np.isfinite(a).all()
    np.testing.assert_allclose(a.sum(axis=1), 1.0, atol=1e-12)
    assert np.isfinite(m.encode_cell(e)).all()


# --- weight-agnostic --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["_gene_embeddings", "_w_q", "_w_k", "_w_v", "_w_o", "_mlm_head"])
def test_assigned_weights_are_used(name):
    m = GeneformerInterface(d_model=16, n_genes=40, n_heads=2, seed=1)
    m._w_q, m._w_k = m._w_q * 300, m._w_k * 300
    e = _expr(2, 40)
    before = m.encode_cell(e)
    before_net = m.gene_network_attention(e)
    old = getattr(m, name)
    setattr(m, name, np.random.default_rng(7).normal(0.0, 1.0, old.shape))
    _close(m.encode_cell(e), ref.encode_cell(m, e))
    _close(m.gene_network_attention(e), ref.gene_network_attention(m, e))
    for a, b in zip(
        m.predict_masked_genes(e, rng_seed=4),
        ref.predict_masked_genes(m, e, rng_seed=4),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    if name != "_mlm_head":
        assert not np.allclose(m.encode_cell(e), before, rtol=1e-6, atol=0)
    if name in ("_gene_embeddings", "_w_q", "_w_k"):
        assert not np.allclose(m.gene_network_attention(e), before_net, rtol=1e-6, atol=0)
    tokens, offsets = m.tokenise_batch(e[np.newaxis])
    _close(m.encode_batch(tokens, offsets)[0], m.encode_cell(e))


def test_n_threads_does_not_change_results(model):
    m = GeneformerInterface(d_model=32, n_genes=200, n_heads=4, seed=3)
    e = _expr(0, 200, 3.0)
    one = (m.encode_cell(e), m.gene_network_attention(e))
    m.n_threads = 2
    np.testing.assert_array_equal(m.encode_cell(e), one[0])
    np.testing.assert_array_equal(m.gene_network_attention(e), one[1])


# --- batches --------------------------------------------------------------------------


@pytest.mark.parametrize("sparse", [False, True])
def test_batch_equals_loop(model, sparse):
    rng = np.random.default_rng(3)
    x = rng.poisson(0.7, (12, 90)).astype(np.float64)
    x[2] = 0.0
    medians = rng.uniform(0.2, 4, 90)
    matrix = sp.csr_matrix(x) if sparse else x
    for med in (None, medians):
        tokens, offsets = model.tokenise_batch(matrix, med)
        for c in range(12):
            np.testing.assert_array_equal(
                tokens[offsets[c] : offsets[c + 1]], model.tokenise(x[c], med)
            )
        z = model.encode_batch(tokens.astype(np.int32), offsets, n_threads=2)
        assert z.shape == (12, 32) and np.all(z[2] == 0)
        for c in range(12):
            _close(z[c], model.encode_cell(x[c], med))
        _close(model.encode_matrix(matrix, med), z)


def test_batch_in_float32(model):
    x = np.random.default_rng(9).poisson(0.7, (6, 80)).astype(np.float64)
    exact = model.encode_matrix(x)
    fast = model.encode_matrix(x, precision="float32")
    assert fast.dtype == np.float64
    np.testing.assert_allclose(fast, exact, rtol=0, atol=1e-5 * np.abs(exact).max())
    with pytest.raises(ValueError, match="precision must be"):
        model.encode_matrix(x, precision="float16")

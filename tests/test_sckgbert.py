"""ScKGBERTInterface: seed-000 contract, edge cases, weight assignment, batches, priors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp

from geneattn import ScKGBERTInterface, rank_value_encode
from geneattn.errors import InputError
from geneattn.models.knowledge import DENSE_LIMIT, load_prior_graph, random_prior_graph
from geneattn.testing import reference as ref

RTOL, ATOL = 1e-9, 1e-15


def _close(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL * max(1.0, np.abs(b).max(initial=0)))


@pytest.fixture(scope="module")
def model() -> ScKGBERTInterface:
    return ScKGBERTInterface(d_model=16, n_genes=60, sigma=0.05, seed=3)


def _expr(seed: int, n: int = 60, lam: float = 2.0) -> np.ndarray:
    return np.random.default_rng(seed).poisson(lam, n).astype(np.float64)


def test_fields_and_defaults():
    assert [f.name for f in dataclasses.fields(ScKGBERTInterface)] == [
        "d_model",
        "n_genes",
        "sigma",
        "seed",
    ]
    m = ScKGBERTInterface()
    assert (m.d_model, m.n_genes, m.sigma, m.seed, m.n_threads) == (64, 2000, 1.0, 42, 1)
    assert ScKGBERTInterface(8, 10, 0.5, 1) == ScKGBERTInterface(
        d_model=8, n_genes=10, sigma=0.5, seed=1
    )


def test_initialisation_draws_in_seed_order():
    m = ScKGBERTInterface(d_model=6, n_genes=9, sigma=1.0, seed=11)
    rng = np.random.default_rng(11)
    emb = rng.normal(0.0, 0.02, (9, 6))
    adj = np.zeros((9, 9))
    for _ in range(min(45, 9 * 8 // 2)):
        i, j = rng.integers(0, 9), rng.integers(0, 9)
        if i != j:
            c = rng.uniform(0.15, 1.0)
            adj[i, j] = adj[j, i] = c
    np.testing.assert_array_equal(m._gene_embeddings, emb)
    assert isinstance(m._kg_adjacency, np.ndarray)
    np.testing.assert_array_equal(m._kg_adjacency, adj)
    for name in ("_w_q", "_w_k", "_w_v"):
        np.testing.assert_array_equal(getattr(m, name), rng.normal(0.0, 0.02, (6, 6)))
    np.testing.assert_array_equal(m._cls_embedding, rng.normal(0.0, 0.02, 6))


def test_random_graph_of_large_vocabulary_is_sparse_and_symmetric():
    n = DENSE_LIMIT + 1
    g = random_prior_graph(np.random.default_rng(0), n)
    assert sp.issparse(g) and g.shape == (n, n)
    assert abs(g - g.T).max() == 0
    assert 0 < g.nnz <= 10 * n
    assert g.data.min() >= 0.15 and g.data.max() <= 1.0
    assert g.diagonal().max() == 0


def test_methods_match_reference(model):
    for seed in range(4):
        e = _expr(seed)
        _close(model.encode_expression(e), ref.encode_expression(model, e))
        _close(model.encode_with_knowledge(e), ref.encode_with_knowledge(model, e))
        _close(model.gene_importance(e), ref.gene_importance(model, e))


def test_gaussian_attention_method(model):
    rng = np.random.default_rng(0)
    q, k, v = rng.normal(size=(7, 4)), rng.normal(size=(9, 4)), rng.normal(size=(9, 4))
    out = model.gaussian_attention(q, k, v)
    assert out.shape == (7, 4)
    _close(out, ref.gaussian_attention(q, k, v, model.sigma, exact=True))
    # float32 or list input is computed in float64
    _close(
        model.gaussian_attention(q.astype(np.float32), k, v.tolist()),
        ref.gaussian_attention(q.astype(np.float32).astype(float), k, v, model.sigma, exact=True),
    )


def test_shapes_and_types(model):
    e = _expr(1)
    assert model.encode_expression(e).shape == (16,)
    assert model.encode_with_knowledge(e).shape == (16,)
    imp = model.gene_importance(e)
    assert imp.shape == (60,)
    assert np.all(imp[e == 0] == 0) and np.all(imp[e > 0] > 0)
    # column sums of a row-stochastic n x n matrix add up to n
    np.testing.assert_allclose(imp.sum(), (e > 0).sum(), rtol=1e-12)
    protos = np.stack([model.encode_with_knowledge(_expr(s)) for s in (10, 11)])
    label = model.predict_cell_type(e, protos, ["a", "b"])
    assert isinstance(label, str) and label in ("a", "b")


def test_predict_cell_type_is_nearest_prototype(model):
    e = _expr(5)
    z = model.encode_with_knowledge(e)
    protos = np.stack([z + 1.0, z + 0.01, z - 0.5])
    assert model.predict_cell_type(e, protos, ["far", "near", "mid"]) == "near"


# --- Appendix A -----------------------------------------------------------------------


def test_all_zero_expression(model):
    zero = np.zeros(60)
    assert rank_value_encode(zero).dtype == np.int64 and rank_value_encode(zero).size == 0
    for out in (model.encode_expression(zero), model.encode_with_knowledge(zero)):
        assert out.shape == (16,) and np.all(out == 0)
    assert np.all(model.gene_importance(zero) == 0) and model.gene_importance(zero).shape == (60,)


def test_genes_beyond_vocabulary_are_dropped(model):
    e = _expr(2)
    longer = np.concatenate([e, np.full(40, 1000.0)])  # the top-ranked genes are out of vocab
    _close(model.encode_expression(longer), model.encode_expression(e))
    _close(model.encode_with_knowledge(longer), model.encode_with_knowledge(e))
    _close(model.gene_importance(longer), model.gene_importance(e))
    only_beyond = np.concatenate([np.zeros(60), np.ones(5)])
    assert np.all(model.encode_expression(only_beyond) == 0)
    # no expressed gene in the vocabulary: falls back to the S-encoder embedding (zeros)
    assert np.all(model.encode_with_knowledge(only_beyond) == 0)
    assert np.all(model.gene_importance(only_beyond) == 0)


def test_single_expressed_gene(model):
    e = np.zeros(60)
    e[7] = 3.0
    g = 7
    emb = model._gene_embeddings[g]
    # attention over one token is that token itself
    _close(model.encode_expression(e), emb @ model._w_v)
    h = ref.neighbour_embeddings(model._kg_adjacency, model._gene_embeddings, np.array([g]))[0]
    _close(model.encode_with_knowledge(e), (emb @ model._w_v + h @ model._w_v) / 2)
    imp = model.gene_importance(e)
    assert imp[g] == pytest.approx(1.0) and np.count_nonzero(imp) == 1


def test_extreme_bandwidth_stays_finite():
    m = ScKGBERTInterface(d_model=8, n_genes=40, sigma=1e-6, seed=0)
    m._gene_embeddings = m._gene_embeddings * 1e4
    e = _expr(0, 40)
    for out in (m.encode_expression(e), m.encode_with_knowledge(e), m.gene_importance(e)):
        assert np.isfinite(out).all()


# --- weight-agnostic --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["_gene_embeddings", "_w_q", "_w_k", "_w_v", "_kg_adjacency"])
def test_assigned_weights_are_used(name):
    m = ScKGBERTInterface(d_model=8, n_genes=50, sigma=0.02, seed=4)
    e = _expr(9, 50)
    before = (m.encode_expression(e), m.encode_with_knowledge(e), m.gene_importance(e))
    rng = np.random.default_rng(1)
    old = getattr(m, name)
    if name == "_kg_adjacency":
        a = sp.random(50, 50, density=0.1, random_state=rng) * 0.9 + 0.0
        new = np.asarray((a + a.T).todense())
    else:
        new = rng.normal(0.0, 0.05, old.shape)
    setattr(m, name, new)
    after = (m.encode_expression(e), m.encode_with_knowledge(e), m.gene_importance(e))
    _close(after[0], ref.encode_expression(m, e))
    _close(after[1], ref.encode_with_knowledge(m, e))
    _close(after[2], ref.gene_importance(m, e))
    assert not np.allclose(after[1], before[1], rtol=1e-6, atol=0)
    if name not in ("_kg_adjacency", "_w_v"):
        assert not np.allclose(after[2], before[2], rtol=1e-6, atol=0)
    # the batch path reads the same attributes
    tokens, offsets = m.tokenise_batch(e[np.newaxis])
    _close(m.encode_batch(tokens, offsets)[0], after[1])


def test_sparse_prior_equals_dense(model):
    m = ScKGBERTInterface(d_model=16, n_genes=60, sigma=0.05, seed=3)
    dense = m._kg_adjacency
    e = _expr(3)
    want = m.encode_with_knowledge(e)
    for conv in (sp.csr_matrix, sp.coo_matrix, sp.csr_array):
        m._kg_adjacency = conv(dense)
        _close(m.encode_with_knowledge(e), want)
        _close(ref.encode_with_knowledge(m, e), want)


def test_isolated_gene_keeps_its_own_embedding():
    m = ScKGBERTInterface(d_model=8, n_genes=20, sigma=0.05, seed=0)
    m._kg_adjacency = np.zeros((20, 20))
    e = _expr(1, 20)
    valid = rank_value_encode(e)
    # with no edges the K-encoder attends over the unscaled embeddings themselves
    t = m._gene_embeddings[valid]
    z_k = ref.gaussian_attention(t @ m._w_q, t @ m._w_k, t @ m._w_v, m.sigma).mean(0)
    _close(m.encode_with_knowledge(e), (m.encode_expression(e) + z_k) / 2)


def test_n_threads_does_not_change_results():
    m = ScKGBERTInterface(d_model=16, n_genes=300, sigma=0.05, seed=1)
    e = _expr(0, 300, 3.0)
    one = (m.encode_with_knowledge(e), m.gene_importance(e))
    m.n_threads = 2
    two = (m.encode_with_knowledge(e), m.gene_importance(e))
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])


# --- batches --------------------------------------------------------------------------


@pytest.mark.parametrize("sparse", [False, True])
def test_batch_equals_loop(model, sparse):
    rng = np.random.default_rng(7)
    x = rng.poisson(0.8, (15, 70)).astype(np.float64)  # 10 columns beyond the vocabulary
    x[4] = 0.0
    x[5, :60] = 0.0
    matrix = sp.csr_matrix(x) if sparse else x
    tokens, offsets = model.tokenise_batch(matrix)
    assert tokens.dtype == np.int64 and offsets.dtype == np.int64 and offsets.size == 16
    for c in range(15):
        want = rank_value_encode(x[c])
        np.testing.assert_array_equal(tokens[offsets[c] : offsets[c + 1]], want[want < 60])
    fused = model.encode_batch(tokens, offsets, n_threads=2)
    s_only = model.encode_batch(tokens.astype(np.int32), offsets, knowledge=False)
    assert fused.shape == (15, 16)
    for c in range(15):
        _close(fused[c], model.encode_with_knowledge(x[c]))
        _close(s_only[c], model.encode_expression(x[c]))
    assert np.all(fused[4] == 0) and np.all(fused[5] == 0)
    _close(model.encode_matrix(matrix), fused)


def test_batch_refuses_tokens_outside_the_vocabulary(model):
    with pytest.raises(ValueError, match="token 60 is outside"):
        model.encode_batch(np.array([1, 60]), np.array([0, 2]))


# --- real priors ----------------------------------------------------------------------


def test_load_prior_graph(tmp_path):
    path = tmp_path / "ppi.tsv"
    path.write_text(
        "gene_a\tgene_b\tconfidence\n"
        "A\tB\t0.5\n"
        "B\tA\t0.7\n"  # the same pair again: the larger confidence is kept
        "A\tC\t0.2\n"
        "C\tZ\t0.9\n"  # Z is not in the vocabulary
        "B\tB\t1.0\n"  # self-pair
        "C\tD\t0.0\n"  # no confidence
        "\n"
    )
    g = load_prior_graph(path, ["A", "B", "C", "D"])
    assert sp.issparse(g) and g.shape == (4, 4)
    want = np.zeros((4, 4))
    want[0, 1] = want[1, 0] = 0.7
    want[0, 2] = want[2, 0] = 0.2
    np.testing.assert_array_equal(g.toarray(), want)
    assert load_prior_graph(path, ["A", "B", "C"], min_confidence=0.3).nnz == 2
    headless = tmp_path / "plain.tsv"
    headless.write_text("A\tB\t0.5\n")
    assert load_prior_graph(headless, ["B", "A"]).toarray()[0, 1] == 0.5


def test_load_prior_graph_errors(tmp_path):
    with pytest.raises(InputError, match="cannot read the prior graph"):
        load_prior_graph(tmp_path / "missing.tsv", ["A"])
    bad = tmp_path / "bad.tsv"
    bad.write_text("gene_a\tgene_b\tconfidence\nA\tB\tstrong\n")
    with pytest.raises(InputError, match="line 2: confidence 'strong' is not a number"):
        load_prior_graph(bad, ["A", "B"])
    bad.write_text("A\tB\n")
    with pytest.raises(InputError, match="line 1: expected gene_a, gene_b, confidence"):
        load_prior_graph(bad, ["A", "B"])
    bad.write_text("A\tB\tnan\n")
    with pytest.raises(InputError, match="not finite"):
        load_prior_graph(bad, ["A", "B"])
    with pytest.raises(InputError, match="'A' appears more than once"):
        load_prior_graph(bad, ["A", "B", "A"])


def test_with_prior(tmp_path):
    genes = [f"G{i}" for i in range(30)]
    path = tmp_path / "ppi.tsv"
    path.write_text("".join(f"G{i}\tG{(i * 7) % 30}\t{0.2 + i / 50}\n" for i in range(30)))
    m = ScKGBERTInterface.with_prior(path, genes, d_model=8, sigma=0.05, seed=2)
    plain = ScKGBERTInterface(d_model=8, n_genes=30, sigma=0.05, seed=2)
    np.testing.assert_array_equal(m._gene_embeddings, plain._gene_embeddings)
    np.testing.assert_array_equal(m._w_v, plain._w_v)
    assert sp.issparse(m._kg_adjacency)
    e = _expr(4, 30)
    _close(m.encode_with_knowledge(e), ref.encode_with_knowledge(m, e))
    from_matrix = ScKGBERTInterface.with_prior(
        m._kg_adjacency.toarray(), genes, d_model=8, sigma=0.05, seed=2
    )
    _close(from_matrix.encode_with_knowledge(e), m.encode_with_knowledge(e))
    with pytest.raises(ValueError, match="prior must be 30 x 30"):
        ScKGBERTInterface.with_prior(np.zeros((3, 3)), genes)


def test_batch_in_float32(model):
    x = np.random.default_rng(8).poisson(1.0, (6, 60)).astype(np.float64)
    tokens, offsets = model.tokenise_batch(x)
    exact = model.encode_batch(tokens, offsets)
    for knowledge in (True, False):
        fast = model.encode_batch(tokens, offsets, knowledge=knowledge, precision="float32")
        want = exact if knowledge else model.encode_batch(tokens, offsets, knowledge=False)
        assert fast.dtype == np.float64
        np.testing.assert_allclose(fast, want, rtol=0, atol=1e-5 * np.abs(want).max())
    with pytest.raises(ValueError, match="precision must be 'float64' or 'float32'"):
        model.encode_batch(tokens, offsets, precision="half")

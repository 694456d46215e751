"""GenoHoption kernels against the numpy reference of the seed's equations, the authors'
``gn_attn.py`` (ported by reading), and real demo cells with the PPI prior."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from geneattn import _kernels
from geneattn.diffusion import coexpression_prior, log_normalise
from geneattn.errors import InputError
from geneattn.models.bert_weights import BertConfig, BertWeights
from geneattn.models.genohoption import (
    GenoHoptionConfig,
    TokenGraph,
    coexpression_gene_graph,
    coexpression_token_graph,
    edges_per_cell,
    load_token_graph,
    ppi_token_graph,
    save_token_graph,
    token_graph,
)
from geneattn.testing import genohoption as ref

TOL64 = {"rtol": 1e-6, "atol": 1e-9}
TOL32 = {"rtol": 1e-4, "atol": 1e-4}
DIFFUSION = st.sampled_from(["ppr", "heat"])


def _random_csr(rng: np.random.Generator, n: int, density: float, *, square: int | None = None):
    """(indptr, indices) int64 of a random pattern with n rows over ``square or n`` columns."""
    m = square or n
    mask = rng.random((n, m)) < density
    csr = sp.csr_matrix(mask.astype(float))
    return csr.indptr.astype(np.int64), csr.indices.astype(np.int64)


def _dense(indptr: np.ndarray, indices: np.ndarray, n: int) -> np.ndarray:
    a = np.zeros((n, n), dtype=bool)
    for i in range(n):
        a[i, indices[indptr[i] : indptr[i + 1]]] = True
    return a


def _params(diffusion: str, alpha: float, t: float, iterations: int) -> dict:
    return {"diffusion": diffusion, "alpha": alpha, "t": t, "iterations": iterations}


# --- one cell over a given graph ---------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 30),
    heads=st.integers(1, 3),
    dh=st.integers(1, 5),
    extra=st.integers(0, 2),
    density=st.floats(0.0, 0.6),
    diffusion=DIFFUSION,
    alpha=st.floats(0.05, 1.0),
    t=st.floats(0.1, 8.0),
    iterations=st.integers(0, 8),
    seed=st.integers(0, 2**32 - 1),
)
def test_attention_matches_reference_on_random_graphs(
    n, heads, dh, extra, density, diffusion, alpha, t, iterations, seed
):
    rng = np.random.default_rng(seed)
    d = heads * dh + extra  # trailing columns stay zero
    q, k, v = (rng.normal(scale=2.0, size=(n, d)) for _ in range(3))
    indptr, indices = _random_csr(rng, n, density)
    p = _params(diffusion, alpha, t, iterations)
    out, weights = _kernels.genohoption_attention(
        q, k, v, indptr, indices, heads, return_weights=True, n_threads=2, **p
    )
    want, mats = ref.genohoption_attention(q, k, v, _dense(indptr, indices, n), heads, **p)
    np.testing.assert_allclose(out, want, **TOL64)
    np.testing.assert_allclose(weights, mats, **TOL64)
    assert np.all(out[:, heads * (d // heads) :] == 0)
    if diffusion == "ppr":  # rows of M sum to 1
        np.testing.assert_allclose(weights.sum(axis=2), 1.0, rtol=1e-12)
    single = _kernels.genohoption_attention(q, k, v, indptr, indices, heads, n_threads=1, **p)
    np.testing.assert_array_equal(single, out)
    # float32 follows the same arithmetic
    out32 = _kernels.genohoption_attention(
        *(x.astype(np.float32) for x in (q, k, v)), indptr, indices, heads, **p
    )
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, want, **TOL32)


def test_a_node_without_neighbours_keeps_its_value():
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(4, 2)) for _ in range(3))
    indptr = np.array([0, 0, 2, 2, 3])  # rows 0 and 2 without neighbours
    indices = np.array([0, 3, 1])
    out = _kernels.genohoption_attention(q, k, v, indptr, indices, 1)
    np.testing.assert_allclose(out[[0, 2]], v[[0, 2]], rtol=1e-15)
    heat = _kernels.genohoption_attention(q, k, v, indptr, indices, 1, diffusion="heat")
    theta = ref.coefficients("heat", alpha=0.25, t=5.0, iterations=6)
    np.testing.assert_allclose(heat[0], v[0] * theta.sum(), rtol=1e-14)


def test_bad_arguments_get_clear_errors():
    q = np.zeros((3, 4))
    ip, ix = np.array([0, 1, 2, 3]), np.array([0, 1, 2])
    with pytest.raises(TypeError, match="keys must be a 2-D numpy array of dtype float64"):
        _kernels.genohoption_attention(q, q.astype(np.float32), q, ip, ix, 2)
    with pytest.raises(ValueError, match="values must have the shape of queries"):
        _kernels.genohoption_attention(q, q, q[:2], ip, ix, 2)
    with pytest.raises(ValueError, match="alpha must lie in"):
        _kernels.genohoption_attention(q, q, q, ip, ix, 2, alpha=0.0)
    with pytest.raises(ValueError, match="diffusion must be 'ppr' or 'heat'"):
        _kernels.genohoption_attention(q, q, q, ip, ix, 2, diffusion="diffuser")
    with pytest.raises(ValueError, match="graph indices"):
        _kernels.genohoption_attention(q, q, q, ip, np.array([0, 1, 3]), 2)
    with pytest.raises(ValueError, match="3 positions"):
        _kernels.genohoption_attention(q[:2], q[:2], q[:2], ip, ix, 2)
    with pytest.raises(TypeError, match="indptr must be a 1-D numpy array of dtype int64"):
        _kernels.genohoption_attention(q, q, q, ip.astype(np.int32), ix, 2)
    with pytest.raises(ValueError, match="C-contiguous"):
        _kernels.genohoption_attention(np.asfortranarray(np.ones((3, 4))), q, q, ip, ix, 2)
    with pytest.raises(ValueError, match="n_threads"):
        _kernels.genohoption_attention(q, q, q, ip, ix, 2, n_threads=0)


# --- Seq2Graph -------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    vocab=st.integers(1, 25),
    n=st.integers(0, 30),
    density=st.floats(0.0, 0.5),
    seed=st.integers(0, 2**32 - 1),
)
def test_seq2graph_matches_reference(vocab, n, density, seed):
    rng = np.random.default_rng(seed)
    ip, ix = _random_csr(rng, vocab, density)  # random, directed, with diagonal entries
    tokens = rng.integers(0, vocab, size=n)  # repeats
    for dtype in (np.int64, np.int32):
        indptr, indices = _kernels.seq2graph(tokens.astype(dtype), ip, ix)
        prior = sp.csr_matrix((np.ones(ix.size), ix, ip), shape=(vocab, vocab))
        np.testing.assert_array_equal(_dense(indptr, indices, n), ref.seq2graph(tokens, prior))
        for i in range(n):  # rows ascending, no repeats
            row = indices[indptr[i] : indptr[i + 1]]
            assert np.all(np.diff(row) > 0)
    offsets = np.array([0, n // 2, n], dtype=np.int64)
    edges = _kernels.seq2graph_edges(tokens, offsets, ip, ix, n_threads=2)
    for c in range(2):
        cell = tokens[offsets[c] : offsets[c + 1]]
        assert edges[c] == _kernels.seq2graph(cell, ip, ix)[1].size


def test_seq2graph_errors():
    ip, ix = np.array([0, 1, 2]), np.array([1, 0])
    with pytest.raises(ValueError, match="token 2 is outside"):
        _kernels.seq2graph(np.array([0, 2]), ip, ix)
    with pytest.raises(ValueError, match="prior indices"):
        _kernels.seq2graph(np.array([0]), ip, np.array([1, 5]))
    with pytest.raises(TypeError, match="prior_indptr must be a 1-D numpy array of dtype int64"):
        _kernels.seq2graph(np.array([0]), ip.astype(float), ix)


# --- the authors' gn_attn.py -------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "alpha", "temperature", "iter_num"),
    [(0, 0.25, 5.0, 6), (1, 0.25, 5.0, 6), (0, 0.6, 5.0, 2), (1, 0.25, 1.5, 9), (1, 0.25, 5.0, 1)],
)
def test_kernel_reproduces_the_authors_gn_attn(mode, alpha, temperature, iter_num):
    """Their loops, order and coefficients: PPR runs iter_num steps of eq. 8; their heat loop
    ``range(1, iter_num)`` stops at A^(iter_num - 1), i.e. our ``iterations = iter_num - 1``."""
    rng = np.random.default_rng(iter_num)
    vocab, n, heads, dh = 40, 25, 2, 4
    ip, ix = _random_csr(rng, vocab, 0.15)
    tokens = rng.permutation(vocab)[:n]
    indptr, indices = _kernels.seq2graph(tokens, ip, ix)
    # our row i lists what i attends to: their DGL edges j -> i
    dst = np.repeat(np.arange(n), np.diff(indptr))
    src = indices
    q, k, v = (rng.normal(size=(n, heads * dh)) for _ in range(3))
    want = ref.gn_attn_port(
        q,
        k,
        v,
        src,
        dst,
        heads,
        diffusion_mode=mode,
        alpha=alpha,
        temperature=temperature,
        iter_num=iter_num,
    )
    ours = _kernels.genohoption_attention(
        q,
        k,
        v,
        indptr,
        indices,
        heads,
        diffusion="heat" if mode else "ppr",
        alpha=alpha,
        t=temperature,
        iterations=iter_num - 1 if mode else iter_num,
    )
    np.testing.assert_allclose(ours, want, rtol=1e-12, atol=1e-14)


# --- study-model kernels over many cells ------------------------------------------------


def _study_case(rng, vocab, d, n_cells, max_len, density):
    table = rng.normal(size=(vocab, d))
    w_q, w_k, w_v = (rng.normal(scale=0.6, size=(d, d)) for _ in range(3))
    lengths = rng.integers(0, max_len + 1, size=n_cells)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = rng.integers(0, vocab, size=int(offsets[-1])).astype(np.int64)
    prior = sp.random(vocab, vocab, density=density, random_state=rng, format="csr")
    prior = ((prior + prior.T) != 0).astype(float).tocsr()
    return table, (w_q, w_k, w_v), tokens, offsets, prior


@settings(max_examples=25, deadline=None)
@given(
    heads=st.integers(1, 3),
    dh=st.integers(1, 4),
    n_cells=st.integers(0, 5),
    max_len=st.integers(0, 30),
    density=st.floats(0.0, 0.4),
    in_universe=st.floats(0.0, 1.0),
    diffusion=DIFFUSION,
    iterations=st.integers(0, 7),
    n_modules=st.integers(0, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_study_kernels_match_reference(
    heads, dh, n_cells, max_len, density, in_universe, diffusion, iterations, n_modules, seed
):
    rng = np.random.default_rng(seed)
    vocab, d = 20, heads * dh
    table, (w_q, w_k, w_v), tokens, offsets, prior = _study_case(
        rng, vocab, d, n_cells, max_len, density
    )
    graph = TokenGraph(
        prior.indptr,
        prior.indices,
        GenoHoptionConfig(diffusion=diffusion, iterations=iterations, alpha=0.3, t=2.0),
    )
    p = graph.kernel_arg()
    universe_tokens = np.flatnonzero(rng.random(vocab) < in_universe)
    g = universe_tokens.size
    index = np.full(vocab, -1, dtype=np.int64)
    index[universe_tokens] = rng.permutation(g)
    modules = rng.integers(-1, n_modules, size=g) if n_modules else np.full(g, -1)
    want_sums, want_inc = np.zeros((g, g)), np.zeros(g)
    want_mod = np.zeros((n_cells, n_modules))
    want_pairs = np.zeros((n_cells, n_modules), dtype=np.int64)
    want_pool = np.zeros((n_cells, d))
    for c in range(n_cells):
        cell = tokens[offsets[c] : offsets[c + 1]]
        if cell.size == 0:
            continue
        x = table[cell]
        adj = ref.seq2graph(cell, prior)
        kwargs = {"diffusion": diffusion, "alpha": 0.3, "t": 2.0, "iterations": iterations}
        out, mats = ref.genohoption_attention(x @ w_q, x @ w_k, x @ w_v, adj, heads, **kwargs)
        want_pool[c] = out.mean(axis=0)
        m = mats.mean(axis=0)
        ref.add_attention(want_sums, want_inc, m, index[cell])
        want_mod[c], want_pairs[c] = ref.module_sums(m, index[cell], modules, n_modules)
    pooled = _kernels.mha_genohoption_encode_cells(
        tokens, offsets, table, w_q, w_k, w_v, heads, p, n_threads=2
    )
    np.testing.assert_allclose(pooled, want_pool, **TOL64)
    sums, inc = _kernels.mha_genohoption_aggregate_cells(
        tokens, offsets, table, w_q, w_k, heads, index, g, p, n_threads=2
    )
    np.testing.assert_allclose(sums, want_sums, **TOL64)
    np.testing.assert_allclose(inc, want_inc, **TOL64)
    mod, pairs = _kernels.mha_genohoption_module_cells(
        tokens, offsets, table, w_q, w_k, heads, index, modules, n_modules, p, n_threads=3
    )
    np.testing.assert_allclose(mod, want_mod, **TOL64)
    np.testing.assert_array_equal(pairs, want_pairs)
    # one thread, and the cells in two calls into running sums: bit-identical
    half = n_cells // 2
    s2, i2 = np.zeros((g, g)), np.zeros(g)
    for lo, hi in ((0, half), (half, n_cells)):
        o = offsets[lo : hi + 1]
        _kernels.mha_genohoption_aggregate_cells(
            tokens[o[0] : o[-1]], o - o[0], table, w_q, w_k, heads, index, g, p,
            n_threads=1, sums=s2, incoming=i2,
        )  # fmt: skip
    np.testing.assert_array_equal(s2, sums)
    np.testing.assert_array_equal(i2, inc)


def test_study_kernel_errors():
    rng = np.random.default_rng(1)
    table, (w_q, w_k, w_v), tokens, offsets, prior = _study_case(rng, 10, 4, 2, 5, 0.3)
    graph = TokenGraph(prior.indptr, prior.indices, GenoHoptionConfig())
    p = graph.kernel_arg()
    args = (tokens, offsets, table, w_q, w_k, w_v, 2)
    with pytest.raises(TypeError, match="genohoption must be a dict"):
        _kernels.mha_genohoption_encode_cells(*args, [1, 2])
    with pytest.raises(ValueError, match='unknown key "beta"'):
        _kernels.mha_genohoption_encode_cells(*args, {**p, "beta": 1})
    with pytest.raises(ValueError, match='lacks the key "iterations"'):
        _kernels.mha_genohoption_encode_cells(
            *args, {k: v for k, v in p.items() if k != "iterations"}
        )
    with pytest.raises(TypeError, match='genohoption\\["t"\\] must be a float'):
        _kernels.mha_genohoption_encode_cells(*args, {**p, "t": "hot"})
    with pytest.raises(ValueError, match="t must be finite"):
        _kernels.mha_genohoption_encode_cells(*args, {**p, "diffusion": "heat", "t": -1.0})
    small = TokenGraph(np.zeros(6, np.int64), np.zeros(0, np.int64), GenoHoptionConfig())
    with pytest.raises(ValueError, match="one entry per table row \\(10\\) plus one"):
        _kernels.mha_genohoption_encode_cells(*args, small.kernel_arg())
    with pytest.raises(TypeError, match="w_v must be a 2-D numpy array of dtype float64"):
        _kernels.mha_genohoption_encode_cells(*args[:5], w_v.astype(np.float32), 2, p)


# --- a BERT checkpoint in GenoHoption mode ---------------------------------------------


def _bert(layers: int, heads: int, dh: int, act: str = "relu", vocab: int = 30):
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=heads * dh,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * heads * dh,
        max_position_embeddings=40,
        hidden_act=act,
        layer_norm_eps=1e-12,
    )
    return config, BertWeights.random(config, seed=layers * 7 + heads)


@settings(max_examples=20, deadline=None)
@given(
    layers=st.integers(1, 3),
    heads=st.integers(1, 3),
    dh=st.integers(1, 6),
    lengths=st.lists(st.integers(0, 35), min_size=1, max_size=3),
    density=st.floats(0.0, 0.5),
    diffusion=DIFFUSION,
    iterations=st.integers(0, 6),
    seed=st.integers(0, 2**32 - 1),
)
def test_bert_in_genohoption_mode_matches_reference(
    layers, heads, dh, lengths, density, diffusion, iterations, seed
):
    rng = np.random.default_rng(seed)
    config, weights = _bert(layers, heads, dh)
    vocab = config.vocab_size
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = rng.integers(0, vocab, size=int(offsets[-1])).astype(np.int64)
    prior = sp.random(vocab, vocab, density=density, random_state=rng, format="csr")
    cfg = GenoHoptionConfig(diffusion=diffusion, iterations=iterations)
    graph = TokenGraph(prior.indptr, prior.indices, cfg)
    emb, lw = weights.kernel_args()
    common = (ids, offsets, emb, lw, heads, config.hidden_act, config.layer_norm_eps)
    out = _kernels.bert_forward(
        *common,
        hidden_layers=list(range(layers + 1)),
        attention_layers=list(range(layers)),
        per_head=True,
        n_threads=2,
        genohoption=graph.kernel_arg(),
    )
    layer = int(rng.integers(0, layers))
    universe_tokens = np.flatnonzero(rng.random(vocab) < 0.6)
    index = np.full(vocab, -1, dtype=np.int64)
    index[universe_tokens] = np.arange(universe_tokens.size)
    g = universe_tokens.size
    sums, inc = _kernels.bert_aggregate_cells(
        *common, layer, index, g, n_threads=2, genohoption=graph.kernel_arg()
    )
    want_sums, want_inc = np.zeros((g, g)), np.zeros(g)
    kw = {"diffusion": diffusion, "alpha": 0.25, "t": 5.0, "iterations": iterations}
    for c, n in enumerate(lengths):
        cell = ids[offsets[c] : offsets[c + 1]]
        if n == 0:
            continue
        hidden, mats = ref.bert_forward(cell, weights, config, ref.seq2graph(cell, prior), **kw)
        for k in range(layers + 1):
            got = out["hidden"][k][offsets[c] : offsets[c + 1]]
            np.testing.assert_allclose(got, hidden[k], **TOL32)
        a0, a1 = out["attention_offsets"][c : c + 2]
        for lay in range(layers):
            got = out["attention"][lay][a0:a1].reshape(heads, n, n)
            np.testing.assert_allclose(got, mats[lay], **TOL32)
        ref.add_attention(want_sums, want_inc, mats[layer].mean(axis=0), index[cell])
    np.testing.assert_allclose(sums, want_sums, **TOL32)
    np.testing.assert_allclose(inc, want_inc, **TOL32)
    modules = np.arange(g) % 2
    mod, _ = _kernels.bert_module_cells(
        *common, layer, index, modules, 2, n_threads=1, genohoption=graph.kernel_arg()
    )
    assert mod.shape == (len(lengths), 2)
    # dense mode is untouched by the new argument
    dense = _kernels.bert_forward(*common, hidden_layers=[layers], n_threads=1)
    base = _kernels.bert_forward(*common, hidden_layers=[layers], n_threads=1, genohoption=None)
    np.testing.assert_array_equal(dense["hidden"][0], base["hidden"][0])


def test_bert_head_average_and_threads():
    _, weights = _bert(2, 3, 4)
    rng = np.random.default_rng(5)
    offsets = np.array([0, 30, 31, 60], dtype=np.int64)
    ids = rng.integers(0, 30, size=60).astype(np.int32)
    prior = sp.random(30, 30, density=0.3, random_state=rng, format="csr")
    p = TokenGraph(prior.indptr, prior.indices, GenoHoptionConfig()).kernel_arg()
    emb, lw = weights.kernel_args()
    common = (ids, offsets, emb, lw, 3, "relu", 1e-12)
    runs = [
        _kernels.bert_forward(
            *common, pool_layer=2, attention_layers=[1], n_threads=t, genohoption=p
        )
        for t in (1, 3)
    ]
    np.testing.assert_array_equal(runs[0]["pooled"], runs[1]["pooled"])
    per_head = _kernels.bert_forward(
        *common, attention_layers=[1], per_head=True, n_threads=2, genohoption=p
    )
    for c in range(3):
        n = int(offsets[c + 1] - offsets[c])
        a0, a1 = runs[0]["attention_offsets"][c : c + 2]
        h0, h1 = per_head["attention_offsets"][c : c + 2]
        mean = per_head["attention"][0][h0:h1].reshape(3, n, n).mean(axis=0)
        np.testing.assert_allclose(runs[0]["attention"][0][a0:a1].reshape(n, n), mean, **TOL32)


# --- priors ------------------------------------------------------------------------------


def test_blockwise_coexpression_equals_the_dense_one():
    rng = np.random.default_rng(3)
    base = rng.poisson(2.0, size=(60, 5))
    counts = np.concatenate([base @ rng.random((5, 40)), rng.poisson(1.0, (60, 10))], axis=1)
    counts = np.round(counts)
    counts[:, 3] = 0  # a constant gene
    x = log_normalise(sp.csr_matrix(counts))
    want = coexpression_prior(x, n_neighbors=4, threshold=0.3)
    for block in (1, 7, 64):
        got = coexpression_gene_graph(x, top=4, min_corr=0.3, block=block)
        np.testing.assert_array_equal(got.toarray(), want.toarray())
    assert want.nnz > 0


def test_token_graphs_union_remap_and_save(tmp_path):
    rng = np.random.default_rng(4)
    counts = rng.poisson(1.0, size=(30, 6)).astype(float)
    counts[:, 5] = counts[:, 4] * 2  # two perfectly co-expressed genes
    gene_tokens = np.array([3, -1, 7, 2, 9, 8])
    co = coexpression_token_graph(counts, gene_tokens, 12, top=2, min_corr=0.5)
    assert co.shape == (12, 12) and co[9, 8] == 1 and co[8, 9] == 1
    ppi = sp.csr_matrix(([1.0, 1.0], ([0, 1], [1, 0])), shape=(12, 12))
    cfg = GenoHoptionConfig(graph="union")
    g = token_graph(cfg, 12, ppi=ppi, coexpression=co)
    dense = g.matrix().toarray()
    assert dense[0, 1] == dense[9, 8] == 1 and np.all(np.diag(dense) == 0)
    with pytest.raises(InputError, match="needs the co-expression graph"):
        token_graph(cfg, 12, ppi=ppi)
    moved = g.remap(np.where(np.arange(12) == 0, -1, np.arange(12) + 1), 14)
    assert moved.n_tokens == 14
    assert moved.matrix()[10, 9] == 1 and moved.matrix()[2].nnz == 0  # token 0 dropped
    save_token_graph(tmp_path / "g.npz", g)
    back = load_token_graph(tmp_path / "g.npz")
    np.testing.assert_array_equal(back.indices, g.indices)
    assert back.config == cfg
    with pytest.raises(InputError, match="graph must be one of"):
        GenoHoptionConfig(graph="string")
    with pytest.raises(InputError, match="unknown GenoHoption option"):
        GenoHoptionConfig.from_params({"graph": "ppi", "k": 3})


# --- real demo cells with the PPI prior --------------------------------------------------


@pytest.fixture(scope="module")
def demo(resources_dir):
    """30 real demo cells tokenized with the V1 dictionary, their gene tokens, the PPI over
    the token ids, and a study model of those cells."""
    from geneattn.models.study import build_study_model
    from geneattn.resources.load import (
        load_gene_medians,
        load_gene_name_map,
        load_ppi,
        load_token_dictionary,
    )
    from geneattn.tokenize import map_genes, tokenize_counts
    from geneattn.universe import symbols_for

    adata = ad.read_h5ad(resources_dir / "wu2020_200.h5ad")[:30].copy()
    gf = resources_dir / "geneformer_v1"
    td = load_token_dictionary(gf / "token_dictionary.tsv")
    medians = load_gene_medians(gf / "gene_median_dictionary.tsv")
    names = load_gene_name_map(gf / "gene_name_id.tsv")
    counts = sp.csr_matrix(adata.X, dtype=np.float64)
    var_names = adata.var_names.to_numpy()
    cells, _ = tokenize_counts(
        counts,
        var_names,
        cell_ids=adata.obs_names.to_numpy(),
        n_counts=None,
        token_dictionary=td,
        gene_medians=medians,
        name_map=names,
    )
    _, gene_tokens, _ = map_genes(
        var_names, gene_id="symbol", token_dictionary=td, gene_medians=medians, name_map=names
    )
    vocab = len(cells.vocabulary)
    symbols = symbols_for(cells.vocabulary, names, preferred=set(var_names.astype(str)))
    ppi = ppi_token_graph(load_ppi(resources_dir / "ppi" / "h_sapiens.tsv"), symbols)
    model = build_study_model(
        counts, np.asarray(counts.sum(axis=1)).ravel(), gene_tokens, vocab, d_model=16
    )
    return cells, vocab, ppi, model


def test_real_demo_cells_with_the_ppi_prior(demo):
    cells, vocab, ppi, model = demo
    graph = token_graph(GenoHoptionConfig(), vocab, ppi=ppi)
    edges = edges_per_cell(cells, graph, n_threads=2)
    lengths = cells.lengths
    assert np.all(edges >= lengths) and np.all(edges > 2 * lengths)  # the PPI links them
    # the reference is dense, so compare on cells cut to their 250 top-ranked genes
    keep = np.minimum(lengths, 250)
    offsets = np.concatenate([[0], np.cumsum(keep)]).astype(np.int64)
    tokens = np.concatenate(
        [cells.tokens[cells.offsets[c] : cells.offsets[c] + keep[c]] for c in range(len(keep))]
    ).astype(np.int64)
    table, w = model.gene_embeddings, model.w_q
    universe_tokens = np.unique(tokens)[::3]
    index = np.full(vocab, -1, dtype=np.int64)
    index[universe_tokens] = np.arange(universe_tokens.size)
    g = universe_tokens.size
    for cfg in (GenoHoptionConfig(), GenoHoptionConfig(diffusion="heat")):
        tg = token_graph(cfg, vocab, ppi=ppi)
        p = tg.kernel_arg()
        pooled = _kernels.mha_genohoption_encode_cells(tokens, offsets, table, w, w, w, 4, p)
        sums, inc = _kernels.mha_genohoption_aggregate_cells(
            tokens, offsets, table, w, w, 4, index, g, p, n_threads=2
        )
        want_sums, want_inc = np.zeros((g, g)), np.zeros(g)
        prior = tg.matrix()
        for c in range(6):
            cell = tokens[offsets[c] : offsets[c + 1]]
            x = table[cell]
            out, mats = ref.genohoption_attention(
                x, x, x, ref.seq2graph(cell, prior), 4, diffusion=cfg.diffusion
            )
            np.testing.assert_allclose(pooled[c], out.mean(axis=0), **TOL64)
            ref.add_attention(want_sums, want_inc, mats.mean(axis=0), index[cell])
        first6 = _kernels.mha_genohoption_aggregate_cells(
            tokens[: offsets[6]], offsets[:7], table, w, w, 4, index, g, p
        )
        np.testing.assert_allclose(first6[0], want_sums, **TOL64)
        np.testing.assert_allclose(first6[1], want_inc, **TOL64)
        assert sums.sum() > first6[0].sum() > 0 and np.all(inc >= 0)
    # attention restricted to the graph: the effective attention vanishes between genes no
    # path of the cell's graph joins, and PPR keeps every row stochastic
    cell = tokens[: offsets[1]]
    indptr, indices = _kernels.seq2graph(cell, graph.indptr, graph.indices)
    x = table[cell]
    _, mats = _kernels.genohoption_attention(
        x, x, x, indptr, indices, 4, return_weights=True, iterations=1
    )
    adj = _dense(indptr, indices, cell.size)
    assert np.all(mats[:, ~adj] == 0)
    np.testing.assert_allclose(mats.sum(axis=2), 1.0, rtol=1e-12)
    full = _kernels.seq2graph(cells.cell(0), graph.indptr, graph.indices)[1]
    assert edges[0] == full.size > indices.size

"""Study-derived attention weights: PCA loadings as gene embeddings, identity projections."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from geneattn.errors import InputError
from geneattn.models.study import (
    StudyModel,
    build_study_model,
    load_study_model,
    save_study_model,
)


def _programs(seed=0, n_cells=120):
    """Counts with two gene programs (genes 0-9 and 10-19) active in different cells."""
    rng = np.random.default_rng(seed)
    base = rng.poisson(1.0, size=(n_cells, 40)).astype(np.float64)
    a = rng.random(n_cells) < 0.5
    base[np.ix_(a, np.arange(10))] += rng.poisson(8.0, size=(a.sum(), 10))
    base[np.ix_(~a, np.arange(10, 20))] += rng.poisson(8.0, size=((~a).sum(), 10))
    return sp.csr_matrix(base), base.sum(axis=1)


def test_weights_shape_norm_and_identity():
    x, n = _programs()
    tokens = np.arange(40) + 5
    tokens[3] = -1
    m = build_study_model(x, n, tokens, 50, d_model=8, n_heads=2, temperature=4.0, seed=1)
    assert m.gene_embeddings.shape == (50, 8)
    norms = np.linalg.norm(m.gene_embeddings, axis=1)
    with_embedding = np.flatnonzero(norms > 0)
    assert set(with_embedding) <= set(tokens[tokens >= 0])
    assert np.allclose(norms[with_embedding], np.sqrt(4.0 * np.sqrt(4)))
    assert norms[8] == 0  # gene 3 has no token
    for w in (m.w_q, m.w_k, m.w_v, m.w_o):
        assert np.array_equal(w, np.eye(8))


def test_attention_follows_coexpression():
    """A program gene attends more to its own program than to the other one."""
    x, n = _programs()
    m = build_study_model(x, n, np.arange(40), 40, d_model=4, n_heads=1, temperature=8.0)
    gi = m.interface()
    a = gi.gene_network_attention(np.r_[np.full(20, 5.0), np.ones(20)])
    order = gi.tokenise(np.r_[np.full(20, 5.0), np.ones(20)])
    pos = {int(t): i for i, t in enumerate(order)}
    own = np.mean([a[pos[0], pos[j]] for j in range(1, 10)])
    other = np.mean([a[pos[0], pos[j]] for j in range(10, 20)])
    assert own > 3 * other


def test_deterministic_and_roundtrip(tmp_path):
    x, n = _programs()
    one = build_study_model(x, n, np.arange(40), 40, d_model=8, n_heads=4, seed=3)
    two = build_study_model(x, n, np.arange(40), 40, d_model=8, n_heads=4, seed=3)
    save_study_model(tmp_path / "a.npz", one)
    save_study_model(tmp_path / "b.npz", two)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    back = load_study_model(tmp_path / "a.npz")
    assert np.array_equal(back.gene_embeddings, one.gene_embeddings)
    assert back.n_heads == 4 and back.params["kind"] == "study_pca"


def test_bad_input(tmp_path):
    x, n = _programs(n_cells=10)
    with pytest.raises(InputError, match="multiple of n_heads"):
        build_study_model(x, n, np.arange(40), 40, d_model=6, n_heads=4)
    with pytest.raises(InputError, match="components"):
        build_study_model(x, n, np.arange(40), 40, d_model=16, n_heads=4)
    with pytest.raises(InputError, match="outside the vocabulary"):
        build_study_model(x, n, np.arange(40) + 10, 40, d_model=4, n_heads=2)
    (tmp_path / "m.npz").write_bytes(b"junk")
    with pytest.raises(InputError, match=r"m\.npz"):
        load_study_model(tmp_path / "m.npz")


def test_study_model_implements_the_model_protocol():
    from geneattn.models.protocol import AttentionModel
    from geneattn.tokenize import TokenizedCells

    rng = np.random.default_rng(0)
    d = 8
    model = StudyModel(rng.normal(size=(12, d)), *np.eye(d)[None].repeat(4, 0), 2, {})
    assert isinstance(model, AttentionModel)
    cells = TokenizedCells(
        tokens=np.array([1, 4, 7, 2, 3], dtype=np.int32),
        offsets=np.array([0, 3, 5], dtype=np.int64),
        cell_ids=np.array(["a", "b"]),
        vocabulary=np.array([f"g{i}" for i in range(12)]),
    )
    emb = model.embed(cells)
    assert emb.shape == (2, d)
    np.testing.assert_allclose(emb, model.interface().encode_batch(cells.tokens, cells.offsets))

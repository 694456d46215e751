"""The rank-aware study model (values scaled by ln((n+1)/(i+1))) against numpy references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geneattn.edits import kernel_moves, perturbed_tokens
from geneattn.models.study import StudyModel
from geneattn.tokenize import TokenizedCells

VOCAB, D, HEADS = 15, 8, 2


def rank_weights(n):
    return np.log((n + 1) / (np.arange(n) + 1))


def make_model(seed=0, scale=2.0, value_rank="log"):
    rng = np.random.default_rng(seed)
    w = [rng.normal(0, 0.5, (D, D)) + np.eye(D) for _ in range(4)]
    return StudyModel(
        rng.normal(0, scale, (VOCAB, D)), *w, n_heads=HEADS, params={"value_rank": value_rank}
    )


def make_cells(seqs):
    lengths = [len(s) for s in seqs]
    return TokenizedCells(
        tokens=np.concatenate([np.asarray(s, dtype=np.int32) for s in seqs]),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        cell_ids=np.array([f"c{i}" for i in range(len(seqs))]),
        vocabulary=np.array([f"ENSG{t:011d}" for t in range(VOCAB)]),
    )


def pooled(model, toks, weights, rows):
    """Mean over ``rows`` of the concatenated heads (values scaled by ``weights``), @ W_O."""
    if len(toks) == 0:
        return np.zeros(D)
    x = model.gene_embeddings[np.asarray(toks, dtype=np.int64)]
    q, k, v = x @ model.w_q, x @ model.w_k, (x * np.asarray(weights)[:, None]) @ model.w_v
    dh = D // HEADS
    out = np.zeros((len(toks), D))
    for h in range(HEADS):
        sl = slice(h * dh, (h + 1) * dh)
        s = q[:, sl] @ k[:, sl].T / np.sqrt(dh)
        p = np.exp(s - s.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True) + 1e-30
        out[:, sl] = p @ v[:, sl]
    rows = np.asarray(rows)
    return (out[rows].mean(axis=0) if rows.size else np.zeros(D)) @ model.w_o


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 9))
def test_embed_scales_values_by_rank(seed, length):
    rng = np.random.default_rng(seed)
    seqs = [rng.choice(VOCAB, size=length, replace=False), [3], []]
    cells = make_cells(seqs)
    model = make_model(seed % 7)
    got = model.embed(cells, n_threads=2)
    for c, seq in enumerate(seqs):
        want = pooled(model, seq, rank_weights(len(seq)), np.arange(len(seq)))
        np.testing.assert_allclose(got[c], want, rtol=1e-9, atol=1e-12)
    plain = make_model(seed % 7, value_rank="none").embed(cells)
    want0 = pooled(model, seqs[0], np.ones(length), np.arange(length))
    np.testing.assert_allclose(plain[0], want0, rtol=1e-9, atol=1e-12)


def expected_edit(model, seq, token, mode, shift):
    """Brute force of one edit: the perturbed gene takes the weight of its new position,
    the others keep theirs; the perturbed gene's row is pooled in neither embedding."""
    seq = np.asarray(seq)
    n = len(seq)
    w = rank_weights(n)
    where = np.flatnonzero(seq == token)
    if mode == "overexpress" and where.size == 0:
        orig = pooled(model, seq, w, np.arange(n))
        toks = np.concatenate([seq[:-1], [token]])
        ws = np.concatenate([w[:-1], [w[0]]])
        return orig, pooled(model, toks, ws, np.arange(n - 1))
    p = int(where[0])
    keep = np.arange(n) != p
    orig = pooled(model, seq, w, np.flatnonzero(keep))
    if mode == "delete":
        return orig, pooled(model, seq[keep], w[keep], np.arange(n - 1))
    target = int(np.flatnonzero(perturbed_tokens(seq, token, mode, shift=shift) == token)[0])
    ws = w.copy()
    ws[p] = np.log((n + 1) / (target + 1))
    return orig, pooled(model, seq, ws, np.flatnonzero(keep))


@pytest.mark.parametrize("mode", ["delete", "overexpress", "inhibit", "activate"])
def test_edits_equal_brute_force(mode):
    rng = np.random.default_rng(5)
    seqs = [rng.choice(VOCAB, size=n, replace=False) for n in (9, 6, 12)]
    cells = make_cells(seqs)
    model = make_model(3)
    edit_cell, edit_token = [], []
    for c, seq in enumerate(seqs):
        for t in (int(seq[1]), int(seq[-2]), 14 if mode == "overexpress" else int(seq[0])):
            if mode == "overexpress" or t in seq:
                edit_cell.append(c)
                edit_token.append(t)
    edit_cell, edit_token = np.array(edit_cell), np.array(edit_token)
    original, perturbed = model.edit_embeddings(cells, edit_cell, edit_token, mode, shift=0.3)
    for e, (c, t) in enumerate(zip(edit_cell, edit_token, strict=True)):
        if mode == "overexpress" and t in seqs[c] and np.flatnonzero(seqs[c] == t)[0] == 0:
            continue  # already first: nothing moves
        want_o, want_p = expected_edit(model, seqs[c], t, mode, 0.3)
        np.testing.assert_allclose(original[e], want_o, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(perturbed[e], want_p, rtol=1e-8, atol=1e-10)


def test_rank_edits_move_cells_only_in_the_rank_aware_model():
    rng = np.random.default_rng(2)
    seqs = [rng.choice(VOCAB, size=10, replace=False) for _ in range(4)]
    cells = make_cells(seqs)
    edit_cell = np.arange(4)
    edit_token = np.array([int(s[2]) for s in seqs])
    for mode in ("inhibit", "activate", "overexpress"):
        o, p = make_model(1).edit_embeddings(cells, edit_cell, edit_token, mode, shift=0.5)
        assert np.all(np.linalg.norm(o - p, axis=1) > 1e-6), mode
        o0, p0 = make_model(1, value_rank="none").edit_embeddings(
            cells, edit_cell, edit_token, mode, shift=0.5
        )
        np.testing.assert_allclose(o0, p0, atol=1e-12)
    # models saved before the option have none
    assert StudyModel(*make_model().__dict__.values()).value_rank == "log"
    old = make_model()
    assert (
        StudyModel(old.gene_embeddings, old.w_q, old.w_k, old.w_v, old.w_o, HEADS, {}).value_rank
        == "none"
    )


def test_kernel_moves_follow_perturbed_tokens():
    seqs = [np.array([4, 2, 9, 7, 1, 0, 3, 8])]
    cells = make_cells(seqs)
    for mode in ("inhibit", "activate", "overexpress"):
        for t in seqs[0]:
            moved = kernel_moves(cells, np.array([0]), np.array([t]), mode, shift=0.25)
            new = perturbed_tokens(seqs[0], int(t), mode, shift=0.25)
            assert moved[0] == int(np.flatnonzero(new == t)[0])
    assert kernel_moves(cells, np.array([0]), np.array([4]), "delete")[0] == -1
    assert kernel_moves(cells, np.array([0]), np.array([13]), "overexpress")[0] == -1
    with pytest.raises(ValueError, match=r"cannot be perturbed \(inhibit\)"):
        kernel_moves(cells, np.array([0]), np.array([13]), "inhibit")

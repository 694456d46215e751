"""Geneformer's shift definitions (geneattn.geneformer_shifts) against plain loops.

The golden comparison with Geneformer itself is in ``test_geneformer_parity.py``; here the
sequence edits and the formulas are checked on small hand-made and random cases.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geneattn import geneformer_shifts as gs
from geneattn.errors import InputError


def _cos(a, b):
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return 0.0 if na == 0 or nb == 0 else float(a @ b / (na * nb))


def test_single_edits_follow_geneformer():
    seq = np.array([10, 11, 12, 13, 14])
    d = gs.single_edit(seq, [2], "delete")
    assert d.perturbed.tolist() == [10, 11, 13, 14] and d.n_front == 0
    o = gs.single_edit(seq, [3], "overexpress")
    assert o.perturbed.tolist() == [13, 10, 11, 12, 14] and o.n_front == 1
    pair = gs.single_edit(seq, [3, 1], "overexpress")
    assert pair.perturbed.tolist() == [11, 13, 10, 12, 14] and pair.n_front == 2
    special = gs.single_edit(np.array([1, 10, 11, 12, 2]), [3], "overexpress", special=True)
    assert special.perturbed.tolist() == [1, 12, 10, 11, 2]
    with pytest.raises(InputError):
        gs.single_edit(np.array([1, 10, 2]), [0], "delete", special=True)
    with pytest.raises(InputError):
        gs.single_edit(seq, [1], "inhibit")


def test_group_overexpress_truncates_and_shortens_the_original_as_geneformer():
    seq = np.arange(10, 20)  # 10 tokens
    # one absent gene into a full cell: the last token overflows; Geneformer's n_overflow
    # is len(perturbed) + added - max_len = 10 + 1 - 10 = 1
    e = gs.group_edit(seq, [99], "overexpress", max_len=10)
    assert e.perturbed.tolist() == [99, *range(10, 19)]
    assert e.original.tolist() == list(range(10, 19))
    # a cell one token short of the limit: no overflow, yet n_overflow = 10 + 1 - 10 = 1
    e = gs.group_edit(seq[:9], [99], "overexpress", max_len=10)
    assert len(e.perturbed) == 10 and e.original.tolist() == list(range(10, 18))
    # present and absent genes together, in list order at the front
    e = gs.group_edit(seq[:5], [12, 99], "overexpress", max_len=10)
    assert e.perturbed.tolist() == [12, 99, 10, 11, 13, 14] and e.removed.tolist() == [2]
    assert gs.group_edit(seq, [12, 99], "delete", max_len=10) is None
    e = gs.group_edit(seq, [15, 12], "delete", max_len=10)
    assert e.perturbed.tolist() == [10, 11, 13, 14, 16, 17, 18, 19]


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(3, 12),
    d=st.integers(1, 6),
    data=st.data(),
    mode=st.sampled_from(["delete", "overexpress"]),
)
def test_gene_cosines_and_cell_shift_match_a_loop(n, d, data, mode):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    seq = rng.permutation(100)[:n] + 5
    p = data.draw(st.integers(1 if mode == "overexpress" else 0, n - 1))
    edit = gs.single_edit(seq, [p], mode)
    o = rng.standard_normal((n, d))
    q = rng.standard_normal((len(edit.perturbed), d))
    got = gs.gene_cosines(o, q, edit)
    rest = [i for i in range(n) if i != p]
    shift = 1 if mode == "overexpress" else 0
    want = [_cos(q[j + shift], o[i]) for j, i in enumerate(rest)]
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert gs.cell_cos_sim(o, q, edit) == pytest.approx(np.mean(want), abs=1e-12)
    goal = rng.standard_normal(d)
    shifts = gs.goal_shifts(o, q, {"g": goal})
    assert shifts["g"] == pytest.approx(_cos(q.mean(0), goal) - _cos(o.mean(0), goal), abs=1e-12)


def test_missing_original_rows_count_as_zero_cosine():
    seq = np.arange(10, 14)
    e = gs.group_edit(seq[:3], [99], "overexpress", max_len=4)  # n_overflow 1: original 2
    o = np.ones((len(e.original), 2))
    q = np.ones((len(e.perturbed), 2))
    np.testing.assert_allclose(gs.gene_cosines(o, q, e), [1.0, 1.0, 0.0])
    assert gs.cell_cos_sim(o, q, e) == pytest.approx(2 / 3)


def test_affected_gene_labels_reproduce_geneformer_filing():
    seq = np.array([10, 11, 12, 13])
    d = gs.single_edit(seq, [1], "delete")
    assert gs.affected_genes(d, 3).tolist() == [10, 12, 13]
    o = gs.single_edit(seq, [2], "overexpress")
    # Geneformer files value j under gene_list[1:] without the gene: one place later
    assert gs.affected_genes(o, 3).tolist() == [11, 13, -1]
    g = gs.group_edit(seq, [12], "delete", max_len=8)
    assert gs.affected_genes(g, 3, group=[12]).tolist() == [10, 11, 13]


def test_cls_shifts_use_the_first_row():
    o = np.array([[1.0, 0.0], [5.0, 5.0], [0.0, 1.0]])
    p = np.array([[0.0, 1.0], [5.0, 5.0], [0.0, 1.0]])
    e = gs.single_edit(np.array([1, 10, 2]), [1], "delete", special=True)
    assert gs.cell_cos_sim(o, p[[0, 2]], e, cls=True) == pytest.approx(0.0)
    s = gs.goal_shifts(o, p, {"x": np.array([0.0, 1.0])}, cls=True)
    assert s["x"] == pytest.approx(1.0)


def test_state_embeddings_exact_mean_and_lower_median():
    x = np.array([[1.0, 4.0], [3.0, 2.0], [2.0, 8.0], [10.0, 0.0]])
    np.testing.assert_allclose(gs.cell_embedding_states(x, "exact_mean"), [4.0, 3.5])
    # torch.median returns the lower of the two middle values
    np.testing.assert_allclose(gs.cell_embedding_states(x, "exact_median"), [2.0, 2.0])
    with pytest.raises(InputError):
        gs.cell_embedding_states(x, "mean")


def test_torch_cosine_of_zero_vectors_is_zero():
    assert gs.torch_cosine(np.zeros(3), np.ones(3)) == 0.0

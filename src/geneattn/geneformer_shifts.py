"""Geneformer's own definitions of perturbation shifts, over per-token hidden states (numpy).

Geneformer's ``InSilicoPerturber`` (upstream commit 05fcbeb) encodes a cell's rank-ordered
tokens and a perturbed copy, and compares the two runs' per-token hidden states of the chosen
layer. These functions reproduce its numbers from hidden states computed by any encoder; the
golden tests (``tests/golden/geneformer``) check them against Geneformer itself. They hold no
model: build the sequences with :func:`single_edit` or :func:`group_edit`, encode
``edit.original`` and ``edit.perturbed``, then call :func:`gene_cosines`,
:func:`cell_cos_sim`, :func:`goal_shifts` and :func:`affected_genes`.

Definitions (``o``: states of the original sequence, ``p``: of the perturbed one):

- **gene cosines** (``emb_mode`` ``cell_and_gene``): ``o`` without the perturbed genes'
  rows, ``p`` without the overexpressed genes moved to the front; then the cosine of row
  ``j`` of one with row ``j`` of the other. Where the original is shorter (overexpress
  after truncation) the missing rows are zeros, whose cosine is 0, as in Geneformer.
- **cell shift** (Geneformer's ``cos_sims`` without goal states): the mean of the gene
  cosines, i.e. a similarity near 1 for a small effect (not ``1 - cos``).
- **goal-state shift** (with ``cell_states_to_model``):
  ``cos(mean(p), s) - cos(mean(o), s)`` for each state embedding ``s``; the means run over
  every token of each sequence, the perturbed gene included.
- With ``<cls>``/``<eos>`` (V2, ``emb_mode`` ``cls``): the cell shift is ``cos(p[0], o[0])``
  and the goal shift uses the ``<cls>`` rows instead of the means; gene cosines leave the
  special tokens out.

Sequences (:func:`single_edit`, Geneformer's ``genes_to_perturb="all"`` with ``combos`` 0 or
1): ``delete`` removes the genes, ``overexpress`` moves them to the front (after ``<cls>``),
in their original order. :func:`group_edit` (a gene list perturbed together):
``overexpress`` removes the listed genes the cell has, puts all of them first (in list order)
and truncates to the model's input size; the original is then shortened by Geneformer's
``n_overflow``, ``len(perturbed) + n_added - max_len``. That count is Geneformer's: it
subtracts the added genes again from the already truncated length, so a cell within
``n_added`` tokens of the limit is shortened once more than needed (kept, to match).

The cosine is ``torch.nn.CosineSimilarity``'s: ``a.b / sqrt(max(|a|^2 |b|^2, eps^2))`` with
``eps = 1e-8``, computed here in float64.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from geneattn.errors import InputError

#: ``eps`` of ``torch.nn.CosineSimilarity``.
COSINE_EPS = 1e-8

EDIT_MODES = ("delete", "overexpress")


def torch_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine along the last axis as ``torch.nn.CosineSimilarity`` computes it (float64).

    Parameters
    ----------
    a, b
        Arrays broadcastable to one shape ``(..., d)``.

    Returns
    -------
    np.ndarray
        ``a.b / sqrt(max(|a|^2 |b|^2, eps^2))``; 0 where either vector is zero.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    dot = (a * b).sum(axis=-1)
    norms = (a * a).sum(axis=-1) * (b * b).sum(axis=-1)
    return dot / np.sqrt(np.maximum(norms, COSINE_EPS**2))


@dataclasses.dataclass(frozen=True)
class GeneformerEdit:
    """One perturbation as Geneformer compares it.

    Attributes
    ----------
    original
        Token ids encoded as the unperturbed cell (shortened by ``n_overflow`` for a group
        overexpress that overflows the input size; else the cell's tokens).
    perturbed
        Token ids of the perturbed cell.
    removed
        Positions in ``original`` of the perturbed genes, left out of the gene comparison.
    n_front
        Leading tokens of ``perturbed`` (after ``<cls>``) left out of it: the overexpressed
        genes.
    special
        Whether the sequences are framed by ``<cls>`` and ``<eos>`` (left out of the gene
        comparison).
    """

    original: np.ndarray
    perturbed: np.ndarray
    removed: np.ndarray
    n_front: int
    special: bool = False


def _check_mode(mode: str) -> None:
    if mode not in EDIT_MODES:
        raise InputError(f"Geneformer's perturbations are delete or overexpress, got {mode!r}")


def single_edit(
    tokens: np.ndarray, positions: Sequence[int], mode: str, *, special: bool = False
) -> GeneformerEdit:
    """Perturb the genes at ``positions`` (one gene, or an anchor and a gene).

    Parameters
    ----------
    tokens
        The cell's input ids (with ``<cls>``/``<eos>`` when ``special``).
    positions
        Distinct positions of the perturbed genes in ``tokens``.
    mode
        ``delete`` or ``overexpress`` (move to the front, in ascending position order).
    special
        ``<cls>`` first and ``<eos>`` last.

    Returns
    -------
    GeneformerEdit
        ``original`` is ``tokens`` itself.
    """
    _check_mode(mode)
    seq = np.asarray(tokens, dtype=np.int64)
    pos = np.unique(np.asarray(positions, dtype=np.int64))
    if len(pos) != len(positions) or pos.size == 0:
        raise InputError("positions to perturb must be distinct and at least one")
    lo, hi = (1, len(seq) - 1) if special else (0, len(seq))
    if pos.min() < lo or pos.max() >= hi:
        raise InputError(f"positions to perturb must lie in {lo} .. {hi - 1}")
    rest = np.delete(seq, pos)
    if mode == "delete":
        perturbed, n_front = rest, 0
    else:
        head = seq[pos]
        perturbed = (
            np.concatenate([rest[:1], head, rest[1:]]) if special else np.concatenate([head, rest])
        )
        n_front = len(pos)
    return GeneformerEdit(seq, perturbed, pos, n_front, special)


def group_edit(
    tokens: np.ndarray,
    group: Sequence[int],
    mode: str,
    *,
    max_len: int,
    special: bool = False,
) -> GeneformerEdit | None:
    """Perturb a list of genes together, as Geneformer's ``genes_to_perturb=[...]``.

    Parameters
    ----------
    tokens
        The cell's input ids.
    group
        Token ids of the genes, in the order given.
    mode
        ``delete`` (the cell must hold every gene of the group, else None: Geneformer skips
        such cells) or ``overexpress`` (any cell; absent genes are added).
    max_len
        The model's input size (``max_position_embeddings``).
    special
        ``<cls>`` first and ``<eos>`` last.

    Returns
    -------
    GeneformerEdit or None
        None for a ``delete`` of genes the cell lacks.
    """
    _check_mode(mode)
    seq = np.asarray(tokens, dtype=np.int64)
    group = [int(t) for t in group]
    if not group:
        raise InputError("a group perturbation needs at least one gene")
    first = {}
    for p, t in enumerate(seq.tolist()):
        first.setdefault(t, p)
    present = [first[t] for t in group if t in first]
    if mode == "delete":
        if len(present) < len(set(group)):
            return None
        return GeneformerEdit(seq, np.delete(seq, present), np.array(present, np.int64), 0, special)
    rest = np.delete(seq, present) if present else seq
    head = np.array(group, dtype=np.int64)
    if special:
        perturbed = np.concatenate([rest[:1], head, rest[1:]])
        if len(perturbed) > max_len:
            perturbed = np.concatenate([perturbed[: max_len - 1], perturbed[-1:]])
    else:
        perturbed = np.concatenate([head, rest])[:max_len]
    n_overflow = len(perturbed) + len(group) - len(present) - max_len
    original = seq
    if n_overflow > 0:
        keep = len(seq) - n_overflow
        original = np.concatenate([seq[: keep - 1], seq[-1:]]) if special else seq[:keep]
    removed = np.array([p for p in present if p < len(original)], dtype=np.int64)
    return GeneformerEdit(original, perturbed, removed, len(group), special)


def _compared(
    original_states: np.ndarray, perturbed_states: np.ndarray, edit: GeneformerEdit
) -> tuple[np.ndarray, np.ndarray]:
    """The rows Geneformer compares: original without removed, perturbed without the front."""
    o = np.asarray(original_states)
    p = np.asarray(perturbed_states)
    if len(o) != len(edit.original) or len(p) != len(edit.perturbed):
        raise InputError(
            f"states have {len(o)} and {len(p)} rows for sequences of {len(edit.original)} "
            f"and {len(edit.perturbed)} tokens"
        )
    o = np.delete(o, edit.removed, axis=0)
    if edit.special:
        return o[1:-1], p[1 + edit.n_front : -1]
    return o, p[edit.n_front :]


def gene_cosines(
    original_states: np.ndarray, perturbed_states: np.ndarray, edit: GeneformerEdit
) -> np.ndarray:
    """Per unperturbed gene, the cosine of its state in the perturbed vs the original run.

    Parameters
    ----------
    original_states, perturbed_states
        ``(len(edit.original), d)`` and ``(len(edit.perturbed), d)`` hidden states.
    edit
        The perturbation.

    Returns
    -------
    np.ndarray
        float64, one value per compared row of the perturbed sequence; 0 where the
        original has no row (it is shorter).
    """
    o, p = _compared(original_states, perturbed_states, edit)
    out = np.zeros(len(p))
    n = min(len(o), len(p))
    out[:n] = torch_cosine(p[:n], o[:n])
    return out


def cell_cos_sim(
    original_states: np.ndarray,
    perturbed_states: np.ndarray,
    edit: GeneformerEdit,
    *,
    cls: bool = False,
) -> float:
    """Geneformer's cell ``cos_sims`` of one perturbation (no goal states).

    Parameters
    ----------
    original_states, perturbed_states
        Hidden states of ``edit.original`` and ``edit.perturbed``.
    edit
        The perturbation.
    cls
        ``emb_mode="cls"`` (V2): the cosine of the two ``<cls>`` states.

    Returns
    -------
    float
        The mean of :func:`gene_cosines` (or the ``<cls>`` cosine); NaN without genes.
    """
    if cls:
        return float(torch_cosine(perturbed_states[0], original_states[0]))
    g = gene_cosines(original_states, perturbed_states, edit)
    return float(g.mean()) if g.size else float("nan")


def goal_shifts(
    original_states: np.ndarray,
    perturbed_states: np.ndarray,
    states: Mapping[str, np.ndarray],
    *,
    cls: bool = False,
) -> dict[str, float]:
    """Geneformer's shift toward each state: ``cos(mean(p), s) - cos(mean(o), s)``.

    Parameters
    ----------
    original_states, perturbed_states
        Hidden states of ``edit.original`` and ``edit.perturbed`` (every row is pooled).
    states
        State embeddings (e.g. ``{"NAT": goal, "Blood": alt}``), each ``(d,)``.
    cls
        Use the ``<cls>`` rows (row 0) instead of the means.

    Returns
    -------
    dict[str, float]
        The shift toward every state.
    """
    if cls:
        o, p = np.asarray(original_states)[0], np.asarray(perturbed_states)[0]
    else:
        o = np.asarray(original_states, dtype=np.float64).mean(axis=0)
        p = np.asarray(perturbed_states, dtype=np.float64).mean(axis=0)
    return {k: float(torch_cosine(p, s) - torch_cosine(o, s)) for k, s in states.items()}


def cell_embedding_states(cell_embeddings: np.ndarray, summary_stat: str) -> np.ndarray:
    """A state's embedding from its cells' embeddings, as ``EmbExtractor.get_state_embs``.

    Parameters
    ----------
    cell_embeddings
        ``(n_cells, d)`` cell embeddings of the state's cells.
    summary_stat
        ``exact_mean`` or ``exact_median`` (for an even count, the lower middle value,
        as ``torch.median``).

    Returns
    -------
    np.ndarray
        ``(d,)`` float64.
    """
    x = np.asarray(cell_embeddings, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise InputError("a state embedding needs at least one cell embedding")
    if summary_stat == "exact_mean":
        return x.mean(axis=0)
    if summary_stat == "exact_median":
        return np.sort(x, axis=0)[(len(x) - 1) // 2]
    raise InputError(f"summary_stat must be exact_mean or exact_median, got {summary_stat!r}")


def affected_genes(edit: GeneformerEdit, n_values: int, *, group: Sequence[int] | None = None):
    """The gene each of :func:`gene_cosines`' values is filed under, as Geneformer files it.

    Parameters
    ----------
    edit
        The perturbation.
    n_values
        Number of gene cosines.
    group
        For a group perturbation, its tokens: the labels are the original's tokens other
        than those. None for :func:`single_edit` perturbations.

    Returns
    -------
    np.ndarray
        int64 token of each value; ``-1`` for values Geneformer files under no gene.

    Notes
    -----
    For a single-gene ``overexpress``, Geneformer labels the values with the cell's genes
    after the first one (its ``gene_list[1:]``) without the perturbed gene, so value ``j``
    is filed under the gene one place later than the one compared, and the last value is
    dropped. That is Geneformer's behaviour and reproduced here.
    """
    seq = edit.original[1:-1] if edit.special else edit.original
    if group is not None:
        labels = seq[~np.isin(seq, np.asarray(list(group), dtype=np.int64))]
    else:
        inner = edit.removed - (1 if edit.special else 0)
        if edit.n_front:
            labels = np.delete(seq, inner)[edit.n_front :]
        else:
            labels = np.delete(seq, inner)
    out = np.full(n_values, -1, dtype=np.int64)
    n = min(n_values, len(labels))
    out[:n] = labels[:n]
    return out

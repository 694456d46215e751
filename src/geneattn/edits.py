"""How an in-silico perturbation edits a cell's rank-ordered tokens.

Geneformer's ``InSilicoPerturber`` deletes a gene's token or moves it to the front
("overexpress"); its ``inhibit`` and ``activate`` modes are left "under development" and
are rank shifts here: the token moves down (inhibit) or up (activate) by a fraction of the
cell's sequence. :func:`perturbed_tokens` gives the edited sequence (what a model with
positions re-encodes), :func:`plan_edits` which cells each perturbation applies to, and
:func:`kernel_edits` the same edits as an order-free attention model sees them (keys
removed and added), for the study model's incremental kernel.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from geneattn.tokenize import TokenizedCells

__all__ = ["MODES", "EditPlan", "kernel_edits", "kernel_moves", "perturbed_tokens", "plan_edits"]

MODES = ("delete", "overexpress", "inhibit", "activate")


def perturbed_tokens(
    tokens: np.ndarray, token: int, mode: str, *, shift: float = 0.25
) -> np.ndarray:
    """One cell's rank-ordered tokens after perturbing ``token``.

    Parameters
    ----------
    tokens
        The cell's tokens, highest rank first.
    token
        The token perturbed.
    mode
        ``delete`` (remove it), ``overexpress`` (move it to the front; when absent, insert
        it there and drop the last token), ``inhibit`` / ``activate`` (move it down / up by
        ``round(shift * len(tokens))`` positions, at most to the end / front).
    shift
        Fraction of the sequence a rank shift moves the token.

    Returns
    -------
    np.ndarray
        The perturbed sequence.

    Raises
    ------
    ValueError
        Unknown mode, or ``token`` absent for a mode other than ``overexpress``.
    """
    seq = np.asarray(tokens, dtype=np.int64)
    if mode not in MODES:
        raise ValueError(f"unknown perturbation mode {mode!r} (choose from {', '.join(MODES)})")
    where = np.flatnonzero(seq == token)
    if mode == "overexpress":
        if where.size == 0:
            return np.concatenate([[token], seq[:-1]]) if seq.size else seq.copy()
        return np.concatenate([[token], np.delete(seq, where[0])])
    if where.size == 0:
        raise ValueError(f"token {token} is not in the cell, so it cannot be perturbed ({mode})")
    p = int(where[0])
    rest = np.delete(seq, p)
    if mode == "delete":
        return rest
    step = round(shift * seq.size)
    target = min(p + step, seq.size - 1) if mode == "inhibit" else max(p - step, 0)
    return np.insert(rest, target, token)


@dataclasses.dataclass(frozen=True)
class EditPlan:
    """Perturbations of cells: which token is perturbed in which cell, and the same edits
    as the study model's kernel sees them (see ``mha_edit_effects`` and
    :func:`kernel_edits`).

    Attributes
    ----------
    token
        The perturbed token of each edit.
    cell, remove, add, exclude
        int64 arrays: the cell (sorted), the position whose key is removed, the token whose
        key is added, the position left out of both poolings (-1: none).
    """

    token: np.ndarray
    cell: np.ndarray
    remove: np.ndarray
    add: np.ndarray
    exclude: np.ndarray


def kernel_edits(
    cells: TokenizedCells, edit_cell: np.ndarray, edit_token: np.ndarray, mode: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The keys an order-free attention model removes and adds for each edit.

    ``delete`` removes the token's key and leaves it out of the pooling; ``overexpress`` of
    an absent token adds its key and removes the cell's last one (the sequence keeps its
    length); every other edit only moves a token, which an order-free model does not see,
    so it removes and adds nothing and leaves the token out of the pooling.

    Parameters
    ----------
    cells
        The cells.
    edit_cell, edit_token
        Cell index and perturbed token of each edit.
    mode
        One of :data:`MODES`.

    Returns
    -------
    tuple of np.ndarray
        int64 ``remove`` (position, -1: none), ``add`` (token, -1: none) and ``exclude``
        (position left out of both poolings, -1: none), one entry per edit.

    Raises
    ------
    ValueError
        Unknown mode, or a token absent from its cell for a mode other than ``overexpress``.
    """
    if mode not in MODES:
        raise ValueError(f"unknown perturbation mode {mode!r} (choose from {', '.join(MODES)})")
    n = len(edit_cell)
    remove = np.full(n, -1, dtype=np.int64)
    add = np.full(n, -1, dtype=np.int64)
    exclude = np.full(n, -1, dtype=np.int64)
    for e, (c, t) in enumerate(
        zip(np.asarray(edit_cell).tolist(), np.asarray(edit_token).tolist(), strict=True)
    ):
        seq = cells.cell(int(c))
        where = np.flatnonzero(seq == t)
        if where.size == 0:
            if mode != "overexpress":
                raise ValueError(
                    f"token {t} is not in cell {c}, so it cannot be perturbed ({mode})"
                )
            remove[e], add[e] = len(seq) - 1, t
            continue
        p = int(where[0])
        exclude[e] = p
        if mode == "delete":
            remove[e] = p
    return remove, add, exclude


def plan_edits(cells: TokenizedCells, tokens: Sequence[int], mode: str) -> EditPlan:
    """The edits perturbing each of ``tokens`` in every cell it applies to.

    ``delete`` applies to the cells expressing the token that hold another token too;
    ``inhibit`` and ``activate`` to the cells expressing it; ``overexpress`` to every cell
    with at least one token.

    Parameters
    ----------
    cells
        The cells.
    tokens
        The tokens to perturb.
    mode
        One of :data:`MODES`.

    Returns
    -------
    EditPlan
        Edits sorted by cell, then by the order of ``tokens``.
    """
    if mode not in MODES:
        raise ValueError(f"unknown perturbation mode {mode!r} (choose from {', '.join(MODES)})")
    wanted = [int(t) for t in tokens]
    order = {t: i for i, t in enumerate(wanted)}
    rows: list[tuple[int, int, int]] = []
    for c in range(cells.n_cells):
        seq = cells.cell(c)
        n = len(seq)
        if n == 0:
            continue
        present = {int(t) for t in seq.tolist() if int(t) in order}
        for t in wanted:
            if mode == "overexpress" or (t in present and (mode != "delete" or n > 1)):
                rows.append((c, order[t], t))
    rows.sort(key=lambda r: (r[0], r[1]))
    table = np.array(rows, dtype=np.int64).reshape(-1, 3)
    cell, token = table[:, 0].copy(), table[:, 2].copy()
    remove, add, exclude = kernel_edits(cells, cell, token, mode)
    return EditPlan(token=token, cell=cell, remove=remove, add=add, exclude=exclude)


def kernel_moves(
    cells: TokenizedCells,
    edit_cell: np.ndarray,
    edit_token: np.ndarray,
    mode: str,
    *,
    shift: float = 0.25,
) -> np.ndarray:
    """New position of each edit's moved token, as :func:`perturbed_tokens` moves it.

    ``overexpress`` of a present token moves it to position 0; ``inhibit`` / ``activate``
    move it down / up by ``round(shift * n)`` positions (at most to the end / front);
    ``delete`` and ``overexpress`` of an absent token move nothing (-1). A rank-aware model
    (values scaled by rank) gives the moved token's value the weight of its new position.

    Returns
    -------
    np.ndarray
        int64 new position per edit, -1 where nothing moves.
    """
    if mode not in MODES:
        raise ValueError(f"unknown perturbation mode {mode!r} (choose from {', '.join(MODES)})")
    out = np.full(len(edit_cell), -1, dtype=np.int64)
    if mode == "delete":
        return out
    for e, (c, t) in enumerate(
        zip(np.asarray(edit_cell).tolist(), np.asarray(edit_token).tolist(), strict=True)
    ):
        seq = cells.cell(int(c))
        where = np.flatnonzero(seq == t)
        if where.size == 0:
            if mode != "overexpress":
                raise ValueError(
                    f"token {t} is not in cell {c}, so it cannot be perturbed ({mode})"
                )
            continue
        p, n = int(where[0]), len(seq)
        if mode == "overexpress":
            out[e] = 0
        else:
            step = round(shift * n)
            out[e] = min(p + step, n - 1) if mode == "inhibit" else max(p - step, 0)
    return out

"""Module eigengenes and kME a block of cells at a time, for studies larger than memory.

:func:`geneattn.module_analysis.module_eigengenes` and
:func:`geneattn.module_analysis.module_kme` take a dense cells x genes matrix of the module
genes, which at a million cells and two thousand genes is 16 GB. :func:`blocked_eigengenes`
gives the same results from blocks of raw counts in two passes, holding a block, each
module's ``g x g`` Gram matrix and the ``(cells, modules)`` scores:

1. per gene, the sum, the sum of squares and the largest absolute value, and per module
   the Gram matrix of its genes' log-normalised expression;
2. each module's first principal component from its z-scored Gram matrix (``eigh``, whose
   largest eigenvalue is the SVD's ``s[0] ** 2``), then per block the cells' scores on it,
   their mean module z-score (the sign) and ``Z^T score`` (the kME).

The results equal the dense code's up to round-off (``tests/test_module_blocks.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import scipy.sparse as sp

from geneattn.module_analysis import module_ids

#: ``blocks()`` yields ``(start, stop, raw counts)`` for consecutive blocks of every cell.
Blocks = Callable[[], Iterator[tuple[int, int, sp.csr_matrix]]]


def _module_blocks(
    blocks: Blocks, rows: np.ndarray, columns: np.ndarray, n_counts: np.ndarray | None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(positions among rows, dense log-normalised expression of columns)`` per block."""
    from geneattn.diffusion import log_normalise

    rows = np.asarray(rows, dtype=np.int64)
    for start, stop, x in blocks():
        lo, hi = np.searchsorted(rows, [start, stop])
        if lo == hi:
            continue
        local = rows[lo:hi] - start
        totals = None if n_counts is None else np.asarray(n_counts)[start:stop][local]
        block = log_normalise(sp.csr_matrix(x)[local], n_counts=totals)
        yield np.arange(lo, hi), block[:, columns].toarray()


def blocked_eigengenes(
    blocks: Blocks,
    *,
    rows: np.ndarray,
    columns: np.ndarray,
    modules: np.ndarray,
    n_counts: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Eigengenes, variance explained and kME of ``rows`` from blocks of raw counts.

    Parameters
    ----------
    blocks
        Called once per pass (two); yields ``(start, stop, counts)`` for consecutive blocks
        of every cell (:func:`geneattn.tokenize_stream.h5ad_blocks`).
    rows
        The cells analysed (ascending row numbers).
    columns
        The genes' columns in the counts.
    modules
        Module of each of those genes (0 = unassigned).
    n_counts
        Each cell's total counts (every cell), as for
        :func:`geneattn.diffusion.log_normalise`; None: the row sums.

    Returns
    -------
    tuple
        ``(ids, eigengenes, variance_explained, kme)`` as
        :func:`geneattn.module_analysis.module_eigengenes` and
        :func:`geneattn.module_analysis.module_kme` give them for the dense expression.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if np.any(np.diff(rows) <= 0):
        raise ValueError("rows must be ascending and distinct")
    modules = np.asarray(modules, dtype=np.int64)
    ids = module_ids(modules)
    members = [np.flatnonzero(modules == m) for m in ids]
    n, g = len(rows), len(columns)

    total, squares, largest = np.zeros(g), np.zeros(g), np.zeros(g)
    grams = [np.zeros((len(j), len(j))) for j in members]
    for _, x in _module_blocks(blocks, rows, columns, n_counts):
        total += x.sum(axis=0)
        squares += (x * x).sum(axis=0)
        np.maximum(largest, np.abs(x).max(axis=0), out=largest)
        for gram, j in zip(grams, members, strict=True):
            gram += x[:, j].T @ x[:, j]
    mean = total / n
    sd = np.sqrt(np.maximum(squares / n - mean * mean, 0.0))
    scale = np.zeros(g)
    varies = sd > 1e-12 * (1.0 + largest)
    scale[varies] = 1.0 / sd[varies]

    vectors, explained = [], np.zeros(len(ids))
    for c, (gram, j) in enumerate(zip(grams, members, strict=True)):
        centred = gram - n * np.outer(mean[j], mean[j])
        zz = centred * np.outer(scale[j], scale[j])
        values, vecs = np.linalg.eigh(zz)
        trace = float(np.clip(values, 0.0, None).sum())
        vectors.append(vecs[:, -1] if trace > 0 else None)
        explained[c] = max(values[-1], 0.0) / trace if trace > 0 else 0.0

    score, sign_sum = np.zeros((n, len(ids))), np.zeros(len(ids))
    zt_score, zt_one = np.zeros((g, len(ids))), np.zeros(g)
    for where, x in _module_blocks(blocks, rows, columns, n_counts):
        z = (x - mean) * scale
        zt_one += z.sum(axis=0)
        for c, (v, j) in enumerate(zip(vectors, members, strict=True)):
            if v is None:
                continue
            s = z[:, j] @ v
            score[where, c] = s
            sign_sum[c] += float(s @ z[:, j].mean(axis=1))
        zt_score += z.T @ score[where]

    eig = np.zeros((n, len(ids)))
    kme = np.zeros((g, len(ids)))
    for c, v in enumerate(vectors):
        if v is None:
            continue
        sign = -1.0 if sign_sum[c] < 0 else 1.0
        s = sign * score[:, c]
        mu, sigma = s.mean(), s.std()
        if sigma <= 0:
            continue
        eig[:, c] = (s - mu) / sigma
        # kME: Z^T e / n with e the eigengene z-scored (it already is, up to round-off)
        e_sd = eig[:, c].std()
        if e_sd > 1e-12 * (1.0 + np.abs(eig[:, c]).max()):
            e_mean = eig[:, c].mean()
            zt_e = (sign * zt_score[:, c] - mu * zt_one) / sigma - e_mean * zt_one
            kme[:, c] = zt_e / e_sd / n
    return ids, eig, explained, np.clip(kme, -1.0, 1.0)

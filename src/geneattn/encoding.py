"""Rank-value encoding of one cell (seed 000, sections 1.1 and 6.1)."""

from __future__ import annotations

import numpy as np

_EPS = 1e-10


def rank_value_encode(
    expression: np.ndarray,
    global_medians: np.ndarray | None = None,
) -> np.ndarray:
    """Rank the expressed genes of one cell, Geneformer style.

    Each gene is weighted by ``1 / (median + 1e-10)`` (uniform weight 1 when
    ``global_medians`` is None); genes with ``expression <= 0`` are left out and the rest
    are sorted by descending weighted expression.

    Parameters
    ----------
    expression
        Raw counts or normalised expression of one cell, shape ``(n_genes,)``.
    global_medians
        Corpus median of each gene, shape ``(n_genes,)``, or None for uniform weighting.

    Returns
    -------
    np.ndarray
        int64 gene indices, highest weighted expression first. Ties keep ascending gene
        index (a stable sort), so the result is deterministic. Empty when nothing is
        expressed.

    Examples
    --------
    >>> rank_value_encode(np.array([0.0, 5.0, 1.0, 10.0, 3.0])).tolist()
    [3, 1, 4, 2]
    """
    expression = np.asarray(expression, dtype=np.float64).ravel()
    if global_medians is None:
        weighted = expression
    else:
        weighted = expression * (1.0 / (np.asarray(global_medians, dtype=np.float64) + _EPS))
    expressed = np.flatnonzero(expression > 0)
    if expressed.size == 0:
        return np.empty(0, dtype=np.int64)
    order = np.argsort(-weighted[expressed], kind="stable")
    return expressed[order].astype(np.int64)

"""The attention stage: per-cell attention summed into gene x gene arrays.

Each cell's head-averaged multi-head attention (the model's single layer) is computed and
aggregated over a gene *universe* in one Rust call
(:func:`geneattn._kernels.mha_aggregate_cells`): no per-cell ``n x n`` matrix reaches Python
and memory stays flat in the number of cells. The result is an
:class:`~geneattn.attention_sums.AttentionSums`, the file the network stage reads.

The universe is chosen once from all cells of the study (:mod:`geneattn.universe`), so every
condition and every shard of a condition's cells share it and shards add up
(:func:`~geneattn.attention_sums.gather_attention_sums`).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import TYPE_CHECKING

import numpy as np

from geneattn.attention_sums import AttentionSums
from geneattn.cells import presence_matrix
from geneattn.errors import InputError
from geneattn.tokenize import TokenizedCells, subset_cells
from geneattn.universe import choose_universe

if TYPE_CHECKING:
    from geneattn.models.protocol import AttentionModel

# choose_universe (geneattn.universe) and presence_matrix (geneattn.cells) stay importable
# from here, where the benchmarks import them.
__all__ = ["aggregate_attention", "choose_universe", "presence_matrix", "subset_cells"]

#: ``progress(done, total)`` after each chunk of cells.
Progress = Callable[[int, int], None]


def aggregate_attention(
    cells: TokenizedCells,
    model: AttentionModel,
    universe_tokens: np.ndarray,
    *,
    n_threads: int = 1,
    condition: str = "all",
    gene_symbols: np.ndarray | None = None,
    progress: Progress | None = None,
    chunks: int = 10,
) -> AttentionSums:
    """Sum the head-averaged attention of ``cells`` over the gene universe.

    Parameters
    ----------
    cells
        The cells (of one condition, or one shard of it).
    model
        The attention model (the study model's single layer, or a checkpoint's
        ``attention_layer`` averaged over ``attention_heads``).
    universe_tokens
        Token ids of the universe genes, unique (from :func:`choose_universe`).
    n_threads
        Rayon threads; the result is bit-identical for any value.
    condition
        Condition label stored with the sums.
    gene_symbols
        Symbol of each universe gene (``""`` where unknown); None gives ``""`` everywhere.
    progress
        Called as ``progress(done, total)`` after each of ``chunks`` chunks of cells.
    chunks
        Kernel calls the cells are split into (for progress only: the sums are the same).

    Returns
    -------
    AttentionSums
        Sums, co-occurrence counts, incoming attention and gene presence over the cells.

    Raises
    ------
    InputError
        If the universe is empty, repeats a token or names a token outside the model's
        vocabulary, or ``gene_symbols`` does not match it.
    """
    universe_tokens = np.asarray(universe_tokens, dtype=np.int64)
    vocab = len(cells.vocabulary)
    g = len(universe_tokens)
    if g == 0 or len(np.unique(universe_tokens)) != g:
        raise InputError("the gene universe must be non-empty without repeated tokens")
    if universe_tokens.min() < 0 or universe_tokens.max() >= vocab:
        raise InputError(f"a universe token is outside the vocabulary (0..{vocab - 1})")
    if gene_symbols is None:
        gene_symbols = np.full(g, "", dtype=str)
    gene_symbols = np.asarray(gene_symbols).astype(str)
    if gene_symbols.shape != (g,):
        raise InputError(f"gene_symbols has shape {gene_symbols.shape}, expected ({g},)")

    sums = np.zeros((g, g), dtype=np.float64)
    incoming = np.zeros(g, dtype=np.float64)
    n = cells.n_cells
    bounds = np.unique(np.linspace(0, n, max(1, chunks) + 1).astype(np.int64))
    for c0, c1 in pairwise(bounds):
        chunk = subset_cells(cells, np.arange(c0, c1))
        model.add_attention_sums(chunk, universe_tokens, sums, incoming, n_threads=int(n_threads))
        if progress is not None:
            progress(int(c1), n)

    present = presence_matrix(cells, universe_tokens, vocab)
    counts = np.asarray((present.T @ present).toarray(), dtype=np.int64)
    return AttentionSums(
        gene_ids=np.asarray(cells.vocabulary)[universe_tokens].astype(str),
        gene_symbols=gene_symbols,
        sums=sums,
        counts=counts,
        incoming=incoming,
        gene_cells=np.diagonal(counts).copy(),
        n_cells=n,
        condition=condition,
    )

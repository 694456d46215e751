"""The gene universe of a study chosen a block of cells at a time.

:func:`geneattn.universe.choose_universe` and
:func:`geneattn.universe.highly_variable_universe` need every cell in memory (all tokens;
the whole count matrix for scanpy's ``highly_variable_genes``). The functions here read
the tokens and the counts in blocks of cells and give the same universe:

* :func:`token_frequencies`: in how many cells each token occurs, exact integer counts
  summed over blocks of ``tokens.npz`` (:func:`geneattn.tokenize.load_tokens` with a slice
  of cells);
* :func:`seurat_dispersions`: scanpy's ``flavor="seurat"`` statistics (mean and dispersion
  of the normalised counts, normalised within 20 bins of mean) from per-gene sums over
  blocks of counts, added in the order scanpy's kernel adds them
  (:class:`geneattn.column_sums.ColumnMoments`), so the means and dispersions equal
  scanpy's bit for bit in the same process (same numba thread count);
* :func:`frequent_universe` and :func:`variable_universe`: the two universes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from geneattn.column_sums import ColumnMoments
from geneattn.errors import InputError

log = logging.getLogger(__name__)

Blocks = Callable[[], Iterator[tuple[int, int, sp.csr_matrix]]]


def token_frequencies(
    tokens: str | Path, *, chunk_cells: int
) -> tuple[np.ndarray, int, np.ndarray]:
    """In how many cells of a tokens file each token occurs.

    Parameters
    ----------
    tokens
        A ``tokens.npz``.
    chunk_cells
        Cells read at a time.

    Returns
    -------
    tuple
        ``(frequency, n_cells, vocabulary)``: int64 count per token id (a token repeated
        in a cell counts once), the number of cells, and the file's vocabulary.
    """
    from geneattn.cells import presence_matrix
    from geneattn.io.chunks import chunk_bounds
    from geneattn.tokenize import load_cell_ids, load_tokens

    n_cells = len(load_cell_ids(tokens))
    first = load_tokens(tokens, cells=slice(0, min(1, n_cells)))
    vocabulary = np.asarray(first.vocabulary)
    n_tokens = len(vocabulary)
    frequency = np.zeros(n_tokens, dtype=np.int64)
    for start, stop in chunk_bounds(n_cells, chunk_cells):
        cells = load_tokens(tokens, cells=slice(start, stop))
        if len(cells.tokens) and int(cells.tokens.max()) >= n_tokens:
            raise InputError(f"a token is outside the vocabulary (0..{n_tokens - 1})", tokens)
        present = presence_matrix(cells, np.arange(n_tokens), n_tokens)
        frequency += np.bincount(present.indices, minlength=n_tokens)
    return frequency, n_cells, vocabulary


def frequent_tokens(
    frequency: np.ndarray, n_cells: int, *, min_cells: int, max_genes: int
) -> np.ndarray:
    """The most frequent tokens, as :func:`geneattn.universe.choose_universe` orders them.

    Parameters
    ----------
    frequency
        Cells per token id (:func:`token_frequencies`).
    n_cells
        Cells counted (for the error).
    min_cells, max_genes
        As for ``choose_universe``.

    Returns
    -------
    np.ndarray
        int64 token ids, by frequency descending then token id ascending.
    """
    if min_cells < 1 or max_genes < 1:
        raise InputError(f"min_cells ({min_cells}) and max_genes ({max_genes}) must be >= 1")
    ok = np.flatnonzero(frequency >= min_cells)
    if len(ok) == 0:
        raise InputError(f"no gene is present in at least {min_cells} of the {n_cells} cells")
    order = np.lexsort((ok, -frequency[ok]))
    return ok[order][:max_genes].astype(np.int64)


def frequent_universe(
    tokens: str | Path, *, min_cells: int, max_genes: int, chunk_cells: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`geneattn.universe.choose_universe` of every cell of a tokens file.

    Returns
    -------
    tuple
        ``(universe, vocabulary)``.
    """
    frequency, n_cells, vocabulary = token_frequencies(tokens, chunk_cells=chunk_cells)
    universe = frequent_tokens(frequency, n_cells, min_cells=min_cells, max_genes=max_genes)
    return universe, vocabulary


def seurat_dispersions(
    blocks: Blocks, columns: np.ndarray, *, n_top_genes: int, n_bins: int = 20
) -> pd.DataFrame:
    """scanpy ``highly_variable_genes(flavor="seurat")`` of normalised, logged counts.

    Each block of raw counts is restricted to ``columns``, normalised to 10,000 counts per
    cell over those columns and logged (``sc.pp.normalize_total``, ``sc.pp.log1p`` on the
    block: they work cell by cell), then ``expm1`` of it is summed per gene.

    Parameters
    ----------
    blocks
        Yields ``(start, stop, counts)`` for consecutive blocks of raw counts.
    columns
        Columns of the counts taken.
    n_top_genes
        Genes marked ``highly_variable``.
    n_bins
        Bins of mean expression.

    Returns
    -------
    pandas.DataFrame
        One row per column: ``means``, ``dispersions``, ``mean_bin``, ``dispersions_norm``,
        ``highly_variable``, as scanpy computes them.
    """
    import anndata as ad
    import scanpy as sc

    columns = np.asarray(columns, dtype=np.int64)
    moments = ColumnMoments(len(columns))
    for _, _, x in blocks():
        block = ad.AnnData(X=sp.csr_matrix(x, dtype=np.float64)[:, columns])
        sc.pp.normalize_total(block, target_sum=1e4)
        sc.pp.log1p(block)
        values = sp.csr_matrix(block.X)
        values = sp.csr_matrix(
            (np.expm1(values.data), values.indices, values.indptr), shape=values.shape
        )
        moments.add(values)
    if moments.n_rows == 0:
        raise InputError("no cell to choose variable genes from")
    mean, var = moments.mean_var()
    mean[mean == 0] = 1e-12
    dispersion = var / mean
    dispersion[dispersion == 0] = np.nan
    dispersion = np.log(dispersion)
    mean = np.log1p(mean)
    df = pd.DataFrame({"means": mean, "dispersions": dispersion})
    df["mean_bin"] = pd.cut(df["means"], bins=n_bins)
    stats = df.groupby("mean_bin", observed=True)["dispersions"].agg(avg="mean", dev="std")
    single = stats["dev"].isnull()
    stats.loc[single, "dev"] = stats.loc[single, "avg"]
    stats.loc[single, "avg"] = 0
    per_gene = stats.loc[df["mean_bin"]].set_index(df.index)
    df["dispersions_norm"] = (df["dispersions"] - per_gene["avg"]) / per_gene["dev"]
    norm = df["dispersions_norm"].to_numpy()
    finite = norm[~np.isnan(norm)]
    n = min(int(n_top_genes), len(columns), finite.size)
    cutoff = np.sort(finite)[::-1][n - 1] if n > 0 else np.inf
    df["highly_variable"] = np.nan_to_num(norm, nan=-np.inf) >= cutoff
    return df


def variable_universe(
    tokens: str | Path,
    blocks: Blocks,
    gene_ids: np.ndarray,
    *,
    min_cells: int,
    max_genes: int,
    chunk_cells: int,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`geneattn.universe.highly_variable_universe` from blocks of cells.

    Parameters
    ----------
    tokens
        ``tokens.npz`` of every cell (presence of each token).
    blocks
        Blocks of the raw counts the tokens came from (e.g.
        :func:`geneattn.tokenize_stream.h5ad_blocks` of ``qc.h5ad``).
    gene_ids
        Ensembl ID of each column of the counts ("" when unmapped).
    min_cells, max_genes
        As for ``highly_variable_universe``.
    chunk_cells
        Cells of the tokens read at a time.

    Returns
    -------
    tuple
        ``(universe, vocabulary)``: int64 token ids by normalised dispersion descending,
        then token id ascending.
    """
    frequency, n_cells, vocabulary = token_frequencies(tokens, chunk_cells=chunk_cells)
    frequent = frequent_tokens(frequency, n_cells, min_cells=min_cells, max_genes=len(vocabulary))
    token_of = {str(g): t for t, g in enumerate(vocabulary.astype(str))}
    column_token = np.array([token_of.get(str(g), -1) for g in gene_ids], dtype=np.int64)
    allowed = np.isin(column_token, frequent)
    if not allowed.any():
        raise InputError(f"no counted gene is a token present in at least {min_cells} cells")
    columns = np.flatnonzero(allowed)
    df = seurat_dispersions(blocks, columns, n_top_genes=min(max_genes, len(columns)))
    # scanpy stores dispersions_norm as float32 in var (inplace=True), and the in-memory
    # universe ranks those: ties at float32 precision are broken by token id there too
    dispersion = df["dispersions_norm"].to_numpy().astype(np.float32).astype(np.float64)
    chosen = df["highly_variable"].to_numpy(dtype=bool)
    best: dict[int, float] = {}
    for t, disp, keep in zip(
        column_token[columns].tolist(), dispersion.tolist(), chosen.tolist(), strict=True
    ):
        if keep:
            best[t] = max(best.get(t, -np.inf), disp if np.isfinite(disp) else -np.inf)
    order = sorted(best, key=lambda t: (-best[t], t))
    return np.asarray(order[:max_genes], dtype=np.int64), vocabulary

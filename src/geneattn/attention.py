"""The attention stage: per-cell attention summed into gene x gene arrays.

Each cell's head-averaged multi-head attention (the model's single layer) is computed and
aggregated over a gene *universe* in one Rust call
(:func:`geneattn._kernels.mha_aggregate_cells`): no per-cell ``n x n`` matrix reaches Python
and memory stays flat in the number of cells. The result is an
:class:`~geneattn.attention_sums.AttentionSums`, the file the network stage reads.

The universe is chosen once from all cells of the study (:func:`choose_universe`), so every
condition and every shard of a condition's cells share it and shards add up
(:func:`~geneattn.attention_sums.gather_attention_sums`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from geneattn.attention_sums import AttentionSums
from geneattn.errors import InputError
from geneattn.shards import shard_bounds
from geneattn.tokenize import TokenizedCells, subset_cells

if TYPE_CHECKING:
    from geneattn.models.protocol import AttentionModel

__all__ = [
    "aggregate_attention",
    "choose_universe",
    "load_universe",
    "presence_matrix",
    "save_universe",
    "shard_bounds",
    "subset_cells",
    "symbols_for",
]

#: ``progress(done, total)`` after each chunk of cells.
Progress = Callable[[int, int], None]


def presence_matrix(cells: TokenizedCells, tokens: np.ndarray, n_tokens: int) -> sp.csr_matrix:
    """Which of ``tokens`` each cell holds.

    Parameters
    ----------
    cells
        Tokenized cells.
    tokens
        Token ids of the columns, unique.
    n_tokens
        Number of token ids (every id in ``cells`` and ``tokens`` is below it).

    Returns
    -------
    sp.csr_matrix
        ``cells x len(tokens)`` int64 with entries 0/1 (a token repeated in a cell counts once).
    """
    column = np.full(n_tokens, -1, dtype=np.int64)
    column[tokens] = np.arange(len(tokens))
    rows = np.repeat(np.arange(cells.n_cells, dtype=np.int64), np.diff(cells.offsets))
    cols = column[cells.tokens]
    keep = cols >= 0
    p = sp.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.int64), (rows[keep], cols[keep])),
        shape=(cells.n_cells, len(tokens)),
    )
    p.sum_duplicates()
    p.data[:] = 1
    return p


def choose_universe(cells: TokenizedCells, *, min_cells: int, max_genes: int) -> np.ndarray:
    """The gene universe: the most frequent tokens.

    Parameters
    ----------
    cells
        All cells of the study.
    min_cells
        A token must be present in at least this many cells.
    max_genes
        At most this many tokens are kept (the most frequent; ties by ascending token id).

    Returns
    -------
    np.ndarray
        int64 token ids, by frequency descending then token id ascending.

    Raises
    ------
    InputError
        If ``min_cells`` or ``max_genes`` is below 1, or no token qualifies.
    """
    if min_cells < 1 or max_genes < 1:
        raise InputError(f"min_cells ({min_cells}) and max_genes ({max_genes}) must be >= 1")
    n_tokens = int(cells.tokens.max()) + 1 if len(cells.tokens) else 0
    present = presence_matrix(cells, np.arange(n_tokens), n_tokens)
    freq = np.asarray(present.sum(axis=0)).ravel()
    ok = np.flatnonzero(freq >= min_cells)
    if len(ok) == 0:
        raise InputError(f"no gene is present in at least {min_cells} of the {cells.n_cells} cells")
    order = np.lexsort((ok, -freq[ok]))
    return ok[order][:max_genes].astype(np.int64)


def highly_variable_universe(
    cells: TokenizedCells,
    counts: sp.spmatrix | np.ndarray,
    gene_ids: np.ndarray,
    *,
    min_cells: int,
    max_genes: int,
) -> np.ndarray:
    """The gene universe: the most variable genes of the study, as tokens.

    scanpy's ``highly_variable_genes`` (``flavor="seurat"``: dispersion of the
    log-normalised counts, normalised within bins of mean expression) over the genes that
    are tokens present in at least ``min_cells`` cells. Unlike the most frequent genes,
    these include the markers of minor cell populations (cytotoxic or B cells among
    monocytes) that cell-type programs are made of.

    Parameters
    ----------
    cells
        All cells of the study (their tokens decide presence).
    counts
        Raw counts, cells x genes (the QC'd matrix the tokens came from).
    gene_ids
        Ensembl ID of each column of ``counts`` ("" when unmapped).
    min_cells
        A token must be present in at least this many cells.
    max_genes
        At most this many genes are kept (the most dispersed).

    Returns
    -------
    np.ndarray
        int64 token ids, by normalised dispersion descending then token id ascending.

    Raises
    ------
    InputError
        If ``min_cells`` or ``max_genes`` is below 1, or no token qualifies.
    """
    import anndata as ad
    import pandas as pd
    import scanpy as sc

    frequent = choose_universe(cells, min_cells=min_cells, max_genes=len(cells.vocabulary))
    token_of = {str(g): t for t, g in enumerate(np.asarray(cells.vocabulary).astype(str))}
    column_token = np.array([token_of.get(str(g), -1) for g in gene_ids], dtype=np.int64)
    allowed = np.isin(column_token, frequent)
    if not allowed.any():
        raise InputError(f"no counted gene is a token present in at least {min_cells} cells")
    columns = np.flatnonzero(allowed)
    x = sp.csr_matrix(counts, dtype=np.float64)[:, columns]
    adata = ad.AnnData(X=x, var=pd.DataFrame(index=[f"c{c}" for c in columns]))
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.pp.highly_variable_genes(adata, flavor="seurat", n_top_genes=min(max_genes, len(columns)))
    dispersion = adata.var["dispersions_norm"].to_numpy(dtype=np.float64)
    chosen = adata.var["highly_variable"].to_numpy(dtype=bool)
    tokens = column_token[columns]
    best: dict[int, float] = {}
    for t, disp, keep in zip(tokens.tolist(), dispersion.tolist(), chosen.tolist(), strict=True):
        if keep:
            best[t] = max(best.get(t, -np.inf), disp if np.isfinite(disp) else -np.inf)
    order = sorted(best, key=lambda t: (-best[t], t))
    return np.asarray(order[:max_genes], dtype=np.int64)


def symbols_for(
    gene_ids: np.ndarray,
    name_map: Mapping[str, str],
    *,
    preferred: Collection[str] | None = None,
) -> np.ndarray:
    """Gene symbols of Ensembl IDs, from a symbol -> Ensembl map.

    Parameters
    ----------
    gene_ids
        Ensembl IDs.
    name_map
        ``{symbol: ensembl_id}`` (several symbols may share an ID).
    preferred
        Symbols to prefer when several share an ID (for example the study's gene names);
        otherwise the alphabetically first symbol is taken.

    Returns
    -------
    np.ndarray
        str array, ``""`` where an ID has no symbol.
    """
    preferred = set(preferred or ())
    by_id: dict[str, list[str]] = {}
    for symbol, gene in name_map.items():
        by_id.setdefault(gene, []).append(symbol)
    out = []
    for gene in np.asarray(gene_ids).astype(str):
        symbols = sorted(by_id.get(gene, []))
        liked = [s for s in symbols if s in preferred]
        out.append((liked or symbols or [""])[0])
    return np.array(out, dtype=str)


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


#: Columns of the gene universe table (``geneattn universe``).
UNIVERSE_COLUMNS = ("token", "gene_id", "symbol")


def save_universe(path: str | Path, tokens: np.ndarray, gene_ids: np.ndarray, symbols) -> None:
    """Write the gene universe as a TSV (``token``, ``gene_id``, ``symbol``), atomically."""
    import pandas as pd

    from geneattn.io.atomic import atomic_path

    table = pd.DataFrame(
        {
            "token": np.asarray(tokens, dtype=np.int64),
            "gene_id": np.asarray(gene_ids).astype(str),
            "symbol": np.asarray(symbols).astype(str),
        }
    )
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, lineterminator="\n")


def load_universe(path: str | Path, vocabulary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tokens and symbols of a universe table written by :func:`save_universe`.

    Parameters
    ----------
    path
        The table.
    vocabulary
        Gene id of each token id of the tokens the universe is used with; every row's
        ``gene_id`` must be the gene of its ``token`` there.

    Returns
    -------
    tuple[np.ndarray, np.ndarray]
        int64 tokens and str symbols (``""`` where unknown), in table order.

    Raises
    ------
    InputError
        The file is missing or malformed, empty, repeats a token, or does not match the
        vocabulary (a table made from other tokens).
    """
    import pandas as pd

    try:
        table = pd.read_csv(path, sep="\t", dtype={"gene_id": str, "symbol": str})
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise InputError(f"cannot read the universe table ({err})", path) from None
    missing = [c for c in UNIVERSE_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"not a universe table: missing columns {', '.join(missing)}", path)
    if table.empty:
        raise InputError("the gene universe is empty", path)
    if not pd.api.types.is_integer_dtype(table["token"]):
        raise InputError("column token must hold integers", path)
    tokens = table["token"].to_numpy(dtype=np.int64)
    if len(np.unique(tokens)) != len(tokens):
        raise InputError("the universe repeats a token", path)
    vocabulary = np.asarray(vocabulary).astype(str)
    if tokens.min() < 0 or tokens.max() >= len(vocabulary):
        raise InputError(f"a token is outside the vocabulary (0..{len(vocabulary) - 1})", path)
    wrong = np.flatnonzero(vocabulary[tokens] != table["gene_id"].to_numpy().astype(str))
    if len(wrong):
        r = int(wrong[0])
        raise InputError(
            f"row {r + 2}: token {tokens[r]} is {vocabulary[tokens[r]]} in the tokens file, "
            f"not {table['gene_id'].iloc[r]} (a universe of other tokens?)",
            path,
        )
    return tokens, table["symbol"].fillna("").to_numpy().astype(str)

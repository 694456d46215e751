"""The gene universe: the genes whose attention the networks keep.

The universe is chosen once from all cells of the study, so every condition and every shard
of a condition's cells share it and shards add up. :func:`gene_universe` chooses it as the
workflow does: the most frequent tokens (:func:`choose_universe`) or the study's most
variable genes (:func:`highly_variable_universe`), with symbols from the symbol -> Ensembl
map (:func:`symbols_for`). :func:`save_universe` and :func:`load_universe` write and read its
table (``universe.tsv``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import scipy.sparse as sp

from geneattn.cells import presence_matrix
from geneattn.errors import InputError
from geneattn.genes import is_ensembl_id, strip_version

if TYPE_CHECKING:
    from geneattn.tokenize import TokenizedCells

__all__ = [
    "UNIVERSE_COLUMNS",
    "UniverseMethod",
    "choose_universe",
    "column_gene_ids",
    "gene_universe",
    "highly_variable_universe",
    "load_universe",
    "read_study_genes",
    "save_universe",
    "symbols_for",
    "universe_table",
]

UniverseMethod = Literal["frequent", "variable"]

#: Columns of the gene universe table (``geneattn universe``).
UNIVERSE_COLUMNS = ("token", "gene_id", "symbol")


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


def column_gene_ids(
    var_names: Sequence[str],
    name_map: Mapping[str, str],
    *,
    var_gene_ids: Sequence[str] | None = None,
) -> np.ndarray:
    """Ensembl ID of each column of a count matrix ("" when unknown), as the tokenizer maps
    them.

    A symbol goes through the symbol -> Ensembl map; a name that is an Ensembl ID
    (:func:`geneattn.genes.is_ensembl_id`: ``ENSA`` is a symbol), or a ``var['gene_ids']``
    entry that is one, is used as it is (version suffix removed).

    Parameters
    ----------
    var_names
        The column names.
    name_map
        ``{symbol: ensembl_id}``.
    var_gene_ids
        ``var['gene_ids']`` of the columns (10x files), when there is one.

    Returns
    -------
    np.ndarray
        object array of str, one per column.
    """
    names = [str(n) for n in var_names]
    ids = [""] * len(names) if var_gene_ids is None else [str(g) for g in var_gene_ids]

    def ensembl(name: str, gene_id: str) -> str:
        for candidate in (name, gene_id):
            if is_ensembl_id(candidate):
                return strip_version(candidate)
        return name_map.get(name, "")

    return np.array([ensembl(n, g) for n, g in zip(names, ids, strict=True)], dtype=object)


def gene_universe(
    cells: TokenizedCells,
    *,
    name_map: Mapping[str, str],
    var_names: Sequence[str],
    method: UniverseMethod = "variable",
    min_cells: int = 10,
    max_genes: int = 2000,
    counts: sp.spmatrix | np.ndarray | None = None,
    var_gene_ids: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Choose the universe from all cells of the study, with the symbols of its genes.

    Parameters
    ----------
    cells
        Every tokenized cell of the study.
    name_map
        ``{symbol: ensembl_id}`` (symbols of the universe genes, and the Ensembl IDs of the
        count columns for ``method="variable"``).
    var_names
        Gene names of the study (its QC'd AnnData's ``var_names``); a symbol among them is
        preferred when several share an Ensembl ID.
    method
        ``"frequent"``: the most frequent tokens; ``"variable"``: scanpy's most variable
        genes of ``counts``.
    min_cells
        A gene must be present in at least this many cells.
    max_genes
        At most this many genes are kept.
    counts
        Raw counts, cells x ``var_names`` (needed for ``method="variable"``).
    var_gene_ids
        ``var['gene_ids']`` of the columns, when there is one.

    Returns
    -------
    tuple[np.ndarray, np.ndarray]
        int64 tokens and str symbols (``""`` where unknown).

    Raises
    ------
    InputError
        An unknown method, ``method="variable"`` without counts, or no gene qualifies.
    """
    if method == "variable":
        if counts is None:
            raise InputError("the variable universe needs the study's counts")
        gene_ids = column_gene_ids(var_names, name_map, var_gene_ids=var_gene_ids)
        universe = highly_variable_universe(
            cells, counts, gene_ids, min_cells=min_cells, max_genes=max_genes
        )
    elif method == "frequent":
        universe = choose_universe(cells, min_cells=min_cells, max_genes=max_genes)
    else:
        raise InputError(f"universe must be 'frequent' or 'variable', got {method!r}")
    gene_ids = np.asarray(cells.vocabulary)[universe].astype(str)
    return universe, symbols_for(gene_ids, name_map, preferred=set(var_names))


def streamed_gene_universe(
    tokens: str | Path,
    h5ad: str | Path,
    *,
    name_map: Mapping[str, str],
    method: UniverseMethod = "variable",
    min_cells: int = 10,
    max_genes: int = 2000,
    chunk_cells: int = 10_000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`gene_universe` of a tokens file and its QC'd counts, a block of cells at a time.

    The token frequencies and (``method="variable"``) scanpy's seurat statistics are summed
    over blocks of ``chunk_cells`` cells (:mod:`geneattn.universe_stream`); the universe is
    the one :func:`gene_universe` chooses from every cell in memory.

    Parameters
    ----------
    tokens
        ``tokens.npz`` of every cell.
    h5ad
        The QC'd counts the tokens came from (``qc.h5ad``).
    name_map, method, min_cells, max_genes
        As for :func:`gene_universe`.
    chunk_cells
        Cells read at a time.

    Returns
    -------
    tuple of np.ndarray
        int64 tokens, their gene ids and their symbols (``""`` where unknown).
    """
    from geneattn.tokenize_stream import h5ad_blocks
    from geneattn.universe_stream import frequent_universe, variable_universe

    var_names, _, var_gene_ids = read_study_genes(h5ad, with_counts=False, with_gene_ids=True)
    if method == "variable":
        gene_ids = column_gene_ids(var_names, name_map, var_gene_ids=var_gene_ids)
        blocks, _, _ = h5ad_blocks(h5ad, chunk_cells)
        universe, vocabulary = variable_universe(
            tokens,
            blocks,
            gene_ids,
            min_cells=min_cells,
            max_genes=max_genes,
            chunk_cells=chunk_cells,
        )
    elif method == "frequent":
        universe, vocabulary = frequent_universe(
            tokens, min_cells=min_cells, max_genes=max_genes, chunk_cells=chunk_cells
        )
    else:
        raise InputError(f"universe must be 'frequent' or 'variable', got {method!r}")
    gene_ids = np.asarray(vocabulary)[universe].astype(str)
    return universe, gene_ids, symbols_for(gene_ids, name_map, preferred=set(var_names))


def read_study_genes(
    path: str | Path, *, with_counts: bool, with_gene_ids: bool = False
) -> tuple[list[str], sp.spmatrix | np.ndarray | None, list[str] | None]:
    """Gene names of a QC'd ``.h5ad`` and, when asked, its counts and ``var['gene_ids']``.

    Parameters
    ----------
    path
        The QC'd counts (``qc.h5ad``).
    with_counts
        Read the counts too (the variable universe); otherwise only the var names are read.
    with_gene_ids
        Without the counts, still return ``var['gene_ids']`` (read backed).

    Returns
    -------
    tuple
        ``(var_names, counts, var_gene_ids)``; the last two None without ``with_counts`` (and
        ``var_gene_ids`` None when the file has no such column).
    """
    from geneattn.io.readers import read_stage_h5ad

    adata = read_stage_h5ad(path, backed=True)
    try:
        var_names = adata.var_names.astype(str).tolist()
        gene_ids = adata.var["gene_ids"].astype(str).tolist() if "gene_ids" in adata.var else None
    finally:
        adata.file.close()
    if not with_counts:
        return var_names, None, gene_ids if with_gene_ids else None
    adata = read_stage_h5ad(path)
    gene_ids = adata.var["gene_ids"].astype(str).tolist() if "gene_ids" in adata.var else None
    return var_names, adata.X, gene_ids


def save_universe(path: str | Path, tokens: np.ndarray, gene_ids: np.ndarray, symbols) -> None:
    """Write the gene universe as a TSV (``token``, ``gene_id``, ``symbol``), atomically."""
    from geneattn.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        universe_table(tokens, gene_ids, symbols).to_csv(
            tmp, sep="\t", index=False, lineterminator="\n"
        )


def universe_table(tokens: np.ndarray, gene_ids: np.ndarray, symbols):
    """The universe as a table of :data:`UNIVERSE_COLUMNS`, in the given order."""
    import pandas as pd

    return pd.DataFrame(
        {
            "token": np.asarray(tokens, dtype=np.int64),
            "gene_id": np.asarray(gene_ids).astype(str),
            "symbol": np.asarray(symbols).astype(str),
        }
    )


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

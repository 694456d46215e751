"""Geneformer V1 rank-value tokenization of many cells.

For a cell with total counts ``n`` (over all genes, see ``obs["n_counts"]`` from QC) and a
gene with count ``x`` and nonzero corpus median ``m``, the value ranked is
``x / n * 10_000 / m``. Only genes with a Geneformer token (and, for ``medians="geneformer_v1"``
or its synonym ``"dictionary"``, a median in the given median dictionary: V1's, or V2's for
V2 studies) and ``x > 0`` take part; they are sorted by descending value, ties broken by
ascending token id, and truncated to ``max_len`` (2,048 for Geneformer V1, which uses no
special tokens). The ranking itself runs in Rust (``geneattn._kernels.rank_encode_csr``),
parallel over cells.

The output is ragged: the tokens of cell ``c`` are ``tokens[offsets[c]:offsets[c + 1]]``.
Token ids are always Geneformer V1 dictionary ids, so the same file feeds the seed
interfaces and a real Geneformer checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import scipy.sparse as sp

from geneattn.errors import InputError
from geneattn.genes import looks_ensembl, strip_version
from geneattn.io.npz import map_npz_arrays, read_ranges

if TYPE_CHECKING:
    import pandas as pd
    from anndata import AnnData

log = logging.getLogger(__name__)

TARGET_SUM = 10_000.0
MedianSource = Literal["geneformer_v1", "dictionary", "corpus", "none"]
GeneIdKind = Literal["symbol", "ensembl"]


@dataclasses.dataclass(frozen=True)
class GeneTokens:
    """How the columns of a count matrix map onto Geneformer tokens.

    Attributes
    ----------
    token
        Token id of each column, -1 where the gene is dropped.
    median
        Normalisation median of each column (NaN where dropped).
    gene_id
        Ensembl ID of each column ("" where unmapped).
    reasons
        Number of columns dropped for each reason.
    """

    token: np.ndarray
    median: np.ndarray
    gene_id: np.ndarray
    reasons: dict[str, int]


@dataclasses.dataclass(frozen=True)
class TokenizedCells:
    """Ragged rank-value tokens of many cells.

    Attributes
    ----------
    tokens
        int32 token ids of all cells, concatenated.
    offsets
        int64, ``n_cells + 1`` entries; cell ``c`` owns ``tokens[offsets[c]:offsets[c+1]]``.
    cell_ids
        Cell names (``obs_names``), one per cell.
    vocabulary
        Ensembl ID of every token id (``vocabulary[t]``), special tokens by their names.
    """

    tokens: np.ndarray
    offsets: np.ndarray
    cell_ids: np.ndarray
    vocabulary: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        """Number of tokens of each cell (int32)."""
        return np.diff(self.offsets).astype(np.int32)

    @property
    def n_cells(self) -> int:
        """Number of cells."""
        return len(self.offsets) - 1

    def cell(self, i: int) -> np.ndarray:
        """Tokens of cell ``i``."""
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]


def subset_cells(cells: TokenizedCells, index: np.ndarray) -> TokenizedCells:
    """The cells at ``index`` (in that order), with their tokens.

    Parameters
    ----------
    cells
        Tokenized cells.
    index
        Cell positions.

    Returns
    -------
    TokenizedCells
        The chosen cells, same vocabulary.
    """
    index = np.asarray(index, dtype=np.int64)
    starts, ends = cells.offsets[index], cells.offsets[index + 1]
    lengths = ends - starts
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    take = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
    return TokenizedCells(
        tokens=np.ascontiguousarray(cells.tokens[take], dtype=np.int32),
        offsets=offsets,
        cell_ids=cells.cell_ids[index],
        vocabulary=cells.vocabulary,
    )


def vocabulary_array(token_dictionary: Mapping[str, int]) -> np.ndarray:
    """Turn ``{gene_id: token}`` into an array indexed by token id.

    Parameters
    ----------
    token_dictionary
        Geneformer token dictionary; ids must be exactly ``0 .. len - 1``.

    Returns
    -------
    np.ndarray
        Object array of gene ids (and special-token names), ``vocab[token] = gene_id``.
    """
    ids = np.fromiter(token_dictionary.values(), dtype=np.int64, count=len(token_dictionary))
    if (
        len(ids) == 0
        or ids.min() != 0
        or ids.max() != len(ids) - 1
        or len(np.unique(ids)) != len(ids)
    ):
        raise InputError("token dictionary ids must be exactly 0 .. n-1 without gaps or repeats")
    vocab = np.empty(len(ids), dtype=object)
    for gene, tok in token_dictionary.items():
        vocab[tok] = gene
    return vocab


def map_genes(
    var_names: np.ndarray,
    *,
    gene_id: GeneIdKind,
    token_dictionary: Mapping[str, int],
    gene_medians: Mapping[str, float] | None,
    name_map: Mapping[str, str] | None = None,
    gene_mapping: Mapping[str, str] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Map gene names to Ensembl IDs and Geneformer tokens.

    Parameters
    ----------
    var_names
        Gene names of the matrix columns.
    gene_id
        ``"symbol"``: names are HGNC symbols, mapped through ``name_map``; ``"ensembl"``:
        names are Ensembl gene IDs (a version suffix such as ``.12`` is removed,
        :func:`geneattn.genes.strip_version`).
    token_dictionary
        ``{ensembl_id: token}``.
    gene_medians
        ``{ensembl_id: median}``; when given, genes without a median are dropped (Geneformer
        V1 keeps only genes with a nonzero corpus median).
    name_map
        ``{symbol: ensembl_id}``, required for ``gene_id="symbol"``.
    gene_mapping
        Geneformer's ``gene_mapping_file`` (``{gene_id: dictionary gene_id}``): each
        Ensembl ID is upper-cased and mapped through it, and IDs it lacks are dropped (as
        Geneformer's tokenizer does); None keeps the IDs as they are.

    Returns
    -------
    tuple
        ``(ensembl, token, reasons)``: the Ensembl ID of each column ("" when unmapped), its
        token (-1 when dropped), and how many columns were dropped for each reason.
    """
    names = np.asarray(var_names).astype(str)
    if gene_id == "symbol":
        if name_map is None:
            raise InputError("gene_id='symbol' needs the symbol -> Ensembl map")
        ensembl = np.array([name_map.get(n, "") for n in names], dtype=object)
    elif gene_id == "ensembl":
        ensembl = np.array([strip_version(n) for n in names], dtype=object)
    else:
        raise InputError(f"gene_id must be 'symbol' or 'ensembl', got {gene_id!r}")
    token = np.full(len(names), -1, dtype=np.int32)
    reasons = {"no_ensembl_id": 0, "not_in_token_dictionary": 0, "no_median": 0}
    if gene_mapping is not None:
        mapped = np.array([gene_mapping.get(e.upper(), "") if e else "" for e in ensembl])
        reasons["not_in_gene_mapping"] = int(np.count_nonzero((ensembl != "") & (mapped == "")))
        ensembl = mapped.astype(object)
    for i, ens in enumerate(ensembl):
        if not ens:
            reasons["no_ensembl_id"] += 1
        elif ens not in token_dictionary:
            reasons["not_in_token_dictionary"] += 1
        elif gene_medians is not None and ens not in gene_medians:
            reasons["no_median"] += 1
        else:
            token[i] = token_dictionary[ens]
    return ensembl, token, reasons


def merge_duplicate_tokens(
    x: sp.csr_matrix, token: np.ndarray, ensembl: np.ndarray
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray, int]:
    """Sum columns that map to the same token (several symbols for one Ensembl ID).

    Parameters
    ----------
    x
        Cells x genes counts.
    token
        Token id per column (-1 for dropped columns).
    ensembl
        Ensembl ID per column.

    Returns
    -------
    tuple
        ``(x, token, ensembl, n_merged)`` with one column per kept token (dropped columns
        removed) and the number of columns that were merged into another.
    """
    keep = np.flatnonzero(token >= 0)
    uniq, first, inverse = np.unique(token[keep], return_index=True, return_inverse=True)
    n_merged = len(keep) - len(uniq)
    agg = sp.csr_matrix(
        (np.ones(len(keep), dtype=x.dtype), (keep, inverse)), shape=(x.shape[1], len(uniq))
    )
    merged = sp.csr_matrix(x @ agg)
    merged.sort_indices()
    return merged, uniq.astype(np.int32), ensembl[keep][first], n_merged


def corpus_medians(x: sp.csr_matrix, n_counts: np.ndarray) -> np.ndarray:
    """Nonzero median of ``x / n_counts * 10,000`` per column (NaN where never expressed).

    Parameters
    ----------
    x
        Cells x genes counts (CSR).
    n_counts
        Total counts of each cell.

    Returns
    -------
    np.ndarray
        float64 median per column, over the cells where the gene is nonzero.
    """
    rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
    values = x.data.astype(np.float64) / n_counts[rows] * TARGET_SUM
    positive = values > 0
    cols = x.indices[positive]
    values = values[positive]
    order = np.lexsort((values, cols))
    cols, values = cols[order], values[order]
    med = np.full(x.shape[1], np.nan)
    starts = np.searchsorted(cols, np.arange(x.shape[1]), side="left")
    ends = np.searchsorted(cols, np.arange(x.shape[1]), side="right")
    for j in np.flatnonzero(ends > starts):
        med[j] = np.median(values[starts[j] : ends[j]])
    return med


def tokenize_counts(
    x: sp.spmatrix | np.ndarray,
    var_names: np.ndarray,
    *,
    cell_ids: np.ndarray,
    n_counts: np.ndarray | None,
    token_dictionary: Mapping[str, int],
    gene_medians: Mapping[str, float] | None = None,
    name_map: Mapping[str, str] | None = None,
    gene_mapping: Mapping[str, str] | None = None,
    gene_id: GeneIdKind = "symbol",
    medians: MedianSource = "geneformer_v1",
    max_len: int = 2048,
    n_threads: int = 1,
) -> tuple[TokenizedCells, dict]:
    """Rank-value encode a cells x genes count matrix, Geneformer V1 style.

    Parameters
    ----------
    x
        Raw counts, cells x genes.
    var_names
        Gene names of the columns (symbols or Ensembl IDs, see ``gene_id``).
    cell_ids
        Cell names.
    n_counts
        Total counts of each cell over all genes; None computes the row sums of ``x``.
    token_dictionary
        Geneformer ``{ensembl_id: token}``.
    gene_medians
        Geneformer ``{ensembl_id: nonzero median}``; needed for ``medians="geneformer_v1"``.
    name_map
        ``{symbol: ensembl_id}``; needed for ``gene_id="symbol"``.
    gene_mapping
        Geneformer's gene ID mapping (see :func:`map_genes`); None: none.
    gene_id
        What ``var_names`` hold.
    medians
        ``"geneformer_v1"`` or ``"dictionary"`` (the medians of ``gene_medians``, V1's or
        a V2 study's; genes without one are dropped),
        ``"corpus"`` (nonzero medians of the normalised values of this matrix) or ``"none"``
        (every median 1: rank by normalised counts).
    max_len
        Tokens kept per cell.
    n_threads
        Rayon threads of the ranking kernel.

    Returns
    -------
    tuple
        ``(cells, summary)``: the tokens of every cell that has at least one token, and a
        JSON-serialisable summary (genes mapped and dropped, cells dropped, lengths).
    """
    from geneattn import _kernels

    from_dictionary = check_rank_options(medians, gene_medians, max_len)
    x = sp.csr_matrix(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    cell_ids = np.asarray(cell_ids).astype(str)
    if n_counts is None:
        n_counts = np.asarray(x.sum(axis=1)).ravel()
    n_counts = checked_n_counts(n_counts, cell_ids, x.shape[0])

    use_medians = gene_medians if from_dictionary else None
    ensembl, token, reasons = map_genes(
        np.asarray(var_names),
        gene_id=gene_id,
        token_dictionary=token_dictionary,
        gene_medians=use_medians,
        name_map=name_map,
        gene_mapping=gene_mapping,
    )
    x, token, ensembl, n_merged = merge_duplicate_tokens(x, token, ensembl)
    if from_dictionary:
        median = np.array([gene_medians[g] for g in ensembl], dtype=np.float64)
    elif medians == "corpus":
        median = corpus_medians(x, n_counts)
    else:
        median = np.ones(len(token), dtype=np.float64)
    usable = np.isfinite(median) & (median > 0)
    token = np.where(usable, token, -1).astype(np.int32)
    reasons["no_positive_median"] = int((~usable).sum())

    positive_cells = n_counts > 0
    tokens, offsets = _kernels.rank_encode_csr(
        x.indptr.astype(np.int64),
        x.indices.astype(np.int32),
        x.data,
        token,
        np.where(usable, median, 1.0),
        np.where(positive_cells, n_counts, 1.0),
        TARGET_SUM,
        int(max_len),
        int(n_threads),
    )
    lengths = np.diff(offsets)
    kept = lengths > 0
    if not kept.any():
        raise InputError("no cell has any gene with a Geneformer token and a positive count")
    cells = TokenizedCells(
        tokens=tokens,
        offsets=np.concatenate([[0], np.cumsum(lengths[kept])]).astype(np.int64),
        cell_ids=cell_ids[kept],
        vocabulary=vocabulary_array(token_dictionary),
    )
    summary = tokenize_summary(
        kept=kept,
        lengths=lengths[kept],
        n_genes=len(var_names),
        token=token,
        reasons=reasons,
        n_merged=n_merged,
        options={"gene_id": gene_id, "medians": medians, "max_len": max_len},
    )
    return cells, summary


def tokenize_summary(
    *,
    kept: np.ndarray,
    lengths: np.ndarray,
    n_genes: int,
    token: np.ndarray,
    reasons: Mapping[str, int],
    n_merged: int,
    options: Mapping[str, Any],
) -> dict[str, Any]:
    """The tokenize summary (``tokenize_summary.json``), in memory or streamed alike.

    Parameters
    ----------
    kept
        Per input cell, whether it kept a token.
    lengths
        Token counts of the kept cells.
    n_genes, token, reasons, n_merged
        Genes of the input, their token (-1: none), why genes were dropped, and how many
        duplicate genes were merged.
    options
        ``gene_id``, ``medians`` and ``max_len`` as tokenized.
    """
    max_len = int(options["max_len"])
    return {
        "cells_in": int(kept.size),
        "cells_out": int(kept.sum()),
        "cells_dropped_no_tokens": int((~kept).sum()),
        "genes_in": int(n_genes),
        "genes_tokenized": int((token >= 0).sum()),
        "genes_dropped": {k: int(v) for k, v in reasons.items()},
        "genes_merged_duplicates": int(n_merged),
        "gene_id": options["gene_id"],
        "medians": options["medians"],
        "max_len": max_len,
        "target_sum": TARGET_SUM,
        "tie_break": "ascending token id",
        "length_min": int(lengths.min()),
        "length_median": float(np.median(lengths)),
        "length_max": int(lengths.max()),
        "cells_truncated": int((lengths >= max_len).sum()),
    }


def study_gene_names(adata: AnnData, *, gene_id: GeneIdKind) -> np.ndarray:
    """The names of an AnnData's genes that the tokenizer maps: its var names, or, for
    ``gene_id="ensembl"`` when those are not Ensembl IDs, its ``var['gene_ids']`` (10x files
    name genes by symbol and keep the Ensembl IDs there)."""
    var_names = adata.var_names.to_numpy()
    if gene_id == "ensembl" and "gene_ids" in adata.var and not looks_ensembl(var_names):
        log.info("var_names are not Ensembl IDs; using var['gene_ids']")
        var_names = adata.var["gene_ids"].astype(str).to_numpy()
    return var_names


def tokenize_anndata(
    adata: AnnData,
    *,
    token_dictionary: Mapping[str, int],
    gene_medians: Mapping[str, float] | None = None,
    name_map: Mapping[str, str] | None = None,
    gene_mapping: Mapping[str, str] | None = None,
    gene_id: GeneIdKind = "symbol",
    medians: MedianSource = "geneformer_v1",
    max_len: int = 2048,
    n_threads: int = 1,
    source: str | Path | None = None,
) -> tuple[TokenizedCells, dict]:
    """:func:`tokenize_counts` of QC'd counts in an AnnData.

    The counts are ``X``; each cell's total counts are ``obs["n_counts"]`` (the QC stage's
    totals over all genes of the input), else the row sums of ``X`` (with a warning); the
    gene names are :func:`study_gene_names`.

    Parameters
    ----------
    adata
        QC'd counts.
    token_dictionary, gene_medians, name_map, gene_mapping, gene_id, medians, max_len
        As for :func:`tokenize_counts`.
    n_threads
        As for :func:`tokenize_counts`.
    source
        The file ``adata`` was read from, named in the warning.

    Returns
    -------
    tuple
        ``(cells, summary)`` of :func:`tokenize_counts`.
    """
    if "n_counts" in adata.obs:
        n_counts = adata.obs["n_counts"].to_numpy(dtype=np.float64)
    else:
        log.warning("%s has no obs['n_counts']; using row sums of X", source or "the data")
        n_counts = None
    return tokenize_counts(
        adata.X,
        study_gene_names(adata, gene_id=gene_id),
        cell_ids=adata.obs_names.to_numpy(),
        n_counts=n_counts,
        token_dictionary=token_dictionary,
        gene_medians=gene_medians,
        name_map=name_map,
        gene_mapping=gene_mapping,
        gene_id=gene_id,
        medians=medians,
        max_len=max_len,
        n_threads=n_threads,
    )


#: Prefix of the per-cell attribute arrays in a tokens file.
ATTRIBUTE_PREFIX = "attr__"
#: Optional arrays of a tokens file that let a shard job pick and describe its cells
#: without reading every cell of the study's ``.h5ad``: each cell's row in the tokenized
#: ``.h5ad`` (``obs_rows``), and the condition column's name and each cell's label.
OBS_ROWS, CONDITION_COLUMN, CONDITIONS = "obs_rows", "condition_column", "conditions"


def cell_arrays(
    n_cells: int,
    *,
    attributes: Mapping[str, np.ndarray] | None = None,
    obs_rows: np.ndarray | None = None,
    conditions: tuple[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """The per-cell arrays a tokens file carries beside the tokens, checked and named.

    Parameters
    ----------
    n_cells
        Cells in the file.
    attributes
        name -> one value per cell (stored as strings, ``attr__{name}``).
    obs_rows
        Each cell's row in the ``.h5ad`` it was tokenized from.
    conditions
        ``(column, labels)``: the condition column and each cell's label.

    Returns
    -------
    dict
        ``{array name: array}``, in a fixed order.

    Raises
    ------
    InputError
        A name is not allowed or an array does not hold one value per cell.
    """
    extra = {}
    for name, values in (attributes or {}).items():
        values = np.asarray(values).astype(str)
        if not name or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise InputError(f"attribute name {name!r} must be letters, digits, '_', '.', '-'")
        if values.shape != (n_cells,):
            raise InputError(f"attribute {name!r} needs one value per cell ({n_cells})")
        extra[ATTRIBUTE_PREFIX + name] = values
    if obs_rows is not None:
        obs_rows = np.asarray(obs_rows, dtype=np.int64)
        if obs_rows.shape != (n_cells,):
            raise InputError(f"obs_rows needs one row per cell ({n_cells})")
        extra[OBS_ROWS] = obs_rows
    if conditions is not None:
        column, labels = conditions
        labels = np.asarray(labels).astype(str)
        if labels.shape != (n_cells,):
            raise InputError(f"the condition labels need one per cell ({n_cells})")
        extra[CONDITION_COLUMN] = np.str_(column)
        extra[CONDITIONS] = labels
    return extra


def condition_text(obs: pd.DataFrame, column: str) -> np.ndarray:
    """Each cell's label of ``obs[column]`` as text for a tokens file (``""``: no label)."""
    values = obs[column]
    return values.astype(object).where(values.notna(), "").astype(str).to_numpy()


def save_tokens(
    path: str | Path,
    cells: TokenizedCells,
    *,
    attributes: Mapping[str, np.ndarray] | None = None,
    obs_rows: np.ndarray | None = None,
    conditions: tuple[str, np.ndarray] | None = None,
) -> None:
    """Write tokens to ``.npz`` atomically (uncompressed, byte-deterministic).

    Parameters
    ----------
    path
        Output path (``.npz``).
    cells
        The tokenized cells.
    attributes
        Per-cell labels carried with the tokens (Geneformer's ``custom_attr_name_dict``):
        name -> one value per cell, stored as strings (``attr__{name}`` arrays); read them
        back with :func:`load_token_attributes`.
    obs_rows, conditions
        As for :func:`cell_arrays`; shard jobs read them (:func:`load_condition_labels`,
        :func:`load_obs_rows`) instead of every cell of the ``.h5ad``.
    """
    from geneattn.io.atomic import atomic_path

    extra = cell_arrays(
        cells.n_cells, attributes=attributes, obs_rows=obs_rows, conditions=conditions
    )
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            tokens=cells.tokens.astype(np.int32),
            offsets=cells.offsets.astype(np.int64),
            lengths=cells.lengths,
            cell_ids=cells.cell_ids.astype(str),
            vocabulary=cells.vocabulary.astype(str),
            **extra,
        )


def load_token_attributes(path: str | Path) -> dict[str, np.ndarray]:
    """The per-cell attributes saved with tokens (:func:`save_tokens`), by name.

    Parameters
    ----------
    path
        A ``tokens.npz``.

    Returns
    -------
    dict[str, np.ndarray]
        One string per cell for each attribute (empty without attributes).
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            return {
                k.removeprefix(ATTRIBUTE_PREFIX): z[k]
                for k in z.files
                if k.startswith(ATTRIBUTE_PREFIX)
            }
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except (ValueError, OSError) as err:
        raise InputError(f"not a geneattn tokens file ({err})", path) from None


#: Arrays of a tokens file (``lengths`` is written too, for readers that want it).
TOKEN_ARRAYS = ("tokens", "offsets", "cell_ids", "vocabulary")

CellSelection = slice | Sequence[int] | np.ndarray | None


def load_tokens(path: str | Path, cells: CellSelection = None) -> TokenizedCells:
    """Read tokens written by :func:`save_tokens`, all cells or only some.

    Parameters
    ----------
    path
        A ``tokens.npz``.
    cells
        None reads every cell. A slice (any step) or an array of cell positions reads only
        those cells, in that order (repeats allowed): the file's arrays are located without
        reading them (:func:`geneattn.io.npz.map_npz_arrays`) and only the chosen cells'
        offsets, tokens and ids are read (:func:`geneattn.io.npz.read_ranges`), so the memory
        needed follows the cells chosen, not the file. Cells next to each other in the file
        are read in one go: a contiguous slice is a few reads. Files whose arrays are
        compressed are read whole and then subset (same result, more memory).

    Returns
    -------
    TokenizedCells
        The cells (offsets start at 0), with the full vocabulary.

    Raises
    ------
    InputError
        The file is missing or not a consistent tokens file.
    IndexError
        A cell position is outside ``0 .. n_cells - 1``.

    Notes
    -----
    With ``cells`` given, the structure checks cover what is read: dtypes and shapes of
    every array, the first and last offsets, and the chosen cells' offsets; offsets of
    cells not chosen are not read.
    """
    path = Path(path)
    if cells is None:
        return _load_all_tokens(path)
    arrays = map_npz_arrays(path, TOKEN_ARRAYS, "a geneattn tokens file")
    tokens, offsets, cell_ids = arrays["tokens"], arrays["offsets"], arrays["cell_ids"]
    if (
        tokens.dtype != np.int32
        or offsets.dtype != np.int64
        or tokens.ndim != 1
        or offsets.ndim != 1
        or len(offsets) < 1
        or len(cell_ids) != len(offsets) - 1
        or offsets[0] != 0
        or offsets[-1] != len(tokens)
    ):
        raise InputError("inconsistent tokens/offsets/cell_ids", path)
    n_cells = len(offsets) - 1
    if isinstance(cells, slice):
        index = np.arange(*cells.indices(n_cells), dtype=np.int64)
    else:
        index = np.asarray(cells)
        if index.ndim != 1 or (index.size and not np.issubdtype(index.dtype, np.integer)):
            raise IndexError("cells must be a slice or a 1-d array of integer cell positions")
        index = index.astype(np.int64)
        if index.size and (index.min() < 0 or index.max() >= n_cells):
            raise IndexError(f"cell positions must be in 0 .. {n_cells - 1}")
    starts = read_ranges(offsets, index, index + 1)
    ends = read_ranges(offsets, index + 1, index + 2)
    lengths = ends - starts
    if np.any(lengths < 0) or np.any(starts < 0) or np.any(ends > len(tokens)):
        raise InputError("inconsistent tokens/offsets/cell_ids", path)
    return TokenizedCells(
        tokens=read_ranges(tokens, starts, ends),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        cell_ids=read_ranges(cell_ids, index, index + 1),
        vocabulary=np.array(arrays["vocabulary"]),
    )


def token_cell_count(path: str | Path) -> int:
    """Cells in a tokens file, read from the shape of its offsets."""
    return len(map_npz_arrays(path, ("offsets",), "a geneattn tokens file")["offsets"]) - 1


def load_condition_labels(path: str | Path, column: str) -> np.ndarray | None:
    """Each cell's label of the condition ``column``, as tokenize recorded it.

    Returns
    -------
    np.ndarray or None
        One label per cell in file order; None when the file records no labels, or those
        of another column (files written before, or without ``--condition-column``).
    """
    arrays = map_npz_arrays(
        path, ("offsets",), "a geneattn tokens file", optional=(CONDITION_COLUMN, CONDITIONS)
    )
    if CONDITIONS not in arrays or str(arrays.get(CONDITION_COLUMN, "")) != column:
        return None
    labels = np.asarray(arrays[CONDITIONS])
    if labels.shape != (len(arrays["offsets"]) - 1,):
        raise InputError("inconsistent offsets/conditions", path)
    return labels


def load_obs_rows(path: str | Path, cells: np.ndarray) -> np.ndarray | None:
    """The ``.h5ad`` rows of the cells at positions ``cells``, or None if not recorded."""
    arrays = map_npz_arrays(path, ("offsets",), "a geneattn tokens file", optional=(OBS_ROWS,))
    if OBS_ROWS not in arrays:
        return None
    rows = arrays[OBS_ROWS]
    if rows.shape != (len(arrays["offsets"]) - 1,) or rows.dtype != np.int64:
        raise InputError("inconsistent offsets/obs_rows", path)
    cells = np.asarray(cells, dtype=np.int64)
    return read_ranges(rows, cells, cells + 1)


def load_cell_ids(path: str | Path) -> np.ndarray:
    """The cell ids of a tokens file, without reading its tokens.

    Parameters
    ----------
    path
        A ``tokens.npz``.

    Returns
    -------
    np.ndarray
        Cell names, one per cell, in file order (positions for ``load_tokens(cells=...)``).
    """
    arrays = map_npz_arrays(path, ("offsets", "cell_ids"), "a geneattn tokens file")
    if len(arrays["cell_ids"]) != len(arrays["offsets"]) - 1:
        raise InputError("inconsistent offsets/cell_ids", path)
    return np.array(arrays["cell_ids"])


def _load_all_tokens(path: Path) -> TokenizedCells:
    """Every cell of a tokens file, with the full structure check."""
    try:
        with np.load(path, allow_pickle=False) as z:
            cells = TokenizedCells(
                tokens=z["tokens"],
                offsets=z["offsets"],
                cell_ids=z["cell_ids"],
                vocabulary=z["vocabulary"],
            )
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except (KeyError, ValueError, OSError) as err:
        raise InputError(f"not a geneattn tokens file ({err})", path) from None
    off = cells.offsets
    if (
        cells.tokens.dtype != np.int32
        or off.dtype != np.int64
        or off[0] != 0
        or off[-1] != len(cells.tokens)
        or np.any(np.diff(off) < 0)
        or len(cells.cell_ids) != len(off) - 1
    ):
        raise InputError("inconsistent tokens/offsets/cell_ids", path)
    return cells


def check_rank_options(medians: str, gene_medians, max_len: int) -> bool:
    """Check the rank-encoding options; True when the medians come from a dictionary.

    Raises
    ------
    InputError
        An unknown ``medians``, a dictionary source without ``gene_medians``, or
        ``max_len < 1``.
    """
    if medians not in ("geneformer_v1", "dictionary", "corpus", "none"):
        raise InputError(
            f"medians must be geneformer_v1, dictionary, corpus or none, got {medians!r}"
        )
    from_dictionary = medians in ("geneformer_v1", "dictionary")
    if from_dictionary and gene_medians is None:
        raise InputError(f"medians={medians!r} needs a gene median dictionary")
    if max_len < 1:
        raise InputError(f"max_len must be at least 1, got {max_len}")
    return from_dictionary


def checked_n_counts(n_counts, cell_ids: np.ndarray, n_cells: int) -> np.ndarray:
    """``n_counts`` as contiguous float64, one finite non-negative value per cell.

    Raises
    ------
    InputError
        A length other than ``n_cells`` (for ``n_counts`` or ``cell_ids``), or a negative or
        non-finite total (the message names the cell).
    """
    n_counts = np.ascontiguousarray(n_counts, dtype=np.float64)
    if len(n_counts) != n_cells or len(cell_ids) != n_cells:
        raise InputError("n_counts and cell_ids must have one entry per cell")
    bad = np.flatnonzero(~np.isfinite(n_counts) | (n_counts < 0))
    if bad.size:
        c = bad[0]
        raise InputError(f"n_counts of cell {cell_ids[c]!r} is {n_counts[c]}; it must be >= 0")
    return n_counts

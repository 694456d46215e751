"""Per-condition attention sums: the file the attention stage writes and the network stage reads.

One ``.npz`` (``results/{study}/attention/{condition}.npz``) per condition, or per shard of a
condition's cells, holding these arrays over a gene universe of ``G`` genes:

``gene_ids`` (str, G)
    Ensembl IDs of the universe, unique and non-empty.
``gene_symbols`` (str, G)
    Gene symbols, ``""`` where unknown.
``sums`` (float64, G x G)
    Over cells, the sum of the head-averaged attention ``a_ij`` from gene ``i`` (query) to
    gene ``j`` (key), over the cells in which both genes are present. Attention weights are
    softmax probabilities, so ``0 <= sums[i, j] <= counts[i, j]``.
``counts`` (int64, G x G)
    Number of cells in which both ``i`` and ``j`` are present (symmetric; the diagonal is the
    number of cells in which the gene is present).
``incoming`` (float64, G)
    Over cells, the column sums of each cell's attention matrix restricted to the universe:
    the total attention a gene receives.
``gene_cells`` (int64, G)
    Number of cells in which each gene is present.
``n_cells`` (int64 scalar), ``condition`` (str scalar)
    Number of cells summed over and the condition label.

Sums of shards of the same condition add up elementwise (:func:`gather_attention_sums`).
Files are written uncompressed with :func:`numpy.savez` (byte-deterministic) under a temporary
name that is renamed into place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geneattn.errors import InputError
from geneattn.io.atomic import atomic_path
from geneattn.io.npz import read_npz_arrays

__all__ = [
    "ARRAY_NAMES",
    "AttentionSums",
    "check_attention_sums",
    "gather_attention_sums",
    "load_attention_sums",
    "save_attention_sums",
]

#: The arrays of an attention-sums file, in the order they are written.
ARRAY_NAMES = (
    "gene_ids",
    "gene_symbols",
    "sums",
    "counts",
    "incoming",
    "gene_cells",
    "n_cells",
    "condition",
)

#: Relative slack allowed on ``sums <= counts`` (float32 softmax rows may sum to 1 + 1e-7).
_SUM_SLACK = 1e-5


@dataclass(frozen=True)
class AttentionSums:
    """Attention summed over the cells of one condition (or one shard of its cells).

    Attributes are the arrays of the file format described in :mod:`geneattn.attention_sums`.
    """

    gene_ids: np.ndarray
    gene_symbols: np.ndarray
    sums: np.ndarray
    counts: np.ndarray
    incoming: np.ndarray
    gene_cells: np.ndarray
    n_cells: int
    condition: str

    @property
    def n_genes(self) -> int:
        """Number of genes in the universe."""
        return len(self.gene_ids)


def check_attention_sums(data: AttentionSums, source: str | Path | None = None) -> AttentionSums:
    """Check shapes, types and internal consistency; return a normalised copy.

    Parameters
    ----------
    data
        The sums to check.
    source
        The file they came from (or go to), named in errors.

    Returns
    -------
    AttentionSums
        The same data with canonical dtypes (``str`` IDs, float64 sums, int64 counts).

    Raises
    ------
    InputError
        Naming ``source`` and the first problem found.
    """
    gene_ids = np.asarray(data.gene_ids)
    gene_symbols = np.asarray(data.gene_symbols)
    g = gene_ids.shape[0] if gene_ids.ndim == 1 else -1
    if g < 1:
        raise InputError(
            f"gene_ids must be a non-empty 1-d array, got shape {gene_ids.shape}", source
        )
    if gene_ids.dtype.kind != "U" or gene_symbols.dtype.kind != "U":
        raise InputError("gene_ids and gene_symbols must be string arrays", source)
    if gene_symbols.shape != (g,):
        raise InputError(f"gene_symbols has shape {gene_symbols.shape}, expected ({g},)", source)
    if np.any(gene_ids == ""):
        raise InputError("empty gene ID in gene_ids", source)
    uniq, n_seen = np.unique(gene_ids, return_counts=True)
    if np.any(n_seen > 1):
        dup = ", ".join(uniq[n_seen > 1][:5].tolist())
        raise InputError(f"duplicated gene IDs: {dup}", source)

    sums = _array(data.sums, "sums", (g, g), "f", np.float64, source)
    counts = _array(data.counts, "counts", (g, g), "iu", np.int64, source)
    incoming = _array(data.incoming, "incoming", (g,), "f", np.float64, source)
    gene_cells = _array(data.gene_cells, "gene_cells", (g,), "iu", np.int64, source)
    n_cells = _scalar_int(data.n_cells, "n_cells", source)
    condition = data.condition
    if isinstance(condition, np.ndarray) and condition.ndim == 0:
        condition = condition.item()
    if not isinstance(condition, str) or not condition:
        raise InputError(f"condition must be a non-empty string, got {condition!r}", source)

    for name, arr in (("sums", sums), ("incoming", incoming)):
        if not np.all(np.isfinite(arr)):
            raise InputError(f"{name} has NaN or infinite values", source)
        if np.any(arr < 0):
            raise InputError(f"{name} has negative values", source)
    if n_cells < 0:
        raise InputError(f"n_cells is negative ({n_cells})", source)
    if np.any(gene_cells < 0) or np.any(gene_cells > n_cells):
        raise InputError(f"gene_cells must lie between 0 and n_cells ({n_cells})", source)
    if np.any(counts < 0):
        raise InputError("counts has negative values", source)
    if not np.array_equal(np.diagonal(counts), gene_cells):
        raise InputError("the diagonal of counts differs from gene_cells", source)
    if np.any(counts > np.minimum.outer(gene_cells, gene_cells)):
        raise InputError("counts[i, j] exceeds the cells in which gene i or j is present", source)
    if not np.array_equal(counts, counts.T):
        raise InputError("counts is not symmetric", source)
    if np.any(sums > counts * (1.0 + _SUM_SLACK)):
        raise InputError(
            "sums[i, j] exceeds counts[i, j] (head-averaged attention lies in [0, 1])", source
        )
    if np.any(incoming[gene_cells == 0] != 0):
        raise InputError("incoming attention for a gene present in no cell", source)
    return AttentionSums(
        gene_ids=gene_ids.astype(str),
        gene_symbols=gene_symbols.astype(str),
        sums=sums,
        counts=counts,
        incoming=incoming,
        gene_cells=gene_cells,
        n_cells=n_cells,
        condition=condition,
    )


def save_attention_sums(path: str | Path, data: AttentionSums) -> None:
    """Check ``data`` and write it to ``path`` atomically (uncompressed ``.npz``).

    Parameters
    ----------
    path
        Output ``.npz``.
    data
        The sums; checked with :func:`check_attention_sums` first.
    """
    data = check_attention_sums(data, path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            gene_ids=data.gene_ids,
            gene_symbols=data.gene_symbols,
            sums=data.sums,
            counts=data.counts,
            incoming=data.incoming,
            gene_cells=data.gene_cells,
            n_cells=np.int64(data.n_cells),
            condition=np.str_(data.condition),
        )


def load_attention_sums(path: str | Path) -> AttentionSums:
    """Read and check an attention-sums file.

    Parameters
    ----------
    path
        A ``.npz`` written by :func:`save_attention_sums` (or by the attention kernel in the
        same format).

    Returns
    -------
    AttentionSums
        The checked sums.

    Raises
    ------
    InputError
        If the file is missing, is not an ``.npz``, lacks an array, or fails the checks of
        :func:`check_attention_sums`.
    """
    path = Path(path)
    arrays = read_npz_arrays(path, ARRAY_NAMES, "an attention-sums file")
    condition = arrays["condition"]
    if condition.shape != () or condition.dtype.kind != "U":
        raise InputError("condition must be a string scalar", path)
    return check_attention_sums(
        AttentionSums(
            gene_ids=arrays["gene_ids"],
            gene_symbols=arrays["gene_symbols"],
            sums=arrays["sums"],
            counts=arrays["counts"],
            incoming=arrays["incoming"],
            gene_cells=arrays["gene_cells"],
            n_cells=arrays["n_cells"],
            condition=str(condition),
        ),
        path,
    )


def gather_attention_sums(paths: Sequence[str | Path]) -> AttentionSums:
    """Add up the attention sums of several shards of one condition.

    Parameters
    ----------
    paths
        Shard files, in any order (addition is exact for the integer arrays; the float sums
        are added in the given order).

    Returns
    -------
    AttentionSums
        Elementwise sums of ``sums``, ``counts``, ``incoming``, ``gene_cells`` and ``n_cells``.

    Raises
    ------
    InputError
        If no path is given, or a shard's gene IDs, gene order, symbols or condition differ from
        the first shard's (the error names the shard).
    """
    if not paths:
        raise InputError("no attention shard to gather")
    first = load_attention_sums(paths[0])
    sums = first.sums.copy()
    counts = first.counts.copy()
    incoming = first.incoming.copy()
    gene_cells = first.gene_cells.copy()
    n_cells = first.n_cells
    for path in paths[1:]:
        shard = load_attention_sums(path)
        if not np.array_equal(shard.gene_ids, first.gene_ids):
            same_set = set(shard.gene_ids.tolist()) == set(first.gene_ids.tolist())
            what = "gene order" if same_set else "gene universe"
            raise InputError(f"{what} differs from the first shard {paths[0]}", path)
        if not np.array_equal(shard.gene_symbols, first.gene_symbols):
            raise InputError(f"gene symbols differ from the first shard {paths[0]}", path)
        if shard.condition != first.condition:
            raise InputError(
                f"condition {shard.condition!r} differs from {first.condition!r} of {paths[0]}",
                path,
            )
        sums += shard.sums
        counts += shard.counts
        incoming += shard.incoming
        gene_cells += shard.gene_cells
        n_cells += shard.n_cells
    return AttentionSums(
        gene_ids=first.gene_ids,
        gene_symbols=first.gene_symbols,
        sums=sums,
        counts=counts,
        incoming=incoming,
        gene_cells=gene_cells,
        n_cells=n_cells,
        condition=first.condition,
    )


def _array(
    value: object,
    name: str,
    shape: tuple[int, ...],
    kinds: str,
    dtype: type[np.generic],
    source: str | Path | None,
) -> np.ndarray:
    arr = np.asarray(value)
    if arr.shape != shape:
        raise InputError(f"{name} has shape {arr.shape}, expected {shape}", source)
    if arr.dtype.kind not in kinds:
        raise InputError(f"{name} has dtype {arr.dtype}, expected {np.dtype(dtype)}", source)
    return np.ascontiguousarray(arr, dtype=dtype)


def _scalar_int(value: object, name: str, source: str | Path | None) -> int:
    arr = np.asarray(value)
    if arr.shape != () or arr.dtype.kind not in "iu":
        raise InputError(f"{name} must be an integer scalar", source)
    return int(arr)

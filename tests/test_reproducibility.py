"""Reproducibility of the real demo workflow: repeated runs, thread counts, killed runs.

Each test runs the whole demo study in a scratch directory (tests/workflow_runs.py) and
compares it with the session's uninterrupted local run (the ``demo_run`` fixture):

- a second run gives byte-identical result tables and report: the run below that is killed
  and resumed is a second whole run (the outputs made before the kill, then the rest), and
  every one of its tables and its report are compared byte for byte (so is the SLURM run in
  ``test_slurm.py``);
- ``--cores 1`` (every job's ``--threads 1``, so 1-thread rayon pools) gives the same tables
  as ``--cores 2`` within float round-off, up to the perturbation and differential tables;
- a run SIGKILLed while an attention job runs leaves nothing partial under a final output
  name, and ``snakemake --unlock`` + ``--rerun-incomplete`` completes it to the same bytes.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest
from workflow_runs import (
    ATOMIC_TEMP,
    RUN_TIMEOUT,
    STUDY,
    Run,
    byte_differences,
    discard,
    kill_group,
    prepare_workdir,
    read_whole,
    result_tables,
    run_workflow,
    sha256,
    start_workflow,
    table_differences,
    wait_for,
)

pytestmark = pytest.mark.slow

#: Outputs every demo run must have (so the comparisons below cannot pass on nothing).
EXPECTED = {
    "modules.tsv",
    "enrichment.tsv",
    "differential.tsv",
    "evaluation.tsv",
    "perturbation.tsv",
    "report.html",
}

#: The one-thread run's targets: every stage that runs a rayon pool feeds one of them.
THREADED_TARGETS = ("differential.tsv", "perturbation.tsv")

#: Relative tolerance for "equal within round-off". The stages print floats with six
#: significant digits (``%.6g``), so a round-off difference far below that can still flip
#: the last printed digit: one unit in the sixth digit is at most 1e-5 of the value.
ROUND_OFF_RTOL = 1e-5
ROUND_OFF_ATOL = 1e-12


def test_one_thread_gives_the_two_thread_tables_within_round_off(
    demo_run: Run, resources_dir: Path, tmp_path: Path
) -> None:
    workdir = prepare_workdir(tmp_path / "one_thread", resources_dir)
    # Up to the tables of the threaded stages (embed, attention, module attention and
    # perturb shards, and what they feed): evaluate, module analysis and the report run
    # no rayon pool, and the demo run already covers them.
    targets = [f"results/{STUDY}/{name}" for name in THREADED_TARGETS]
    one = run_workflow(workdir, "--printshellcmds", *targets, cores=1)

    # The thread count really reached the command lines (and from there the rayon pools).
    threads = re.compile(r"--threads (\d+)")
    assert set(threads.findall(one.log.read_text(encoding="utf-8"))) == {"1"}
    assert "2" in threads.findall(demo_run.log.read_text(encoding="utf-8"))

    tables = [n for n in result_tables(one.results) if n.endswith(".tsv")]
    assert set(tables) >= set(THREADED_TARGETS)
    assert set(tables) <= set(result_tables(demo_run.results))
    differences = [
        line
        for name in tables
        for line in table_differences(
            one.results / name,
            demo_run.results / name,
            rtol=ROUND_OFF_RTOL,
            atol=ROUND_OFF_ATOL,
        )
    ]
    assert differences == []
    discard(workdir)


def _live_group_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that are not zombies (a container's init may not reap)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses
        state, _ppid, pgrp = text[text.rindex(")") + 2 :].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            members.append(int(stat.parent.name))
    return members


def test_killed_run_leaves_no_partial_output_and_resumes(
    demo_run: Run, resources_dir: Path, tmp_path: Path
) -> None:
    workdir = prepare_workdir(tmp_path / "killed", resources_dir)
    logs = workdir / "logs" / STUDY
    results = workdir / "results" / STUDY

    def writing() -> bool:
        return any(ATOMIC_TEMP.match(p.name) for p in results.rglob(".*"))

    proc = start_workflow(workdir, cores=2)
    try:
        # Wait until an attention job runs, then (for up to 30 s) until some output is being
        # written under its temporary name, and kill Snakemake and its jobs there.
        started = wait_for(lambda: any(logs.glob("attention*.log")), timeout=RUN_TIMEOUT, proc=proc)
        if started:
            wait_for(writing, timeout=30, proc=proc, interval=0.01)
    finally:
        kill_group(proc)
    out = (workdir / "snakemake.out").read_text(encoding="utf-8", errors="replace")
    assert started, f"no attention job started; Snakemake said:\n{out[-3000:]}"
    assert proc.returncode == -signal.SIGKILL, f"the run ended by itself ({proc.returncode})"
    assert wait_for(lambda: not _live_group_members(proc.pid), timeout=10)
    assert not (results / "report.html").exists()
    # Snakemake recorded the job it was running as incomplete.
    assert any((workdir / ".snakemake" / "incomplete").iterdir())

    # Every file under a final name is complete: equal to the uninterrupted run's file, or
    # (for the shard files that run deleted as temp()) readable to the end. Temporary names
    # of geneattn.io.atomic may be left behind; they are not outputs.
    baseline = demo_run.results
    problems = []
    for path in sorted(p for p in results.rglob("*") if p.is_file()):
        rel = path.relative_to(results)
        if ATOMIC_TEMP.match(path.name):
            continue
        if (baseline / rel).is_file():
            if sha256(path) != sha256(baseline / rel):
                problems.append(f"{rel}: differs from the uninterrupted run")
        else:
            try:
                read_whole(path)
            except Exception as err:
                problems.append(f"{rel}: {type(err).__name__}: {err}")
    assert problems == []

    # A killed Snakemake leaves its lock; --unlock, then --rerun-incomplete finishes the run.
    run_workflow(workdir, "--unlock", cores=None, log_name="unlock.out")
    resumed = run_workflow(workdir, "--rerun-incomplete", cores=2, log_name="resume.out")
    names = result_tables(demo_run.results)
    assert set(names) >= EXPECTED
    assert result_tables(resumed.results) == names
    assert byte_differences(demo_run.results, resumed.results, names) == []
    discard(workdir)

"""The demo study through the SLURM executor with workflow/profiles/slurm, on a real cluster.

A single-node SLURM is started on this machine (tests/local_slurm.py: Debian's packages are
installed when missing, the daemons run as children of the test and are stopped by pid).
The test skips, saying why, when that is impossible here (not root, no apt, installation
failed, node not idle in time). Every job of the run must go through ``sbatch`` and the
result tables must equal, byte for byte, those of the session's local run. The run stops at
the differential, enrichment and perturbation tables: every sharded, multi-threaded and
gathering rule is on the way there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import local_slurm
import pytest
import yaml
from local_slurm import ClusterUnavailable, LocalSlurm, ensure_installed, start_cluster
from workflow_runs import (
    ROOT,
    STUDY,
    Run,
    byte_differences,
    discard,
    prepare_workdir,
    result_tables,
    run_workflow,
)

PROFILE = "workflow/profiles/slurm"

#: Test-only speed settings: the plugin waits 40 s before a job's first status check and
#: after each finished job (sensible on a busy cluster, minutes of idling on this one).
FAST_STATUS_CHECKS = (
    "--slurm-init-seconds-before-status-checks",
    "1",
    "--seconds-between-status-checks",
    "1",
)


#: What the SLURM run makes: every rule with shards, threads or a gather feeds one of these.
#: The single-thread tail (evaluate, module analysis, report) is left to the local runs, so
#: the test's time goes to sbatch jobs of the rules whose resources differ.
SLURM_TARGETS = ("differential.tsv", "perturbation.tsv", "enrichment.tsv")


def _profile() -> dict:
    return yaml.safe_load((ROOT / PROFILE / "profile.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def slurm_cluster() -> Iterator[LocalSlurm]:
    """A running single-node cluster whose one partition is the profile's default."""
    try:
        ensure_installed()
        cluster = start_cluster(
            partition=str(_profile()["default-resources"]["slurm_partition"]),
            # Twice the cores: the demo's jobs are short and mostly interpreter start-up,
            # so two of them share a core well (each still gets its rule's threads).
            cpus=2 * max(2, os.cpu_count() or 1),
        )
    except ClusterUnavailable as err:
        pytest.skip(f"no single-node SLURM here: {err}")
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


def test_cluster_setup_says_why_it_cannot_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_slurm, "which", lambda program: None)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ClusterUnavailable, match="needs root"):
        ensure_installed()
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(ClusterUnavailable, match="no apt-get"):
        ensure_installed()


def test_cluster_setup_reports_a_failed_install(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_run(command, **kwargs):
        calls.append(command[3])
        return subprocess.CompletedProcess(command, 100, "", "E: Unable to locate package munge")

    monkeypatch.setattr(
        local_slurm, "which", lambda p: "/usr/bin/apt-get" if p == "apt-get" else None
    )
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(ClusterUnavailable, match="Unable to locate package munge"):
        ensure_installed()
    assert calls == ["install", "update"]


def test_profile_sets_what_a_cluster_without_accounting_needs() -> None:
    profile = _profile()
    assert profile["executor"] == "slurm"
    assert profile["slurm-status-command"] == "squeue"
    assert profile["rerun-incomplete"] is True
    assert {"slurm_partition", "mem_mb", "runtime"} <= set(profile["default-resources"])


@pytest.mark.slow
@pytest.mark.early(rank=0)
def test_demo_on_slurm_equals_local_run(
    slurm_cluster: LocalSlurm,
    resources_dir: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    workdir = prepare_workdir(tmp_path / "slurm", resources_dir)
    run = run_workflow(
        workdir,
        "--workflow-profile",
        PROFILE,
        *FAST_STATUS_CHECKS,
        *(f"results/{STUDY}/{name}" for name in SLURM_TARGETS),
        cores=None,
        env=slurm_cluster.env,
    )
    log = run.log.read_text(encoding="utf-8", errors="replace")

    # Every job Snakemake finished (but the target rule `all`) was an sbatch job of this
    # cluster, and the cluster saw each of them complete.
    submitted = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", log))
    jobs = re.findall(r"Finished jobid: (\d+) \(Rule: (\w+)\)", log)
    finished = {job for job, rule in jobs if rule != "all"}
    assert finished, f"no job finished; see {run.log}"
    assert finished <= set(submitted), f"jobs run outside SLURM: {finished - set(submitted)}"
    states = slurm_cluster.job_states()
    finished_states = {
        job: states.get(slurm_id) for job, slurm_id in submitted.items() if job in finished
    }
    assert set(finished_states.values()) == {"COMPLETED"}, finished_states

    # the session's local run, asked for only now: this run starts beside it
    demo_run: Run = request.getfixturevalue("demo_run")
    names = result_tables(run.results)
    assert set(names) >= set(SLURM_TARGETS)
    assert set(names) <= set(result_tables(demo_run.results))
    assert byte_differences(demo_run.results, run.results, names) == []
    discard(workdir)

"""The stage benchmark (``geneattn bench stages``): fits, tables, plots, and a tiny real run.

Nothing here asserts a time: the tiny run checks that the tables have their columns and
rows, that the exponent fit recovers known exponents, and that the plots are written.
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geneattn.bench.scaling import fit_power_law, projected_seconds
from geneattn.bench.stage_jobs import STAGE_NAMES, Job, StageJobs, shard_count, with_needs
from geneattn.bench.stage_tables import read_table, scaling_rows, write_table
from geneattn.bench.stages import JOB_COLUMNS, STAGE_COLUMNS, StageResult, _run_stage

ROOT = Path(__file__).resolve().parents[1]


def test_fit_recovers_known_exponents():
    rng = np.random.default_rng(0)
    x = np.array([1e3, 3e3, 1e4, 3e4, 1e5])
    for b in (0.0, 0.5, 1.0, 1.3):
        y = 0.02 * x**b * np.exp(rng.normal(0, 0.02, len(x)))
        fit = fit_power_law(x, y)
        assert fit is not None and fit.n == 5
        assert fit.b == pytest.approx(b, abs=0.05)
        assert fit.r2 > 0.99 or b == 0.0
    exact = fit_power_law([10, 100], [3.0, 30.0])
    assert exact.b == pytest.approx(1.0) and exact.a == pytest.approx(0.3)
    assert math.isnan(exact.r2)
    assert fit_power_law([10], [1.0]) is None
    assert fit_power_law([10, 10], [1.0, 2.0]) is None
    assert fit_power_law([10, 100, 1000], [1.0, float("nan"), 100.0]).n == 2


def test_projection_is_at_least_linear():
    assert projected_seconds([1000], [10.0], 10_000) == pytest.approx(100.0)
    assert projected_seconds([1000, 10_000], [10.0, 50.0], 100_000) == pytest.approx(500.0)
    assert projected_seconds([1000, 10_000], [1.0, 100.0], 100_000) == pytest.approx(10_000.0)
    assert math.isnan(projected_seconds([], [], 10))


def test_stage_needs_and_shards():
    assert with_needs(["tokenize"]) == ["qc", "tokenize"]
    assert with_needs(["differential"])[-3:] == ["modules", "module-attention", "differential"]
    assert with_needs(["report"]) == [s for s in STAGE_NAMES if not s.startswith("load-")]
    with pytest.raises(ValueError, match="unknown stages"):
        with_needs(["nope"])
    assert [shard_count(n, 5000) for n in (0, 1, 5000, 5001, 54_000)] == [1, 1, 1, 2, 11]


def test_jobs_follow_the_config(tmp_path):
    import json

    from geneattn.bench.stages import load_study_config

    config = load_study_config(
        ROOT / "config.yaml", ["tokenize.max_len=256", "perturb.genes=[CD8A]"]
    )
    (tmp_path / "tokenize_summary.json").write_text(
        json.dumps({"cells_out": 17, "cells_by_label": {"Tumor": 12, "NAT": 5}})
    )
    jobs = StageJobs(
        tmp_path, tmp_path / "res", config, threads=3, cells_per_shard=5, geneattn=("geneattn",)
    )
    tok = jobs.jobs("tokenize")[0]
    assert tok.argv[tok.argv.index("--max-len") + 1] == "256" and tok.threads == 3
    attention = jobs.jobs("attention")
    assert [j.label for j in attention] == [
        "case shard 1/3", "case shard 2/3", "case shard 3/3", "control shard 1/1",
    ]  # fmt: skip
    assert [j.profile for j in attention] == [True, False, False, True]
    assert all("--universe-table" in j.argv for j in attention)
    assert [j.label for j in jobs.jobs("embed")] == [f"shard {s}/4" for s in (1, 2, 3, 4)]
    assert "CD8A" in jobs.jobs("perturb-plan")[0].argv
    perturb = jobs.jobs("perturb")
    assert len(perturb) == 3 and all("--plan" in j.argv for j in perturb)
    diff = jobs.jobs("differential")[0].argv
    assert sum(a.endswith(".npz") and "module_attention/case" in a for a in diff) == 3
    analysis = jobs.jobs("module-analysis")[0].argv
    assert analysis[analysis.index("--sample-column") + 1] == config["conditions"]["sample"]
    assert {"--case-network", "--control-network"} <= set(analysis)
    report = jobs.jobs("report")[0].argv
    assert {"--module-traits", "--module-preservation", "--skipped"} <= set(report)


#: Workflow rules that are no stage of their own: the target, resources, the benchmark,
#: and optional outputs, off in config.yaml (each runs a stage's command on other inputs
#: or with more options).
NOT_STAGES = {
    "all", "fetch_resources", "bench", "attention_graph", "gene_embeddings", "gene_shifts",
    "alt_states_embed",
}  # fmt: skip
#: The stage that measures each rule's command.
RULE_STAGES = {
    "qc": "qc", "tokenize": "tokenize", "model": "model", "embed_shard": "embed",
    "embed": "gather-embeddings", "universe": "universe", "attention_shard": "attention",
    "gather_attention": "gather-attention", "network": "network", "modules": "modules",
    "module_analysis": "module-analysis", "module_attention": "module-attention",
    "differential": "differential", "evaluate": "evaluate", "perturb_plan": "perturb-plan",
    "perturb_shard": "perturb", "perturbation": "perturb-stats", "report": "report",
}  # fmt: skip


def test_every_rule_of_the_workflow_is_a_stage():
    """A rule added to the workflow without a stage would go unmeasured at scale."""
    import re

    text = "".join(f.read_text() for f in sorted((ROOT / "workflow" / "rules").glob("*.smk")))
    rules = set(re.findall(r"^\s*(?:rule|checkpoint) (\w+):", text, re.M))
    assert rules - NOT_STAGES == set(RULE_STAGES)
    assert set(RULE_STAGES.values()) == {s for s in STAGE_NAMES if not s.startswith("load-")}


def _results() -> list[StageResult]:
    rows = []
    for n in (1000, 10_000, 100_000):
        rows.append(StageResult(n, n - 20, "embed", "stage", 1, 1, 0.01 * n, 0.02 * n, 150.0))
        rows.append(
            StageResult(n, n - 20, "attention", "stage", 2, 2, 0.002 * n**1.1, 1.0, n / 100)
        )
        rows.append(StageResult(n, n - 20, "load-tokens-shard", "probe", 1, 1, 0.5, 0.4, 60.0))
    rows[-3].status, rows[-3].jobs = "skipped: projected 9,000 s > budget 1,800 s", 0
    return rows


def test_scaling_table_and_plots(tmp_path):
    from geneattn.bench.stage_plots import plot_stages

    results = _results()
    rows, columns = scaling_rows(results)
    by = {r["stage"]: r for r in rows}
    assert by["attention"]["b_time"] == pytest.approx(1.1, abs=1e-3)
    assert by["attention"]["b_time_top2"] == pytest.approx(1.1, abs=1e-3)
    assert by["attention"]["b_peak_rss"] == pytest.approx(1.0, abs=1e-3)
    assert by["embed"]["sizes_run"] == "1000,10000"
    assert "100000: skipped" in by["embed"]["not_run"]
    assert by["load-tokens-shard"]["b_peak_rss"] == pytest.approx(0.0, abs=1e-9)
    header = {"cpu": "test", "cells": "demo cells resampled with replacement"}
    write_table(tmp_path / "scaling.tsv", header, columns, rows)
    table = pd.read_csv(tmp_path / "scaling.tsv", sep="\t", comment="#")
    assert list(table.columns) == columns and len(table) == 3
    assert (tmp_path / "scaling.tsv").read_text().startswith("# cpu: test\n")
    plot_stages(results, rows, tmp_path / "t.png", tmp_path / "m.png", header)
    for png in ("t.png", "m.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_launcher_measures_the_child_not_its_parent(tmp_path):
    """A child's peak RSS is its own, not inherited from the (larger) test process."""
    from geneattn.bench.stages import Launcher, _env

    ballast = np.ones(200 * 2**20 // 8)  # this process holds 200 MiB more than its children
    launcher = Launcher()
    try:
        small = launcher.run([sys.executable, "-c", "pass"], log=tmp_path / "a.log", env=_env(1))
        big = launcher.run(
            [sys.executable, "-c", "b = bytearray(300 * 2**20)"],
            log=tmp_path / "b.log",
            env=_env(1),
        )
    finally:
        launcher.close()
    assert ballast.sum() > 0
    assert small["returncode"] == 0 and big["returncode"] == 0
    assert small["maxrss_kib"] < 100 * 1024
    assert big["maxrss_kib"] > 300 * 1024
    assert small["launcher_maxrss_kib"] < 60 * 1024


def test_rss_steps_names_the_lines_of_run():
    from geneattn.bench.rss_steps import StepSampler

    source = textwrap.dedent(
        """
        import time
        def run():
            data = bytearray(64 * 2**20)
            time.sleep(0.15)
            return len(data)
        """
    )
    namespace = {"__name__": "geneattn.cli.fake"}
    exec(compile(source, "fake.py", "exec"), namespace)
    with StepSampler(interval=0.01) as sampler:
        namespace["run"]()
    steps = sampler.table()
    lines = [s for s in steps if s["step"].startswith("fake.py:")]
    assert lines and max(s["seconds"] for s in lines) > 0.05
    assert all(s["rss_max_mib"] >= s["rss_first_mib"] for s in steps)


class FakeLauncher:
    """Answers like :class:`geneattn.bench.stages.Launcher`, recording what it ran."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def run(self, argv, *, log, env):
        self.ran.append(argv[-1])
        return {"wall_s": 2.0, "user_s": 1.5, "sys_s": 0.5, "maxrss_kib": 2048, "returncode": 0}


def test_a_resumed_stage_runs_only_its_unfinished_jobs(tmp_path):
    jobs = [Job("embed", f"shard {i}/3", ("geneattn", "embed", str(i))) for i in (1, 2, 3)]
    finished = {
        "cells": 100, "stage": "embed", "job": "shard 2/3", "runs": 1, "wall_s": 7.0,
        "wall_s_runs": "7.000", "cpu_s": 6.0, "peak_rss_mib": 30.0, "returncode": 0,
    }  # fmt: skip
    stopped = dict(finished, job="shard 3/3", returncode=-9)
    job_rows = [finished, stopped]
    saves = []
    args = argparse.Namespace(stage_repeats=1, repeat_below=0.0, cells_per_shard=5)
    r = StageResult(cells=100, cells_qc=90, stage="embed", kind="stage", status="running")
    launcher = FakeLauncher()
    _run_stage(r, jobs, launcher, tmp_path, tmp_path, args, job_rows, [], lambda: saves.append(1))
    assert launcher.ran == ["1", "3"]
    assert len(saves) == 2
    assert r.status == "ok" and r.jobs == 3 and r.runs == 3
    assert r.wall_s == pytest.approx(11.0) and r.cpu_s == pytest.approx(10.0)
    assert r.peak_rss_mib == 30.0


def test_tiny_stage_run(tmp_path, resources_dir):
    """50 and 100 resampled cells through qc, tokenize and the partial token read.

    The run is then cut back to before its last stage, as a stopped run's tables are, and
    resumed: the stages it measured are kept as they were, the last one runs.
    """
    out = tmp_path / "bench"
    cmd = [
        sys.executable, "-m", "geneattn", "bench", "stages", "--sizes", "50", "100",
        "--stages", "load-tokens-shard", "--stage-repeats", "1", "--cells-per-shard", "20",
        "--out-dir", str(out), "--resources", str(resources_dir),
    ]  # fmt: skip
    done = subprocess.run([*cmd, "--keep-work"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    first = (out / "stages.tsv").read_text()
    for name in ("stages.tsv", "stage_jobs.tsv"):
        head, rows = read_table(out / name)
        rows = [r for r in rows if (r["cells"], r["stage"]) != ("100", "load-tokens-shard")]
        write_table(out / name, head, list(rows[0]), rows)
    other = [*cmd[:-4], "--cells-per-shard", "21", *cmd[-4:], "--resume"]
    refused = subprocess.run(other, capture_output=True, text=True, cwd=ROOT)
    assert refused.returncode != 0
    assert "stages.tsv" in refused.stderr and "cells_per_shard differ" in refused.stderr
    done = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "qc: ok (earlier run)" in done.stdout
    assert "load-tokens-shard: ok 1 job(s)" in done.stdout
    table = (out / "stages.tsv").read_text()
    assert "# runs: 2" in table and re.search(r"# code: \S+; run 2: \S+", table)
    assert [x for x in table.splitlines() if x.startswith(("50\t", "100\tqc", "100\ttok"))] == [
        x for x in first.splitlines() if x.startswith(("50\t", "100\tqc", "100\ttok"))
    ]
    stages = pd.read_csv(out / "stages.tsv", sep="\t", comment="#")
    assert list(stages.columns) == list(STAGE_COLUMNS)
    assert stages["stage"].tolist() == ["qc", "tokenize", "load-tokens-shard"] * 2
    assert (stages["status"] == "ok").all()
    assert stages["cells"].tolist() == [50] * 3 + [100] * 3
    assert (stages["cells_qc"] <= stages["cells"]).all()
    assert (stages["peak_rss_mib"] > 10).all() and (stages["wall_s"] > 0).all()
    jobs = pd.read_csv(out / "stage_jobs.tsv", sep="\t", comment="#")
    assert list(jobs.columns) == list(JOB_COLUMNS) and (jobs["returncode"] == 0).all()
    scaling = pd.read_csv(out / "scaling.tsv", sep="\t", comment="#")
    assert scaling["stage"].tolist() == ["qc", "tokenize", "load-tokens-shard"]
    assert scaling["b_time"].notna().all() and scaling["sizes_run"].eq("50,100").all()
    head = (out / "stages.tsv").read_text().splitlines()
    keys = {line[2:].split(":", 1)[0] for line in head if line.startswith("# ")}
    assert {"cpu", "packages", "seeds", "cells", "threads", "cells_per_shard"} <= keys
    assert any("resampled with replacement" in line for line in head)
    for png in ("stages_time.png", "stages_rss.png"):
        assert (out / png).stat().st_size > 1000
    assert not (out / "work" / "n100").exists()

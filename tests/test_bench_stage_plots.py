"""The stage benchmark's plots when stages fail or only one size ran: no crash, say why."""

from __future__ import annotations

import math

from geneattn.bench.stage_plots import plot_stages
from geneattn.bench.stage_tables import scaling_rows
from geneattn.bench.stages import StageResult

PNG = b"\x89PNG\r\n\x1a\n"


def _plot(results, tmp_path):
    rows, _ = scaling_rows(results)
    plot_stages(results, rows, tmp_path / "t.png", tmp_path / "m.png", {"cpu": "test"})
    return [(tmp_path / name).read_bytes()[:8] for name in ("t.png", "m.png")]


def test_every_stage_failed_at_the_only_size(tmp_path):
    # as at a million cells when qc is killed: qc failed, everything after it not run
    results = [StageResult(1_000_000, None, "qc", "stage", 1, 1, 75.0, 70.0, 23_600.0)]
    results[0].status = "failed: exit -9"
    for stage in ("tokenize", "model", "embed"):
        results.append(StageResult(1_000_000, None, stage, "stage", status="skipped: qc failed"))
    assert _plot(results, tmp_path) == [PNG, PNG]


def test_a_single_size_that_ran(tmp_path):
    results = [
        StageResult(1000, 980, "qc", "stage", 1, 1, 3.0, 2.5, 700.0),
        StageResult(1000, 980, "tokenize", "stage", 1, 1, 1.0, 0.9, 300.0),
    ]
    rows, _ = scaling_rows(results)
    assert all(not isinstance(r.get("b_time"), float) or math.isnan(r["b_time"]) for r in rows)
    assert _plot(results, tmp_path) == [PNG, PNG]


def test_no_results_at_all(tmp_path):
    assert _plot([], tmp_path) == [PNG, PNG]

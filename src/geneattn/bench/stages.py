"""``geneattn bench stages``: every workflow stage's command line on 1k, 10k and 100k cells.

For each size, cells are drawn with replacement (seeded) from the real demo study's case
and control cells (:mod:`geneattn.bench.resample`); every table row and plot says so. Each
stage's ``geneattn`` command line (:mod:`geneattn.bench.stage_jobs`, the rules' arguments)
then runs as a subprocess started by :mod:`geneattn.bench.launcher`, which records its wall
time, CPU time and peak RSS (``wait4``). Sharded stages run one job per shard of at most
``--cells-per-shard`` cells, one after another; their wall time is the sum of the jobs, their
peak RSS the largest job's, which is what a cluster node running one shard job needs. The
first shard job of each sharded stage (and ``embed``) runs under
:mod:`geneattn.bench.rss_steps`, which tells how much memory each line of the command holds.

A stage whose projected time at the next size (its last time scaled with its fitted
exponent, at least linearly) exceeds ``--budget``, or that failed at a smaller size, is not
run there; its row says so, as do the rows of the stages that need its outputs. A job is
repeated (``--stage-repeats``, median reported) only when its stage is quick (first run
times the number of jobs under ``--repeat-below`` seconds).

The tables are rewritten after every job, so a run that is stopped keeps what it measured;
``--resume`` continues it in its work directories: the stages and jobs its tables record are
kept (their rows as measured then), the rest run. A resumed run must have the same settings
(the header lines in :data:`RESUME_KEYS`); its header counts the runs and gives each
one's load average and code (git commit). Outputs, under ``--out-dir``:

``stages.tsv``
    One row per size and stage: jobs, runs, wall and CPU seconds, peak RSS, status.
``stage_jobs.tsv``
    One row per job.
``scaling.tsv``
    Per stage: the exponent ``b`` of time ~ cells^b (and of peak RSS), fitted by least
    squares on log-log axes over the sizes that ran, with the measurements.
``shard_steps.tsv``
    RSS by line of the profiled jobs.
``stages_time.png``, ``stages_rss.png``
    Time and peak RSS against cells.

Every table starts with ``# key: value`` lines: machine, package versions, seeds, settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from geneattn.bench.stage_jobs import SHARDED, STAGES, Job, StageJobs, with_needs

NAME = "stages"
HELP = "time and peak RSS of every stage's command line on 1k, 10k and 100k resampled cells"
DEFAULT_SIZES = (1_000, 10_000, 100_000)
#: Environment variables set to a job's threads, as Snakemake does for a rule's ``threads``.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
STAGE_COLUMNS = (
    "cells", "cells_qc", "stage", "kind", "jobs", "runs", "wall_s", "cpu_s", "peak_rss_mib",
    "status", "note",
)  # fmt: skip
JOB_COLUMNS = (
    "cells", "stage", "job", "runs", "wall_s", "wall_s_runs", "cpu_s", "peak_rss_mib",
    "returncode",
)  # fmt: skip
STEP_COLUMNS = (
    "cells", "stage", "job", "step", "first_s", "seconds", "rss_first_mib", "rss_max_mib",
    "vmhwm_mib",
)  # fmt: skip
LABEL = "demo cells resampled with replacement"
#: Header lines a resumed run must share with the run it continues.
RESUME_KEYS = (
    "cpu", "cores", "python", "packages", "cells", "seeds", "config", "threads",
    "cells_per_shard", "settings", "repeats",
)  # fmt: skip


@dataclasses.dataclass
class StageResult:
    """One stage at one size."""

    cells: int
    cells_qc: int | None
    stage: str
    kind: str
    jobs: int = 0
    runs: int = 0
    wall_s: float = math.nan
    cpu_s: float = math.nan
    peak_rss_mib: float = math.nan
    status: str = "ok"
    note: str = ""


@dataclasses.dataclass
class Earlier:
    """What the tables of a stopped run recorded, for ``--resume``.

    Attributes
    ----------
    header
        Its ``# key: value`` lines.
    stages
        Its stage rows by ``(cells, stage)``, as :class:`StageResult`.
    jobs
        Its job rows (numbers parsed).
    steps
        Its RSS-by-line rows (as written).
    """

    header: dict[str, str]
    stages: dict[tuple[int, str], StageResult]
    jobs: list[dict]
    steps: list[dict]

    def size_done(self, n: int, stages: Sequence[str]) -> bool:
        """Whether every one of ``stages`` has a finished row at ``n`` cells."""
        return all((n, s) in self.stages and self.stages[n, s].status != "running" for s in stages)


def read_earlier(out: Path, header: Mapping[str, str]) -> Earlier:
    """Read a stopped run's tables in ``out`` and check it had the same settings.

    Parameters
    ----------
    out
        The ``--out-dir`` of the run to continue.
    header
        This run's header lines; :data:`RESUME_KEYS` must equal the earlier run's.

    Returns
    -------
    Earlier
        Its rows.
    """
    from geneattn.bench.stage_tables import read_table
    from geneattn.errors import InputError

    path = out / "stages.tsv"
    if not path.exists():
        raise InputError("nothing to resume: no stages.tsv from an earlier run", path)
    head, rows = read_table(path)
    differ = [k for k in RESUME_KEYS if head.get(k) != " ".join(str(header[k]).split())]
    if differ:
        raise InputError(
            f"cannot resume a run with other settings ({', '.join(differ)} differ)", path
        )
    stages = {}
    for row in rows:
        r = StageResult(
            cells=int(row["cells"]),
            cells_qc=int(row["cells_qc"]) if row["cells_qc"] else None,
            stage=row["stage"],
            kind=row["kind"],
            jobs=int(row["jobs"]),
            runs=int(row["runs"]),
            wall_s=_number(row["wall_s"]),
            cpu_s=_number(row["cpu_s"]),
            peak_rss_mib=_number(row["peak_rss_mib"]),
            status=row["status"],
            note=row["note"],
        )
        stages[r.cells, r.stage] = r
    _, jobs = read_table(out / "stage_jobs.tsv")
    for row in jobs:
        for key in ("cells", "runs", "returncode"):
            row[key] = int(row[key])
        for key in ("wall_s", "cpu_s", "peak_rss_mib"):
            row[key] = _number(row[key])
    _, steps = read_table(out / "shard_steps.tsv")
    for row in steps:
        row["cells"] = int(row["cells"])
    return Earlier(head, stages, jobs, steps)


def _number(text: str) -> float:
    return float(text) if text else math.nan


class Launcher:
    """The small process that starts every job (:mod:`geneattn.bench.launcher`)."""

    def __init__(self) -> None:
        script = Path(__file__).with_name("launcher.py")
        self.proc = subprocess.Popen(
            [sys.executable, "-I", str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.floor_kib = 0

    def run(self, argv: Sequence[str], *, log: Path, env: Mapping[str, str]) -> dict:
        """Run one command to completion and return its measurements."""
        request = {"argv": list(argv), "log": str(log), "env": dict(env)}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        self.floor_kib = max(self.floor_kib, reply["launcher_maxrss_kib"])
        return reply

    def close(self) -> None:
        """End the launcher (it exits when its input closes)."""
        self.proc.stdin.close()
        self.proc.wait()
        self.proc.stdout.close()


def load_study_config(path: str | Path, overrides: Sequence[str] = ()) -> dict:
    """The study config with schema defaults filled and ``section.key=value`` overrides.

    Parameters
    ----------
    path
        ``config.yaml`` or a study file.
    overrides
        ``section.key=value`` strings; values are parsed as YAML.

    Returns
    -------
    dict
        The validated config.
    """
    import yaml
    from snakemake.utils import validate

    from geneattn.errors import InputError

    try:
        config = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise InputError(f"cannot read the config ({err})", path) from None
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--set needs section.key=value, got {item!r}")
        node = config
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = yaml.safe_load(value)
    schema = Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"
    if not schema.exists():
        schema = Path("workflow/schemas/config.schema.yaml")
    validate(config, str(schema))
    return config


def settings_lines(args: argparse.Namespace, config: Mapping) -> dict[str, str]:
    """What a reader needs to reproduce the run, for the tables' headers."""
    from geneattn.bench import machine_info, package_versions

    info = machine_info()
    info["packages"] = ", ".join(f"{k} {v}" for k, v in package_versions().items())
    info["load_average_at_start"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    info["code"] = _code_version()
    t, a, p = config["tokenize"], config["attention"], config["perturb"]
    info.update(
        {
            "cells": f"{LABEL} (seed {args.seed}) from the {config['conditions']['case']} and "
            f"{config['conditions']['control']} cells of {config['input']['path']}",
            "seeds": f"resampling {args.seed}; model {config['model']['seed']}; "
            f"modules {config['modules']['seed']}; perturb {p['seed']}; evaluation 0",
            "config": f"{args.config} {' '.join('--set ' + s for s in args.set)}".strip(),
            "threads": f"{args.threads} per job of a rule with threads: 2, else 1; jobs one "
            "at a time",
            "cells_per_shard": f"{args.cells_per_shard} cells of one condition per shard job "
            f"({', '.join(SHARDED)})",
            "settings": f"max_len {t['max_len']}; universe {a['universe']} "
            f"<= {a['universe_max_genes']} genes; perturb {p['genes_from']} x "
            f"{p['hubs_per_module']} per module, null {p['null_per_bin']} per bin; "
            f"permutations {config['modules']['permutations']}",
            "budget": f"a stage is not run at a size where its projected time exceeds "
            f"{args.budget:g} s",
            "repeats": f"a job runs {args.stage_repeats} times (median) when its first run "
            f"times its stage's jobs took under {args.repeat_below:g} s, else once",
            "peak_rss": "ru_maxrss of each job (wait4), started from a launcher process of "
            "a few MiB",
        }
    )
    return info


def run(args: argparse.Namespace) -> int:
    """Run the stage benchmark and write its tables and plots."""
    from geneattn.bench.scaling import projected_seconds
    from geneattn.errors import InputError

    sizes = sorted(set(args.sizes))
    if not sizes or sizes[0] < 1:
        raise InputError("--sizes must be positive numbers of cells")
    config = load_study_config(args.config, args.set)
    if not config.get("conditions"):
        raise InputError("the stage benchmark needs a case vs control study", args.config)
    resources = Path(args.resources or config["resources"]["dir"])
    demo = Path(config["input"]["path"])
    for needed in (demo, resources / "geneformer_v1" / "token_dictionary.tsv"):
        if not needed.exists():
            raise InputError("missing; run `geneattn fetch-resources` first", needed)
    chosen = with_needs(args.stages or [s.name for s in STAGES])
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    header = settings_lines(args, config)
    geneattn = _geneattn_command()
    kinds = {s.name: s.kind for s in STAGES}
    needs = {s.name: s.needs for s in STAGES}

    earlier = read_earlier(out, header) if args.resume else None
    wall_before = 0.0
    if earlier is not None:
        wall_before = float(earlier.header.get("bench_wall_s") or 0)
        runs = int(earlier.header.get("runs") or 1) + 1
        header["runs"] = str(runs)
        for key in ("load_average_at_start", "code"):
            header[key] = f"{earlier.header.get(key) or 'not recorded'}; run {runs}: {header[key]}"
    results: list[StageResult] = []
    job_rows: list[dict] = []
    step_rows: list[dict] = []
    launcher = Launcher()
    t_start = time.perf_counter() - wall_before
    # the tables after every job, so a run stopped midway keeps what it measured
    save = functools.partial(
        _write_outputs, out, header, results, job_rows, step_rows, launcher, t_start
    )
    try:
        for n in sizes:
            work = out / "work" / f"n{n}"
            logs = out / "logs" / f"n{n}"
            kept = _kept_rows(earlier, n, chosen, work, job_rows, step_rows)
            print(f"== {n:,} cells ({LABEL}, seed {args.seed})", flush=True)
            if not kept and (earlier is None or not earlier.size_done(n, chosen)):
                shutil.rmtree(work, ignore_errors=True)
            if earlier is not None and earlier.size_done(n, chosen) and not work.is_dir():
                results.extend(kept[s] for s in chosen)
                print("   every stage measured in the earlier run", flush=True)
                continue
            work.mkdir(parents=True, exist_ok=True)
            logs.mkdir(parents=True, exist_ok=True)
            cond = config["conditions"]
            resample = Job(
                "resample",
                "",
                (
                    sys.executable, "-m", "geneattn.bench.resample", str(demo),
                    str(work / "counts.h5ad"), "--cells", str(n), "--column", cond["column"],
                    "--labels", cond["case"], cond["control"], "--seed", str(args.seed),
                ),
            )  # fmt: skip
            if not (kept and (work / "counts.h5ad").exists()):
                reply = launcher.run(resample.argv, log=logs / "resample.log", env=_env(1))
                if reply["returncode"]:
                    raise InputError(f"resampling failed; see {logs / 'resample.log'}")
            jobs_of = StageJobs(
                work,
                resources,
                config,
                threads=args.threads,
                cells_per_shard=args.cells_per_shard,
                geneattn=geneattn,
            )
            done: dict[str, StageResult] = {}
            cells_qc = None
            for stage in chosen:
                if stage in kept:
                    done[stage] = kept[stage]
                    results.append(kept[stage])
                    cells_qc = kept[stage].cells_qc
                    print(f"   {stage}: {kept[stage].status} (earlier run)", flush=True)
                    save()
                    continue
                r = StageResult(cells=n, cells_qc=None, stage=stage, kind=kinds[stage])
                done[stage] = r
                results.append(r)
                blocked = [s for s in needs[stage] if s in done and done[s].status != "ok"]
                if blocked:
                    r.status = f"skipped: needs {', '.join(blocked)}"
                    continue
                failed = [x for x in results if x.stage == stage and x.status.startswith("fail")]
                if failed:
                    r.status = f"skipped: failed at {failed[0].cells:,} cells"
                    print(f"   {stage}: {r.status}", flush=True)
                    continue
                measured = [x for x in results if x.stage == stage and x.status == "ok"]
                projected = projected_seconds(
                    [x.cells for x in measured], [x.wall_s for x in measured], n
                )
                if projected > args.budget:
                    r.status = (
                        f"skipped: projected {projected:,.0f} s > budget {args.budget:,.0f} s"
                    )
                    print(f"   {stage}: {r.status}", flush=True)
                    continue
                r.status = "running"
                _run_stage(
                    r, jobs_of.jobs(stage), launcher, logs, work, args, job_rows, step_rows, save
                )
                if stage == "qc" and r.status == "ok":
                    cells_qc = jobs_of.cells_after_qc()
                r.cells_qc = cells_qc
                print(
                    f"   {stage}: {r.status} {r.jobs} job(s) {r.wall_s:.1f} s, "
                    f"peak {r.peak_rss_mib:.0f} MiB",
                    flush=True,
                )
                save()
            if not args.keep_work:
                shutil.rmtree(work, ignore_errors=True)
    finally:
        launcher.close()
        if not args.keep_work and (out / "work").is_dir() and not any((out / "work").iterdir()):
            (out / "work").rmdir()
    _write_outputs(out, header, results, job_rows, step_rows, launcher, t_start, plots=True)
    print(f"wrote {out}/stages.tsv, scaling.tsv, stage_jobs.tsv, shard_steps.tsv and plots")
    return 0


def _kept_rows(
    earlier: Earlier | None,
    n: int,
    chosen: Sequence[str],
    work: Path,
    job_rows: list[dict],
    step_rows: list[dict],
) -> dict[str, StageResult]:
    """The earlier run's stages at ``n`` cells to keep; adds their (and finished) jobs' rows.

    With the size's work directory, stages that ran (``ok`` or failed) are kept, as are the
    finished jobs of the others (a stage stopped midway runs only its remaining jobs). A
    size whose every stage finished is kept whole (its work directory may be gone); a size
    without its work directory otherwise runs again from the start.
    """
    if earlier is None:
        return {}
    if earlier.size_done(n, chosen) and not work.is_dir():
        kept = {s: earlier.stages[n, s] for s in chosen}
    elif work.is_dir():
        kept = {
            s: earlier.stages[n, s]
            for s in chosen
            if (n, s) in earlier.stages and earlier.stages[n, s].status.startswith(("ok", "failed"))
        }
    else:
        kept = {}
    if not kept:
        return {}
    jobs = [
        row
        for row in earlier.jobs
        if row["cells"] == n and (row["stage"] in kept or row["returncode"] == 0)
    ]
    keys = {(row["stage"], row["job"]) for row in jobs}
    job_rows.extend(jobs)
    step_rows.extend(
        row for row in earlier.steps if row["cells"] == n and (row["stage"], row["job"]) in keys
    )
    return kept


def _run_stage(
    r: StageResult,
    jobs: list[Job],
    launcher: Launcher,
    logs: Path,
    work: Path,
    args: argparse.Namespace,
    job_rows: list[dict],
    step_rows: list[dict],
    save: Callable[[], None] | None = None,
) -> None:
    """Run the jobs of one stage (each repeated when fast) and fill ``r``.

    Jobs that already have a finished row in ``job_rows`` (a resumed run) are not run
    again; their row counts. ``save`` is called after every job.
    """
    finished = {
        row["job"]: row
        for row in job_rows
        if row["cells"] == r.cells and row["stage"] == r.stage and row["returncode"] == 0
    }
    walls, cpus, peaks, runs = [], [], [], 0
    for i, job in enumerate(jobs):
        row = finished.get(job.label or job.stage)
        if row is not None:
            walls.append(row["wall_s"])
            cpus.append(row["cpu_s"])
            peaks.append(row["peak_rss_mib"])
            runs += row["runs"]
            continue
        argv = job.argv
        steps_file = work / f"steps.{job.stage}.{i}.json"
        if job.profile:
            argv = (
                sys.executable, "-m", "geneattn.bench.rss_steps", "--out", str(steps_file),
                "--", *job.argv[len(_geneattn_command()) :],
            )  # fmt: skip
        log = logs / f"{job.stage}.{i}.log"
        log.write_text(job.shell() + "\n", encoding="utf-8")
        replies = []
        while True:
            reply = launcher.run(argv, log=log, env=_env(job.threads))
            replies.append(reply)
            if reply["returncode"] or len(replies) >= args.stage_repeats:
                break
            if replies[0]["wall_s"] * len(jobs) >= args.repeat_below:
                break
        wall = statistics.median(x["wall_s"] for x in replies)
        cpu = statistics.median(x["user_s"] + x["sys_s"] for x in replies)
        peak = max(x["maxrss_kib"] for x in replies) / 1024
        job_rows.append(
            {
                "cells": r.cells,
                "stage": job.stage,
                "job": job.label or job.stage,
                "runs": len(replies),
                "wall_s": round(wall, 3),
                "wall_s_runs": ",".join(f"{x['wall_s']:.3f}" for x in replies),
                "cpu_s": round(cpu, 3),
                "peak_rss_mib": round(peak, 1),
                "returncode": replies[-1]["returncode"],
            }
        )
        walls.append(wall)
        cpus.append(cpu)
        peaks.append(peak)
        runs += len(replies)
        if replies[-1]["returncode"]:
            tail = _last_line(log)
            r.status = f"failed: {job.label or job.stage} exit {replies[-1]['returncode']}: {tail}"
            if save is not None:
                save()
            break
        if job.profile and steps_file.exists():
            prof = json.loads(steps_file.read_text(encoding="utf-8"))
            for step in prof["steps"]:
                step_rows.append(
                    {
                        "cells": r.cells,
                        "stage": job.stage,
                        "job": job.label or job.stage,
                        **step,
                        "vmhwm_mib": prof["vmhwm_mib"],
                    }
                )
        if save is not None:
            save()
    r.jobs, r.runs = len(walls), runs
    r.wall_s, r.cpu_s = sum(walls), sum(cpus)
    r.peak_rss_mib = max(peaks) if peaks else math.nan
    if r.stage in SHARDED and jobs:
        r.note = (
            f"{len(jobs)} shard jobs of <= {args.cells_per_shard:,} cells of a condition, run "
            "one after another: wall = sum, peak = largest job"
        )
    elif len(jobs) > 1:
        r.note = f"{len(jobs)} jobs ({', '.join(j.label for j in jobs)}): wall = sum"
    elif r.kind == "probe" and jobs:
        r.note = jobs[0].label
    if r.status in ("ok", "running"):
        r.status = "ok" if jobs else "ok: no jobs in this configuration"


def _code_version() -> str:
    """The git commit of the checkout this package runs from (``+`` if it has changes)."""
    from geneattn import __version__

    src = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no", "."],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"geneattn {__version__} (no git checkout)"
    return commit + ("+" if changed else "")


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for name in THREAD_VARIABLES:
        env[name] = str(threads)
    return env


def _geneattn_command() -> tuple[str, ...]:
    """The console script beside this interpreter, or ``python -m geneattn``."""
    script = Path(sys.executable).with_name("geneattn")
    return (str(script),) if script.exists() else (sys.executable, "-m", "geneattn")


def _last_line(log: Path) -> str:
    lines = [x for x in log.read_text(encoding="utf-8", errors="replace").splitlines() if x]
    return lines[-1][:200] if lines else "(no output)"


def _write_outputs(
    out: Path,
    header: Mapping[str, str],
    results: list[StageResult],
    job_rows: list[dict],
    step_rows: list[dict],
    launcher: Launcher,
    t_start: float,
    *,
    plots: bool = False,
) -> None:
    """Write the tables (and, at the end, the plots) from the results so far."""
    from geneattn.bench.stage_tables import scaling_rows, write_table

    head = dict(header)
    head["launcher_peak_rss"] = f"{launcher.floor_kib / 1024:.1f} MiB (floor of every peak)"
    head["bench_wall_s"] = f"{time.perf_counter() - t_start:.0f}"
    stage_dicts = [dataclasses.asdict(r) for r in results]
    write_table(out / "stages.tsv", head, STAGE_COLUMNS, stage_dicts)
    write_table(out / "stage_jobs.tsv", head, JOB_COLUMNS, job_rows)
    write_table(out / "shard_steps.tsv", head, STEP_COLUMNS, step_rows)
    scaling, columns = scaling_rows(results)
    write_table(out / "scaling.tsv", head, columns, scaling)
    if plots:
        from geneattn.bench.stage_plots import plot_stages

        plot_stages(results, scaling, out / "stages_time.png", out / "stages_rss.png", head)

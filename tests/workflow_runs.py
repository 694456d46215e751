"""Run the real demo workflow in scratch directories, for the end-to-end tests.

A scratch directory gets a copy of the workflow files (``Snakefile``, ``config.yaml``,
``workflow/``, ``envs/``) and a symlink ``resources`` to the fetched resources, so runs
never touch the checkout's ``results/``, ``logs/`` or ``.snakemake/``. Snakemake is started
with the interpreter running the tests (``python -m snakemake``); ``common.smk`` puts that
interpreter's ``bin`` directory on ``PATH``, so the jobs find the same ``geneattn``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]

#: What a scratch directory needs from the checkout (copied, so edits to the checkout
#: during a long test session cannot change a run half-way).
WORKFLOW_FILES = ("Snakefile", "config.yaml", "workflow", "envs")

#: The demo study's name: outputs go to ``results/{STUDY}/``.
STUDY = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))["study"]

#: Generous ceiling for one full run (about a minute on 2 idle cores).
RUN_TIMEOUT = 900.0


class WorkflowFailed(AssertionError):
    """A Snakemake run exited with an error or did not finish in time."""


@dataclass(frozen=True)
class Run:
    """A finished Snakemake run.

    Attributes
    ----------
    workdir
        The scratch directory it ran in.
    seconds
        Wall time of the ``snakemake`` command.
    log
        File holding Snakemake's stdout and stderr.
    """

    workdir: Path
    seconds: float
    log: Path

    @property
    def results(self) -> Path:
        """``results/{study}/`` of the run."""
        return self.workdir / "results" / STUDY


def prepare_workdir(dest: Path, resources: Path) -> Path:
    """Copy the workflow into ``dest`` and link the fetched resources.

    Parameters
    ----------
    dest
        Scratch directory (created; must not hold a workflow yet).
    resources
        The fetched resources directory (the ``resources_dir`` session fixture).

    Returns
    -------
    Path
        ``dest``.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    (dest / "resources").symlink_to(resources.resolve(), target_is_directory=True)
    return dest


def discard(workdir: Path) -> None:
    """Delete a scratch directory once its test passed (a demo run holds about 180 MB)."""
    shutil.rmtree(workdir, ignore_errors=True)


def snakemake_command(*args: str, cores: int | None = 2) -> list[str]:
    """``python -m snakemake [--cores N] args...`` with the interpreter running the tests."""
    command = [sys.executable, "-m", "snakemake"]
    if cores is not None:
        command += ["--cores", str(cores)]
    return [*command, *args]


def _tail(path: Path, lines: int = 40) -> str:
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def run_workflow(
    workdir: Path,
    *args: str,
    cores: int | None = 2,
    log_name: str = "snakemake.out",
    timeout: float = RUN_TIMEOUT,
    env: dict[str, str] | None = None,
) -> Run:
    """Run Snakemake in ``workdir`` and wait for it; raise :class:`WorkflowFailed` on error.

    Parameters
    ----------
    workdir
        A directory made by :func:`prepare_workdir`.
    *args
        Further Snakemake arguments.
    cores
        ``--cores`` (``None``: not given, e.g. for a cluster executor).
    log_name
        Name of the file in ``workdir`` that gets Snakemake's output.
    timeout
        Seconds before the run is killed (its whole process group) and reported as failed.
    env
        Environment (default: this process's).

    Returns
    -------
    Run
        The finished run.
    """
    log = workdir / log_name
    start = time.perf_counter()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            snakemake_command(*args, cores=cores),
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            raise WorkflowFailed(
                f"snakemake {' '.join(args)} did not finish in {timeout:.0f} s in {workdir}; "
                f"last lines of {log}:\n{_tail(log)}"
            ) from None
    seconds = time.perf_counter() - start
    if code != 0:
        raise WorkflowFailed(
            f"snakemake {' '.join(args)} exited with {code} in {workdir}; "
            f"last lines of {log}:\n{_tail(log)}"
        )
    return Run(workdir=workdir, seconds=seconds, log=log)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group led by ``proc`` (started with ``start_new_session``)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def start_workflow(workdir: Path, *args: str, cores: int = 2) -> subprocess.Popen[bytes]:
    """Start Snakemake in ``workdir`` in its own process group and return at once.

    Its output goes to ``workdir/snakemake.out``; stop it with :func:`kill_group`.
    """
    out = (workdir / "snakemake.out").open("wb")
    try:
        return subprocess.Popen(
            snakemake_command(*args, cores=cores),
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        out.close()


def wait_for(
    condition: Callable[[], bool],
    *,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    interval: float = 0.05,
) -> bool:
    """Poll ``condition`` until it holds; ``False`` on timeout or when ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc is not None and proc.poll() is not None:
            return condition()
        time.sleep(interval)
    return False


# --- the result tables ------------------------------------------------------------------


def result_tables(results: Path) -> list[str]:
    """Every ``.tsv`` under ``results`` and ``report.html``, as sorted relative paths."""
    names = [p.relative_to(results).as_posix() for p in results.rglob("*.tsv")]
    if (results / "report.html").exists():
        names.append("report.html")
    return sorted(names)


def sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def digests(results: Path, names: Iterable[str]) -> dict[str, str]:
    """``{name: sha256}`` of files relative to ``results`` (missing files map to ``""``)."""
    return {n: sha256(results / n) if (results / n).is_file() else "" for n in names}


def read_table(path: Path) -> pd.DataFrame:
    """A result TSV as the stages write it: ``#`` lines are comments, no index."""
    return pd.read_csv(path, sep="\t", comment="#", keep_default_na=False, na_values=[""])


def table_differences(
    a: Path, b: Path, *, rtol: float = 1e-9, atol: float = 1e-12, limit: int = 5
) -> list[str]:
    """What differs between two TSV tables beyond float round-off.

    Numeric columns are compared with ``|x - y| <= atol + rtol * |y|`` (NaN equals NaN);
    every other column, the column names and the row count must match exactly.

    Parameters
    ----------
    a, b
        The two tables.
    rtol, atol
        Relative and absolute tolerance for numeric columns.
    limit
        At most this many differing rows are listed per column.

    Returns
    -------
    list of str
        One line per difference; empty when the tables agree.
    """
    ta, tb = read_table(a), read_table(b)
    if list(ta.columns) != list(tb.columns):
        return [f"{a.name}: columns {list(ta.columns)} != {list(tb.columns)}"]
    if len(ta) != len(tb):
        return [f"{a.name}: {len(ta)} rows != {len(tb)} rows"]
    out: list[str] = []
    for col in ta.columns:
        x, y = ta[col], tb[col]
        numeric = pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y)
        if numeric:
            xv, yv = x.to_numpy(dtype=float), y.to_numpy(dtype=float)
            with np.errstate(invalid="ignore"):
                close = np.isclose(xv, yv, rtol=rtol, atol=atol, equal_nan=True)
            bad = np.flatnonzero(~close)
            if bad.size:
                worst = np.nanmax(np.abs(xv[bad] - yv[bad]))
                rows = ", ".join(f"row {i}: {xv[i]!r} vs {yv[i]!r}" for i in bad[:limit])
                out.append(
                    f"{a.name}[{col}]: {bad.size} values differ (max |diff| {worst:.3g}): {rows}"
                )
        else:
            bad = np.flatnonzero(x.astype(str).to_numpy() != y.astype(str).to_numpy())
            if bad.size:
                rows = ", ".join(f"row {i}: {x.iloc[i]!r} vs {y.iloc[i]!r}" for i in bad[:limit])
                out.append(f"{a.name}[{col}]: {bad.size} entries differ: {rows}")
    return out


def byte_differences(a: Path, b: Path, names: Sequence[str]) -> list[str]:
    """Files among ``names`` whose bytes differ between directories ``a`` and ``b``.

    For differing TSV tables the line says what differs (:func:`table_differences` with
    zero tolerance), so a failure names the column and rows.
    """
    da, db = digests(a, names), digests(b, names)
    out = []
    for name in names:
        if da[name] == db[name]:
            continue
        if not da[name] or not db[name]:
            out.append(f"{name}: missing in {a if not da[name] else b}")
        elif name.endswith(".tsv"):
            detail = table_differences(a / name, b / name, rtol=0.0, atol=0.0)
            out.append(f"{name}: bytes differ; " + ("; ".join(detail) or "same parsed values"))
        else:
            out.append(f"{name}: bytes differ")
    return out


# --- outputs of an interrupted run --------------------------------------------------------

#: Temporary names of geneattn.io.atomic.atomic_path: ``.{final name}.{random}.tmp{suffix}``.
ATOMIC_TEMP = re.compile(r"^\.(?P<final>.+)\.[A-Za-z0-9_]{8}\.tmp(?P<suffix>\.[^.]+)?$")


def read_whole(path: Path) -> None:
    """Read a workflow output completely with the reader of its kind; raise if it is cut.

    Parameters
    ----------
    path
        A ``.npz``, ``.tsv``, ``.json``, ``.h5ad``, ``.graphml``, ``.png`` or ``.html`` file.

    Raises
    ------
    Exception
        Whatever the reader raises on a truncated file; ``ValueError`` for other kinds.
    """
    suffix = path.suffix
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            for name in z.files:
                z[name]
    elif suffix == ".tsv":
        read_table(path)
    elif suffix == ".json":
        json.loads(path.read_text(encoding="utf-8"))
    elif suffix == ".h5ad":
        import anndata

        anndata.read_h5ad(path)
    elif suffix == ".graphml":
        import networkx

        networkx.read_graphml(path)
    elif suffix == ".png":
        data = path.read_bytes()
        if not (data.startswith(b"\x89PNG\r\n\x1a\n") and data[-12:-4] == b"\x00\x00\x00\x00IEND"):
            raise ValueError(f"{path}: not a complete PNG")
    elif suffix == ".html":
        if not path.read_text(encoding="utf-8").rstrip().endswith("</html>"):
            raise ValueError(f"{path}: HTML without its end")
    else:
        raise ValueError(f"{path}: no reader for {suffix!r} outputs")

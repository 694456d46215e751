"""Speed measured, not asserted: ``geneattn bench SUITE``.

Every suite times our implementation and a reference (numpy, or a per-cell Python loop)
on the same inputs in the same process, and prints the median of several repeats and the
ratio reference / ours. Timings are medians because the machines are shared and noisy;
nothing here is ever asserted in the test suite.

A suite is a module of this package with ``NAME``, ``HELP`` and ``run(args) -> list[Row]``;
add it to :data:`SUITES`.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence

#: Benchmark suites, by module; each has ``NAME`` (the subcommand word) and ``run``.
SUITES = (
    "geneattn.bench.tokenize",
    "geneattn.bench.kernels",
    "geneattn.bench.network",
    "geneattn.bench.perturb",
    "geneattn.bench.checkpoint",
    "geneattn.bench.genohoption",
)


@dataclasses.dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of repeated calls."""

    times: tuple[float, ...]

    @property
    def median(self) -> float:
        """Median seconds per call."""
        return statistics.median(self.times)


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of a benchmark table: ours against a reference on the same case."""

    suite: str
    case: str
    ours_s: float
    reference: str
    reference_s: float
    target: float | None = None
    extra: str = ""

    @property
    def ratio(self) -> float:
        """How many times faster ours is than the reference."""
        return self.reference_s / self.ours_s if self.ours_s > 0 else float("inf")

    def status(self) -> str:
        """``ok``/``below`` against the target ratio, or ``-`` when there is none."""
        if self.target is None:
            return "-"
        return "ok" if self.ratio >= self.target else "below"


def time_call(fn: Callable[[], object], *, repeats: int = 5, warmup: int = 1) -> Timing:
    """Time ``fn()`` ``repeats`` times after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return Timing(tuple(times))


def machine_info() -> dict[str, str]:
    """What the numbers were measured on."""
    import numpy as np

    from geneattn import __version__

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "geneattn": __version__,
    }


#: Packages whose versions the benchmark tables name.
PACKAGES = (
    "numpy", "scipy", "pandas", "anndata", "scanpy", "h5py", "igraph", "leidenalg",
    "matplotlib", "snakemake", "safetensors",
)  # fmt: skip


def package_versions() -> dict[str, str]:
    """Installed versions of :data:`PACKAGES` (``-`` when absent), without importing them."""
    from importlib import metadata

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "-"
    return versions


def format_table(rows: Sequence[Row]) -> str:
    """Render rows as an aligned text table."""
    header = ("suite", "case", "ours (s)", "reference", "ref (s)", "ratio", "target", "status")
    lines = [header]
    for r in rows:
        lines.append(
            (
                r.suite,
                r.case,
                f"{r.ours_s:.4g}",
                r.reference,
                f"{r.reference_s:.4g}",
                f"{r.ratio:.1f}x",
                "-" if r.target is None else f">={r.target:g}x",
                r.status(),
            )
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    out = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"  {r.case}: {r.extra}" for r in rows if r.extra]
    return "\n".join(out + (["notes:", *notes] if notes else []))


def load_suites() -> dict[str, object]:
    """Import every suite module, keyed by its ``NAME``."""
    mods = [importlib.import_module(m) for m in SUITES]
    return {m.NAME: m for m in mods}

"""The README's "Large studies" table, from a stage benchmark's tables.

Reads ``stages.tsv`` of ``geneattn bench stages`` (default
``results/bench/``) and writes one row per stage: wall time and peak RSS at each size, and
the exponent ``b`` of wall and CPU time ~ cells^b between the two largest sizes, to
``results/readme/large_studies.tsv`` (``scripts/readme_numbers.py --write`` puts it into
README.md)::

    .venv/bin/python scripts/large_studies_table.py [--bench results/bench] [--cells N ...]

A stage that ran but not to ``ok`` (skipped, failed) reads ``not run``; one the run has not
reached yet (a stopped run, to be continued with ``geneattn bench stages --resume``) reads
``pending``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def large_studies_table(
    bench: Path, cells: list[int] | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """Rows per stage (of the sizes ``cells``, default all) and the run's header lines."""
    stages = pd.read_csv(bench / "stages.tsv", sep="\t", comment="#")
    if cells:
        stages = stages[stages["cells"].isin(cells)]
    header = [
        line.strip()
        for line in (bench / "stages.tsv").read_text(encoding="utf-8").splitlines()
        if line.startswith("# ")
    ]
    stages = stages[stages["kind"] == "stage"]
    sizes = sorted(stages["cells"].unique())
    rows = []
    for stage, part in stages.groupby("stage", sort=False):
        part = part.set_index("cells")
        ok = {n: n in part.index and str(part.loc[n, "status"]).startswith("ok") for n in sizes}
        finished = {n: n in part.index and part.loc[n, "status"] != "running" for n in sizes}
        missing = {n: "not run" if finished[n] else "pending" for n in sizes}
        jobs = " / ".join(str(int(part.loc[n, "jobs"])) if ok[n] else "-" for n in sizes)
        row = {"stage": stage, "jobs " + " / ".join(f"{n:,}" for n in sizes): jobs}
        for n in sizes:
            row[f"wall / CPU {n:,} (s)"] = (
                f"{part.loc[n, 'wall_s']:,.0f} / {part.loc[n, 'cpu_s']:,.0f}"
                if ok[n]
                else missing[n]
            )
        for n in sizes:
            row[f"peak RSS {n:,} (MiB)"] = (
                f"{part.loc[n, 'peak_rss_mib']:,.0f}" if ok[n] else missing[n]
            )
        if len(sizes) > 1:
            small, large = sizes[-2], sizes[-1]
            span = f"{small:,}-{large:,}"
            for what, column in (("wall", "wall_s"), ("CPU", "cpu_s")):
                b = "-"
                if ok[small] and ok[large]:
                    ratio = part.loc[large, column] / part.loc[small, column]
                    b = f"{math.log(ratio) / math.log(large / small):.2f}"
                row[f"b {what} ({span})"] = b
        rows.append(row)
    return pd.DataFrame(rows), header


def main(argv: list[str] | None = None) -> int:
    """Write the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", type=Path, default=ROOT / "results" / "bench")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "results" / "readme" / "large_studies.tsv"
    )
    parser.add_argument("--cells", type=int, nargs="+", help="only these sizes (default: all)")
    args = parser.parse_args(argv)
    table, header = large_studies_table(args.bench, args.cells)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    keys = ("# cpu", "# load_average_at_start", "# code", "# runs")
    keep = [h for h in header if h.split(":")[0] in keys]
    text = "".join(h + "\n" for h in keep) + table.to_csv(sep="\t", index=False)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

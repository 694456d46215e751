"""The README's "Large studies" table, from a stage benchmark's tables.

Reads ``stages.tsv`` and ``scaling.tsv`` of ``geneattn bench stages`` (default
``results/bench/``) and writes one row per stage: wall time and peak RSS at each size, and
the exponent ``b`` of time ~ cells^b between the two largest sizes, to
``results/readme/large_studies.tsv`` (``scripts/readme_numbers.py --write`` puts it into
README.md)::

    .venv/bin/python scripts/large_studies_table.py [--bench results/bench]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def large_studies_table(bench: Path) -> tuple[pd.DataFrame, list[str]]:
    """Rows per stage and the header lines (load average, machine) of the run."""
    stages = pd.read_csv(bench / "stages.tsv", sep="\t", comment="#")
    scaling = pd.read_csv(bench / "scaling.tsv", sep="\t", comment="#").set_index("stage")
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
        row = {"stage": stage, "jobs": int(part["jobs"].max())}
        for n in sizes:
            ok = n in part.index and str(part.loc[n, "status"]).startswith("ok")
            row[f"wall {n:,} (s)"] = f"{part.loc[n, 'wall_s']:.1f}" if ok else "not run"
        for n in sizes:
            ok = n in part.index and str(part.loc[n, "status"]).startswith("ok")
            row[f"peak RSS {n:,} (MiB)"] = (
                f"{part.loc[n, 'peak_rss_mib']:,.0f}" if ok else "not run"
            )
        b = scaling.loc[stage, "b_time_top2"] if stage in scaling.index else float("nan")
        row[f"b ({sizes[-2]:,}-{sizes[-1]:,})" if len(sizes) > 1 else "b"] = (
            f"{b:.2f}" if pd.notna(b) else "-"
        )
        rows.append(row)
    return pd.DataFrame(rows), header


def main(argv: list[str] | None = None) -> int:
    """Write the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", type=Path, default=ROOT / "results" / "bench")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "results" / "readme" / "large_studies.tsv"
    )
    args = parser.parse_args(argv)
    table, header = large_studies_table(args.bench)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    keep = [h for h in header if h.split(":")[0] in ("# cpu", "# load_average_at_start")]
    text = "".join(h + "\n" for h in keep) + table.to_csv(sep="\t", index=False)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

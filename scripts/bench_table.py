"""README's benchmark table from ``geneattn bench SUITE --tsv`` files.

Usage (after ``make bench-torch`` for the PyTorch rows)::

    geneattn bench checkpoint --threads 2 --repeats 3 --tsv results/bench/checkpoint.tsv
    python scripts/bench_table.py results/bench/checkpoint.tsv results/readme/bench_checkpoint.tsv

Several sources (the last argument is the output) give one table, their rows in order, with
the machine lines of the first and each source's ``# load`` line.

The output keeps the case, both times, the ratio, the target and its status, and the
machine line (``# cpu``, ``# cores``, ``# load``) as a comment README does not show.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: bench_table.py SOURCE.tsv [SOURCE.tsv ...] DEST.tsv", file=sys.stderr)
        return 2
    sources, dest = [Path(a) for a in argv[:-1]], Path(argv[-1])
    head: list[str] = []
    tables = []
    for i, source in enumerate(sources):
        lines = source.read_text(encoding="utf-8").splitlines()
        comments = [line for line in lines if line.startswith("#")]
        head += comments if i == 0 else [c for c in comments if c.startswith("# load")]
        tables.append(pd.read_csv(source, sep="\t", comment="#", keep_default_na=False))
    table = pd.concat(tables, ignore_index=True)
    out = pd.DataFrame(
        {
            "case": table["case"].str.strip(),
            "ours (s)": table["ours_s"].map("{:.2f}".format),
            "instead": table["reference"],
            "it (s)": table["reference_s"].map("{:.2f}".format),
            "ratio": table["ratio"].map("{:.2f}x".format),
            "target": [f">= {t}x" if t != "" else "" for t in table["target"]],
            "status": table["status"].replace("-", ""),
        }
    )
    if table["suite"].nunique() > 1:
        out.insert(0, "suite", table["suite"])
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("\n".join(head) + "\n" + out.to_csv(sep="\t", index=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

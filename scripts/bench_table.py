"""README's benchmark table from a ``geneattn bench SUITE --tsv`` file.

Usage (after ``make bench-torch`` for the PyTorch rows)::

    geneattn bench checkpoint --threads 2 --repeats 3 --tsv results/bench/checkpoint.tsv
    python scripts/bench_table.py results/bench/checkpoint.tsv results/readme/bench_checkpoint.tsv

The output keeps the case, both times, the ratio, the target and its status, and the
machine line (``# cpu``, ``# cores``, ``# load``) as a comment README does not show.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd


def main(argv: list[str]) -> int:
    source, dest = Path(argv[0]), Path(argv[1])
    lines = source.read_text(encoding="utf-8").splitlines()
    head = [line for line in lines if line.startswith("#")]
    table = pd.read_csv(source, sep="\t", comment="#", keep_default_na=False)
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
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("\n".join(head) + "\n" + out.to_csv(sep="\t", index=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

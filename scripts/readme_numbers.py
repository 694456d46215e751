"""Every number README.md quotes, regenerated from the runs that produce it.

README marks each quoted number and each results table, and this script fills them in from
``results/``, so the text cannot drift from what the code computes:

- ``<!-- n:KEY -->VALUE<!-- /n -->``: a number; ``KEY`` is ``STUDY_KEY.NAME`` (see
  :data:`STUDIES` and the ``numbers_*`` functions);
- ``<!-- table:PATH -->`` ... ``<!-- /table -->``: the TSV at ``PATH`` (relative to the
  repository) rendered as a Markdown table, e.g. the calibration tables that
  ``scripts/null_split.py`` writes under ``results/readme/``.

Usage, after the runs (``make demo``, the celltypist study, the calibration scripts)::

    .venv/bin/python scripts/readme_numbers.py --check    # list what differs, exit 1 if any
    .venv/bin/python scripts/readme_numbers.py --write    # rewrite README.md in place

Keys and tables whose source is missing are reported as not checked (``--check`` fails on
them only with ``--strict``). ``tests/test_readme_numbers.py`` checks the demo's keys
against the test session's own demo run.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]

NUMBER = re.compile(r"<!-- n:(?P<key>[\w.]+) -->(?P<value>.*?)<!-- /n -->", re.S)
TABLE = re.compile(r"<!-- table:(?P<path>[\w./-]+) -->\n(?P<body>.*?)<!-- /table -->", re.S)


def _int(n: float) -> str:
    return f"{int(n):,}"


def _p(p: float) -> str:
    """A p-value as README writes it: 2 significant digits, scientific below 1e-3."""
    p = float(p)
    return f"{p:.1e}" if p < 1e-3 else f"{p:.2g}"


def _read_tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", comment="#")


def _comment_values(path: Path) -> dict[str, str]:
    """``# key: value`` lines at the top of a TSV."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        key, _, value = line[1:].partition(":")
        out[key.strip()] = value.strip()
    return out


def numbers_study(results: Path) -> dict[str, str]:
    """Numbers of one study's run: QC, modules, enrichment, evaluation, differential."""
    out: dict[str, str] = {}
    summary = json.loads((results / "qc_summary.json").read_text())
    out["cells_before"] = _int(summary["cells_before"])
    out["cells_after"] = _int(summary["cells_after"])
    out["genes_after"] = _int(summary["genes_after"])
    modules = _read_tsv(results / "modules.tsv")
    assigned = modules[modules["module"] > 0]
    out["modules"] = _int(assigned["module"].nunique())
    out["universe"] = _int(len(modules))
    enrichment = _read_tsv(results / "enrichment.tsv")
    out["enriched_modules"] = _int(enrichment.loc[enrichment["fdr"] < 0.05, "module"].nunique())
    evaluation = results / "evaluation.tsv"
    if evaluation.exists():
        out |= numbers_evaluation(evaluation)
    differential = results / "differential.tsv"
    if differential.exists():
        diff = _read_tsv(differential)
        if len(diff):
            best = diff.sort_values("p_value").iloc[0]
            out["differential.min_p"] = _p(best["p_value"])
            out["differential.min_fdr"] = _p(best["fdr"])
            out["differential.called"] = _int((diff["fdr"] < 0.05).sum())
    perturbation = results / "perturbation.tsv"
    if perturbation.exists():
        top = _read_tsv(perturbation)["gene"].astype(str).head(4).tolist()
        if top:
            out["perturbation.top"] = (
                top[0] if len(top) == 1 else ", ".join(top[:-1]) + " and " + top[-1]
            )
    return out


def numbers_evaluation(path: Path) -> dict[str, str]:
    """Program recovery of attention and co-expression modules, and label transfer."""
    out: dict[str, str] = {}
    table = _read_tsv(path)
    for row in table.itertuples():
        name = str(row.program)
        if "together" in table.columns:  # without baselines (no counts given)
            out[f"{name}.together"] = _int(row.together)
            out[f"{name}.in_network"] = _int(row.in_network)
            if pd.notna(row.p_value):
                out[f"{name}.p"] = _p(row.p_value)
            continue
        out[f"{name}.in_universe"] = _int(row.in_universe)
        for method in ("attention", "coexpression"):
            out[f"{name}.{method}_fraction"] = f"{getattr(row, f'{method}_fraction'):.2f}"
            p = getattr(row, f"{method}_p_value")
            if pd.notna(p):
                out[f"{name}.{method}_p"] = _p(p)
    head = path.read_text(encoding="utf-8")
    found = re.search(r"^# co-expression modules .*: (\d+)$", head, re.M)
    if found:
        out["evaluation.coexpression_modules"] = _int(int(found[1]))
    found = re.search(
        r"^# programs with >= 2 genes in the universe: (\d+); .* in (\d+)$", head, re.M
    )
    if found:
        out["evaluation.programs"] = _int(int(found[1]))
        out["evaluation.attention_at_least"] = _int(int(found[2]))
    found = re.search(r"^# label transfer of .*\): (.*)$", head, re.M)
    if found:
        for part in found[1].split(","):
            name, value = part.split()
            out[f"transfer.{name}"] = value
    return out


#: Studies whose numbers README quotes: key prefix -> results directory.
STUDIES: dict[str, Path] = {
    "demo": ROOT / "results" / "wu2020_tumor_vs_nat",
    "celltypist": ROOT / "results" / "celltypist_immune",
}

#: Number sources: key prefix -> function of the results directory.
SOURCES: dict[str, Callable[[Path], dict[str, str]]] = {
    "demo": numbers_study,
    "celltypist": numbers_study,
}


def collect(studies: dict[str, Path] | None = None) -> dict[str, str]:
    """Every key's value from the runs present (a study without results gives none)."""
    values: dict[str, str] = {}
    for prefix, results in (studies or STUDIES).items():
        if (results / "qc_summary.json").exists():
            for key, value in SOURCES[prefix](results).items():
                values[f"{prefix}.{key}"] = value
    return values


def render_table(path: Path) -> str:
    """A TSV (``#`` header lines skipped) as a Markdown table, each cell as the TSV writes it
    (``0.90`` stays ``0.90``)."""
    table = pd.read_csv(path, sep="\t", comment="#", dtype=str, keep_default_na=False)
    lines = ["| " + " | ".join(map(str, table.columns)) + " |"]
    lines.append("|" + "---|" * len(table.columns))
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def update(
    text: str, values: dict[str, str], root: Path = ROOT
) -> tuple[str, list[str], list[str]]:
    """README text with every marked number and table filled in.

    Returns
    -------
    tuple
        The new text, the differences found (``key: README value -> computed value``), and
        the keys and tables that could not be checked (their source is missing).
    """
    differences: list[str] = []
    unchecked: list[str] = []

    def number(m: re.Match[str]) -> str:
        key, shown = m.group("key"), m.group("value")
        if key not in values:
            unchecked.append(key)
            return m.group(0)
        if shown != values[key]:
            differences.append(f"{key}: README {shown!r}, computed {values[key]!r}")
        return f"<!-- n:{key} -->{values[key]}<!-- /n -->"

    def table(m: re.Match[str]) -> str:
        path = root / m.group("path")
        if not path.exists():
            unchecked.append(m.group("path"))
            return m.group(0)
        body = render_table(path)
        if body != m.group("body"):
            differences.append(f"table {m.group('path')} differs")
        return f"<!-- table:{m.group('path')} -->\n{body}<!-- /table -->"

    return TABLE.sub(table, NUMBER.sub(number, text)), differences, unchecked


def main(argv: list[str] | None = None) -> int:
    """Check or rewrite README.md."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="report differences, exit 1 if any")
    mode.add_argument("--write", action="store_true", help="rewrite README.md")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--strict", action="store_true", help="unchecked keys are errors too")
    args = parser.parse_args(argv)
    text = args.readme.read_text(encoding="utf-8")
    new, differences, unchecked = update(text, collect())
    for line in differences:
        print(line)
    if unchecked:
        print(f"not checked (no results): {', '.join(sorted(set(unchecked)))}")
    if args.write:
        if new != text:
            args.readme.write_text(new, encoding="utf-8")
        print(f"README.md: {len(differences)} values updated")
        return 0
    return 1 if differences or (args.strict and unchecked) else 0


if __name__ == "__main__":
    sys.exit(main())

"""``geneattn bench``: speed against the references, measured in the same run."""

from __future__ import annotations

import argparse
import sys

NAME = "bench"
HELP = "time geneattn against its numpy/Python references and print the ratios"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the bench options."""
    from geneattn.bench import SUITES

    names = [m.rsplit(".", 1)[1] for m in SUITES]
    parser.add_argument("suite", choices=[*names, "all"], help="which benchmark to run")
    parser.add_argument("--threads", type=int, default=2, help="rayon threads for our kernels")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
    parser.add_argument("--quick", action="store_true", help="smaller inputs, for smoke tests")
    parser.add_argument("--tsv", help="also write the rows as TSV to this path")


def run(args: argparse.Namespace) -> int:
    """Run the chosen suites and print one table."""
    from geneattn.atomic import write_text
    from geneattn.bench import format_table, load_suites, machine_info

    suites = load_suites()
    chosen = list(suites) if args.suite == "all" else [args.suite]
    info = machine_info()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    rows = []
    for name in chosen:
        rows.extend(suites[name].run(args))
    print(format_table(rows))
    sys.stdout.flush()
    if args.tsv:
        head = "suite\tcase\tours_s\treference\treference_s\tratio\ttarget\tstatus\textra\n"
        body = "".join(
            f"{r.suite}\t{r.case}\t{r.ours_s:.6g}\t{r.reference}\t{r.reference_s:.6g}\t"
            f"{r.ratio:.3f}\t{'' if r.target is None else r.target}\t{r.status()}\t{r.extra}\n"
            for r in rows
        )
        meta = "".join(f"# {k}: {v}\n" for k, v in info.items())
        write_text(args.tsv, meta + head + body)
    return 0

"""``geneattn bench``: speed against the references, and every stage's scaling in cells."""

from __future__ import annotations

import argparse
import sys

NAME = "bench"
HELP = "time geneattn against its numpy/Python references, or every stage against cells"

#: Seeds of the ratio suites, for their table's header.
SUITE_SEEDS = (
    "fixed numpy seeds in each suite module (demo cells resampled with seed 0, 1 or 2); "
    "reruns draw the same inputs"
)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the bench options."""
    from geneattn.bench import SUITES
    from geneattn.bench.stage_jobs import STAGE_NAMES
    from geneattn.bench.stages import DEFAULT_SIZES

    names = [m.rsplit(".", 1)[1] for m in SUITES]
    parser.add_argument(
        "suite",
        choices=[*names, "all", "stages"],
        help="a ratio suite, all of them, or `stages` (every stage's command line against cells)",
    )
    parser.add_argument("--threads", type=int, default=2, help="rayon threads for our kernels")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
    parser.add_argument("--quick", action="store_true", help="smaller inputs, for smoke tests")
    parser.add_argument("--tsv", help="also write the rows as TSV to this path")
    st = parser.add_argument_group("stages", "options of `geneattn bench stages`")
    st.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=list(DEFAULT_SIZES),
        metavar="N",
        help="cells to resample (with replacement) from the demo study's case and control cells",
    )
    st.add_argument("--out-dir", default="results/bench", help="directory of tables and plots")
    st.add_argument("--config", default="config.yaml", help="the study config (case vs control)")
    st.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value for the benchmark (repeat), e.g. tokenize.max_len=512",
    )
    st.add_argument("--resources", help="fetched resources (default: the config's)")
    st.add_argument("--seed", type=int, default=0, help="seed of the resampling")
    st.add_argument(
        "--cells-per-shard",
        type=int,
        default=5000,
        help="most cells of one condition per shard job of the sharded stages",
    )
    st.add_argument(
        "--stages",
        nargs="+",
        choices=STAGE_NAMES,
        metavar="STAGE",
        help="only these stages and those they need (default: all)",
    )
    st.add_argument(
        "--budget",
        type=float,
        default=1800.0,
        help="seconds: a stage projected to take longer at a size is not run there",
    )
    st.add_argument(
        "--stage-repeats", type=int, default=3, help="runs of a fast job (median reported)"
    )
    st.add_argument(
        "--repeat-below",
        type=float,
        default=30.0,
        help="seconds: a job is repeated when its first run times its stage's jobs is below",
    )
    st.add_argument("--keep-work", action="store_true", help="keep each size's intermediate files")
    st.add_argument(
        "--resume",
        action="store_true",
        help="continue a stopped run in --out-dir: keep the stages and jobs its tables record "
        "and run the rest in its work directories (same settings, else refused)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the chosen suites and print one table, or the stage benchmark."""
    if args.suite == "stages":
        from geneattn.bench import stages

        return stages.run(args)

    from geneattn.bench import format_table, load_suites, machine_info, package_versions
    from geneattn.io.atomic import write_text

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
        info["packages"] = ", ".join(f"{k} {v}" for k, v in package_versions().items())
        info["seeds"] = SUITE_SEEDS
        info["threads"] = str(args.threads)
        info["repeats"] = str(args.repeats)
        head = "suite\tcase\tours_s\treference\treference_s\tratio\ttarget\tstatus\textra\n"
        body = "".join(
            f"{r.suite}\t{r.case}\t{r.ours_s:.6g}\t{r.reference}\t{r.reference_s:.6g}\t"
            f"{r.ratio:.3f}\t{'' if r.target is None else r.target}\t{r.status()}\t{r.extra}\n"
            for r in rows
        )
        meta = "".join(f"# {k}: {v}\n" for k, v in info.items())
        write_text(args.tsv, meta + head + body)
    return 0

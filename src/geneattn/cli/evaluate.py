"""``geneattn evaluate``: enrichment fraction and known-program cohesion of the modules."""

from __future__ import annotations

import argparse

NAME = "evaluate"
HELP = "measure whether modules are meaningful: enriched fraction, known programs together"


def _program(text: str) -> tuple[str, list[str]]:
    name, _, genes = text.partition("=")
    if not name or not genes:
        raise argparse.ArgumentTypeError(f"expected NAME=GENE1,GENE2,..., got {text!r}")
    return name, [g for g in genes.split(",") if g]


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the evaluate options."""
    parser.add_argument("--modules", required=True, help="modules.tsv")
    parser.add_argument("--enrichment", required=True, help="enrichment.tsv")
    parser.add_argument(
        "--program",
        type=_program,
        action="append",
        metavar="NAME=G1,G2,...",
        help="a known program (repeat); default: T-cell cytotoxicity, Treg, proliferation, IFN",
    )
    parser.add_argument("--fdr", type=float, default=0.05)
    parser.add_argument("--permutations", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="evaluation.tsv to write")


def run(args: argparse.Namespace) -> int:
    """Write one table: a summary line (as comments) and one row per program."""
    import logging

    from geneattn.evaluation import (
        DEFAULT_PROGRAMS,
        enriched_fraction,
        evaluation_text,
        program_cohesion,
        read_table,
    )
    from geneattn.io.atomic import write_text

    modules = read_table(args.modules, {"gene", "module"})
    enrichment = read_table(args.enrichment, {"module", "fdr"})
    programs = dict(args.program) if args.program else DEFAULT_PROGRAMS
    frac = enriched_fraction(modules, enrichment, fdr=args.fdr)
    cohesion = program_cohesion(modules, programs, n_permutations=args.permutations, seed=args.seed)
    logging.getLogger(__name__).info(
        "%d of %d modules enriched at FDR < %g", frac["n_enriched"], frac["n_modules"], args.fdr
    )
    write_text(args.out, evaluation_text(frac, cohesion, fdr=args.fdr))
    return 0

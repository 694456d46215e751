"""``geneattn modules``: Leiden disease modules of the case network, hubs, enrichment."""

from __future__ import annotations

import argparse
import logging

NAME = "modules"
HELP = (
    "Leiden modules of the case (or pooled) network, hub genes, gene-set enrichment and, "
    "optionally, the gene-set permutation test of differential attention (TSV tables, GraphML)"
)

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the modules options."""
    parser.add_argument(
        "--case", required=True, help="network .npz of the case condition (or the only one)"
    )
    parser.add_argument(
        "--control",
        help=(
            "network .npz of the control condition; leave out for a single-condition study "
            "(modules of --case, and a differential table with no rows)"
        ),
    )
    parser.add_argument(
        "--detect-on",
        choices=["case", "pooled"],
        default="case",
        help=(
            "find modules in the case network, or in the average of case and control (pooled: "
            "the differential p-values are then not biased by choosing modules on case "
            "attention)"
        ),
    )
    parser.add_argument(
        "--objective", choices=["rb_configuration", "modularity"], default="rb_configuration"
    )
    parser.add_argument(
        "--resolution", type=float, default=1.0, help="Leiden resolution (rb_configuration)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of Leiden and permutations")
    parser.add_argument(
        "--min-size", type=int, default=5, help="smaller modules become module 0 (unassigned)"
    )
    parser.add_argument(
        "--gmt", nargs="+", required=True, metavar="GMT", help="gene set files (.gmt)"
    )
    parser.add_argument(
        "--min-set-size", type=int, default=3, help="skip gene sets with fewer network genes"
    )
    parser.add_argument(
        "--permutations",
        type=int,
        default=1000,
        help="random gene sets per module (with --out-differential)",
    )
    parser.add_argument("--out-modules", required=True, help="module table .tsv to write")
    parser.add_argument("--out-enrichment", required=True, help="enrichment .tsv to write")
    parser.add_argument(
        "--out-differential",
        help=(
            "differential .tsv to write: the gene-set permutation test with --control (it does "
            "not hold its level; `geneattn differential` tests over cell labels), no rows "
            "without; leave out to skip"
        ),
    )
    parser.add_argument(
        "--out-graphml",
        help="GraphML to write (module attributes from --out-differential when given)",
    )


def run(args: argparse.Namespace) -> int:
    """Find modules and write the outputs asked for, all or none."""
    import contextlib

    from geneattn.enrichment import load_gene_sets
    from geneattn.errors import InputError
    from geneattn.io.atomic import atomic_path
    from geneattn.modules import find_modules
    from geneattn.network import load_network, write_graphml, write_table

    for flag, value in (
        ("--min-size", args.min_size),
        ("--permutations", args.permutations),
        ("--min-set-size", args.min_set_size),
    ):
        if value < 1:
            raise InputError(f"{flag} must be at least 1, got {value}")
    case = load_network(args.case)
    control = None if args.control is None else load_network(args.control)
    found = find_modules(
        case,
        control,
        gene_sets=load_gene_sets(args.gmt),
        detect_on=args.detect_on,
        objective=args.objective,
        resolution=args.resolution,
        seed=args.seed,
        min_size=args.min_size,
        min_set_size=args.min_set_size,
        gene_set_test=args.out_differential is not None,
        permutations=args.permutations,
        graph=args.out_graphml is not None,
        case_source=args.case,
        control_source=args.control,
    )
    with contextlib.ExitStack() as stack:
        paths = [
            None if p is None else stack.enter_context(atomic_path(p))
            for p in (
                args.out_modules,
                args.out_enrichment,
                args.out_differential,
                args.out_graphml,
            )
        ]
        write_table(paths[0], found.table)
        write_table(paths[1], found.enrichment)
        if found.differential is not None:
            write_table(paths[2], found.differential)
        if found.graph is not None:
            write_graphml(paths[3], found.graph)
    return 0

"""Options shared by several subcommands, and turning them into library arguments."""

from __future__ import annotations

import argparse

from geneattn.errors import InputError
from geneattn.shards import Shard


def add_shard_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--shard`` and either ``--cells-per-shard`` or ``--n-shards`` to a stage."""
    parser.add_argument("--shard", type=int, default=0, help="0-based shard of the cells")
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument(
        "--cells-per-shard",
        type=int,
        help="shards of this many cells (the workflow's shards.cells)",
    )
    sizes.add_argument(
        "--n-shards", type=int, default=1, help="this many contiguous shards of near-equal size"
    )


def shard_from(args: argparse.Namespace) -> Shard:
    """The :class:`~geneattn.shards.Shard` of ``--shard``, ``--cells-per-shard``, ``--n-shards``."""
    return Shard(args.shard, args.cells_per_shard, args.n_shards)


def add_universe_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that choose the gene universe (``universe`` and ``attention``)."""
    parser.add_argument("--gene-names", help="gene_name_id.tsv (symbols of the universe genes)")
    parser.add_argument("--min-cells", type=int, default=10, help="universe: min cells per gene")
    parser.add_argument("--max-genes", type=int, default=2000, help="universe: most genes kept")
    parser.add_argument(
        "--universe",
        choices=["frequent", "variable"],
        default="frequent",
        help="universe: the most frequent genes, or the most variable (scanpy HVG on --obs)",
    )


def universe_from_args(args: argparse.Namespace, cells):
    """:func:`geneattn.universe.gene_universe` of ``cells`` with the options of
    :func:`add_universe_arguments` and the study in ``--obs``."""
    from geneattn.resources.load import load_gene_name_map
    from geneattn.universe import gene_universe, read_study_genes

    if args.gene_names is None:
        raise InputError("choosing the universe needs --gene-names (or give --universe-table)")
    name_map = load_gene_name_map(args.gene_names)
    var_names, counts, var_gene_ids = read_study_genes(
        args.obs, with_counts=args.universe == "variable"
    )
    return gene_universe(
        cells,
        name_map=name_map,
        var_names=var_names,
        method=args.universe,
        min_cells=args.min_cells,
        max_genes=args.max_genes,
        counts=counts,
        var_gene_ids=var_gene_ids,
    )


def check_threads(args: argparse.Namespace) -> None:
    """Refuse ``--threads`` below 1."""
    if args.threads < 1:
        raise InputError(f"--threads must be >= 1, got {args.threads}")

"""``geneattn attention``: attention of one condition's cells summed over the gene universe."""

from __future__ import annotations

import argparse
import logging

NAME = "attention"
HELP = "sum per-cell attention of one condition (or one shard of it) into gene x gene arrays"

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the attention options."""
    from geneattn.cli.options import add_shard_arguments, add_universe_arguments

    parser.add_argument("tokens", help="tokens.npz of all QC'd cells")
    parser.add_argument(
        "--model", required=True, help="model.npz, or model.json naming a checkpoint"
    )
    parser.add_argument("--obs", required=True, help="qc.h5ad whose obs hold the conditions")
    parser.add_argument("--condition-column", required=True, help="obs column of conditions")
    parser.add_argument("--condition", required=True, help="the condition label to sum over")
    parser.add_argument(
        "--universe-table", help="universe.tsv of `geneattn universe` (else chosen here)"
    )
    add_universe_arguments(parser)
    add_shard_arguments(parser)
    parser.add_argument("--threads", type=int, default=1, help="rayon threads")
    parser.add_argument("--out", required=True, help="attention-sums .npz to write")


def run(args: argparse.Namespace) -> int:
    """Take the universe (a table, or chosen from all cells), sum the condition's shard."""
    from geneattn.attention import aggregate_attention
    from geneattn.attention_sums import save_attention_sums
    from geneattn.cells import read_condition_shard
    from geneattn.cli.options import check_threads, shard_from, universe_from_args
    from geneattn.models import load_model
    from geneattn.tokenize import load_tokens
    from geneattn.universe import load_universe

    check_threads(args)
    shard = shard_from(args)
    model = load_model(args.model)
    cells, n_chosen = read_condition_shard(
        args.tokens, args.obs, args.condition, column=args.condition_column, shard=shard
    )
    if args.universe_table is not None:
        universe, symbols = load_universe(args.universe_table, cells.vocabulary)
    else:  # a universe chosen here needs every cell
        universe, symbols = universe_from_args(args, load_tokens(args.tokens))
    log.info(
        "%s: %s, %d of %d cells, universe of %d genes",
        args.condition,
        shard,
        cells.n_cells,
        n_chosen,
        len(universe),
    )

    def progress(done: int, total: int) -> None:
        log.info("%s: %d/%d cells (%.0f%%)", args.condition, done, total, 100 * done / total)

    sums = aggregate_attention(
        cells,
        model,
        universe,
        n_threads=args.threads,
        condition=args.condition,
        gene_symbols=symbols,
        progress=progress,
    )
    save_attention_sums(args.out, sums)
    log.info("wrote %s", args.out)
    return 0

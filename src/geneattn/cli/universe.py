"""``geneattn universe``: the genes whose attention the network stage keeps."""

from __future__ import annotations

import argparse
import logging

NAME = "universe"
HELP = "choose the gene universe of the attention networks once, from all cells"

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the universe options."""
    from geneattn.cli.options import add_universe_arguments

    parser.add_argument("tokens", help="tokens.npz of all QC'd cells")
    parser.add_argument("--obs", required=True, help="qc.h5ad (counts for --universe variable)")
    add_universe_arguments(parser)
    parser.add_argument(
        "--chunk-cells", type=int, default=10_000, help="cells of tokens and counts read at a time"
    )
    parser.add_argument("--out", required=True, help="universe.tsv to write")


def run(args: argparse.Namespace) -> int:
    """Choose the universe from every tokenized cell, a block of cells at a time."""
    from geneattn.errors import InputError
    from geneattn.resources.load import load_gene_name_map
    from geneattn.universe import save_universe, streamed_gene_universe

    if args.chunk_cells < 1:
        raise InputError(f"--chunk-cells must be >= 1, got {args.chunk_cells}")
    if args.gene_names is None:
        raise InputError("choosing the universe needs --gene-names")
    # tokens and counts are read a block of cells at a time
    tokens, gene_ids, symbols = streamed_gene_universe(
        args.tokens,
        args.obs,
        name_map=load_gene_name_map(args.gene_names),
        method=args.universe,
        min_cells=args.min_cells,
        max_genes=args.max_genes,
        chunk_cells=args.chunk_cells,
    )
    save_universe(args.out, tokens, gene_ids, symbols)
    log.info(
        "%s universe of %d genes (blocks of %d cells)", args.universe, len(tokens), args.chunk_cells
    )
    return 0

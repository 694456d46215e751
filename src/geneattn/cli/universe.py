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
    parser.add_argument("--out", required=True, help="universe.tsv to write")


def run(args: argparse.Namespace) -> int:
    """Choose the universe from every tokenized cell and write its table."""
    import numpy as np

    from geneattn.cli.options import universe_from_args
    from geneattn.tokenize import load_tokens
    from geneattn.universe import save_universe

    cells = load_tokens(args.tokens)
    tokens, symbols = universe_from_args(args, cells)
    gene_ids = np.asarray(cells.vocabulary)[tokens].astype(str)
    save_universe(args.out, tokens, gene_ids, symbols)
    log.info("%s universe of %d genes from %d cells", args.universe, len(tokens), cells.n_cells)
    return 0

"""``geneattn universe``: the genes whose attention the network stage keeps."""

from __future__ import annotations

import argparse
import logging

NAME = "universe"
HELP = "choose the gene universe of the attention networks once, from all cells"

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the universe options."""
    from geneattn.cli.attention import add_universe_arguments

    parser.add_argument("tokens", help="tokens.npz of all QC'd cells")
    parser.add_argument("--obs", required=True, help="qc.h5ad (counts for --universe variable)")
    add_universe_arguments(parser)
    parser.add_argument("--out", required=True, help="universe.tsv to write")


def run(args: argparse.Namespace) -> int:
    """Choose the universe from every tokenized cell and write its table."""
    import numpy as np

    from geneattn.attention import save_universe
    from geneattn.cli.attention import gene_universe
    from geneattn.io.readers import read_stage_h5ad
    from geneattn.tokenize import load_tokens

    cells = load_tokens(args.tokens)
    adata = read_stage_h5ad(args.obs, backed=True)
    try:
        var_names = adata.var_names.astype(str).tolist()
    finally:
        adata.file.close()
    tokens, symbols = gene_universe(args, cells, var_names)
    gene_ids = np.asarray(cells.vocabulary)[tokens].astype(str)
    save_universe(args.out, tokens, gene_ids, symbols)
    log.info("%s universe of %d genes from %d cells", args.universe, len(tokens), cells.n_cells)
    return 0

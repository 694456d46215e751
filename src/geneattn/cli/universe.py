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
    parser.add_argument(
        "--chunk-cells", type=int, default=10_000, help="cells of tokens and counts read at a time"
    )
    parser.add_argument("--out", required=True, help="universe.tsv to write")


def run(args: argparse.Namespace) -> int:
    """Choose the universe from every tokenized cell, a block of cells at a time."""
    import numpy as np

    from geneattn.attention import save_universe, symbols_for
    from geneattn.cli.attention import _column_gene_ids
    from geneattn.errors import InputError
    from geneattn.io.readers import read_stage_h5ad
    from geneattn.resources.load import load_gene_name_map
    from geneattn.tokenize_stream import h5ad_blocks
    from geneattn.universe_stream import frequent_universe, variable_universe

    if args.chunk_cells < 1:
        raise InputError(f"--chunk-cells must be >= 1, got {args.chunk_cells}")
    if args.gene_names is None:
        raise InputError("choosing the universe needs --gene-names")
    name_map = load_gene_name_map(args.gene_names)
    adata = read_stage_h5ad(args.obs, backed=True)
    try:
        var_names = adata.var_names.astype(str).tolist()
        gene_ids = _column_gene_ids(adata, name_map) if args.universe == "variable" else None
    finally:
        adata.file.close()
    if args.universe == "variable":
        blocks, _, _ = h5ad_blocks(args.obs, args.chunk_cells)
        tokens, vocabulary = variable_universe(
            args.tokens,
            blocks,
            gene_ids,
            min_cells=args.min_cells,
            max_genes=args.max_genes,
            chunk_cells=args.chunk_cells,
        )
    else:
        tokens, vocabulary = frequent_universe(
            args.tokens,
            min_cells=args.min_cells,
            max_genes=args.max_genes,
            chunk_cells=args.chunk_cells,
        )
    gene_ids = np.asarray(vocabulary)[tokens].astype(str)
    symbols = symbols_for(gene_ids, name_map, preferred=set(var_names))
    save_universe(args.out, tokens, gene_ids, symbols)
    log.info(
        "%s universe of %d genes (blocks of %d cells)", args.universe, len(tokens), args.chunk_cells
    )
    return 0

"""``geneattn gather-gene-embeddings``: gene embeddings from the embed shards' sums."""

from __future__ import annotations

import argparse
import logging

NAME = "gather-gene-embeddings"
HELP = "average each gene's contextual states over all cells (Geneformer's emb_mode gene)"

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the gather-gene-embeddings options."""
    parser.add_argument("shards", nargs="+", help="gene sums (.npz) of `geneattn embed`")
    parser.add_argument("--tokens", required=True, help="tokens.npz (its vocabulary names genes)")
    parser.add_argument("--gene-names", required=True, help="gene_name_id.tsv (symbols)")
    parser.add_argument("--out", required=True, help="gene_embeddings.tsv to write")


def run(args: argparse.Namespace) -> int:
    """Add the shards' sums and write the mean state of every gene seen."""
    import numpy as np

    from geneattn.gene_embeddings import load_gene_embedding_sums
    from geneattn.io.atomic import atomic_path
    from geneattn.io.npz import map_npz_arrays
    from geneattn.network import write_table
    from geneattn.resources.load import load_gene_name_map

    total = load_gene_embedding_sums(args.shards[0])
    for path in args.shards[1:]:
        total.merge(load_gene_embedding_sums(path))
    arrays = map_npz_arrays(args.tokens, ("vocabulary",), "a tokens file")
    table = total.table(np.asarray(arrays["vocabulary"]).astype(str))
    symbol_of: dict[str, str] = {}
    for symbol, ens in sorted(load_gene_name_map(args.gene_names).items()):
        symbol_of.setdefault(ens, symbol)
    table.insert(0, "gene", [symbol_of.get(g, g) for g in table["gene_id"]])
    with atomic_path(args.out) as path:
        write_table(path, table)
    log.info("%d genes from %d shards; wrote %s", len(table), len(args.shards), args.out)
    return 0

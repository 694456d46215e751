"""``geneattn gather-embeddings``: one embeddings.h5ad from the shards of ``embed``."""

from __future__ import annotations

import argparse
import logging

NAME = "gather-embeddings"
HELP = "concatenate the embeddings.h5ad shards of `geneattn embed`, in shard order"

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the gather-embeddings options."""
    parser.add_argument("shards", nargs="+", help="embedding shards (.h5ad), in shard order")
    parser.add_argument("--out", required=True, help="embeddings.h5ad to write")


def run(args: argparse.Namespace) -> int:
    """Concatenate the shards' cells; refuse shards of different models or repeated cells."""
    from geneattn.embeddings import gather_embedding_files
    from geneattn.io.atomic import atomic_path

    # obs of every shard in memory, the embeddings copied one shard at a time
    with atomic_path(args.out) as tmp:
        n = gather_embedding_files(args.shards, tmp)
    log.info("gathered %d cells from %d shards", n, len(args.shards))
    return 0

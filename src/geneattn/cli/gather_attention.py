"""``geneattn gather-attention``: add up the attention-sum shards of one condition."""

from __future__ import annotations

import argparse
import logging

NAME = "gather-attention"
HELP = "add up attention-sum shards of one condition into one attention .npz"

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the gather-attention options."""
    parser.add_argument("shards", nargs="+", metavar="SHARD", help="attention-sum shard .npz")
    parser.add_argument("--out", required=True, help="gathered attention .npz to write")


def run(args: argparse.Namespace) -> int:
    """Check every shard, add them up and write the sum."""
    from geneattn.attention_sums import gather_attention_sums, save_attention_sums

    gathered = gather_attention_sums(args.shards)
    save_attention_sums(args.out, gathered)
    log.info(
        "%s: %d shards, %d cells, %d genes -> %s",
        gathered.condition,
        len(args.shards),
        gathered.n_cells,
        gathered.n_genes,
        args.out,
    )
    return 0

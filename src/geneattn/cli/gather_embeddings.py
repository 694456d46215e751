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
    import anndata as ad

    from geneattn.errors import InputError
    from geneattn.io.atomic import atomic_path
    from geneattn.io.readers import read_stage_h5ad

    parts = [read_stage_h5ad(path) for path in args.shards]
    first = parts[0]
    for path, part in zip(args.shards, parts, strict=True):
        if "X_geneattn" not in part.obsm:
            raise InputError("not an embedding shard: no obsm['X_geneattn']", path)
        if part.uns.get("geneattn_model") != first.uns.get("geneattn_model"):
            raise InputError(f"made by another model than {args.shards[0]}", path)
        if part.obsm["X_geneattn"].shape[1] != first.obsm["X_geneattn"].shape[1]:
            raise InputError(f"embedding width differs from {args.shards[0]}", path)
    seen: dict[str, str] = {}
    for path, part in zip(args.shards, parts, strict=True):
        for cell in part.obs_names.astype(str):
            if cell in seen:
                raise InputError(f"cell {cell!r} is also in {seen[cell]}", path)
            seen[cell] = path
    out = ad.concat(parts, axis=0, merge="same", uns_merge="first")
    log.info("gathered %d cells from %d shards", out.n_obs, len(parts))
    with atomic_path(args.out) as tmp:
        out.write_h5ad(tmp)
    return 0

"""``geneattn embed``: cell embeddings into ``obsm["X_geneattn"]``."""

from __future__ import annotations

import argparse
import logging

NAME = "embed"
HELP = "embed every tokenized cell with the model and write an AnnData with obsm['X_geneattn']"

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the embed options."""
    from geneattn.shards import add_shard_arguments

    parser.add_argument("tokens", help="tokens.npz")
    parser.add_argument(
        "--model", required=True, help="model.npz, or model.json naming a checkpoint"
    )
    parser.add_argument("--obs", required=True, help="qc.h5ad whose obs is carried over")
    add_shard_arguments(parser)
    parser.add_argument("--threads", type=int, default=1, help="rayon threads")
    parser.add_argument("--out", required=True, help="embeddings.h5ad (of the shard) to write")


def run(args: argparse.Namespace) -> int:
    """Embed the cells (mean-pooled multi-head attention output, Geneformer style)."""
    import anndata as ad
    import numpy as np

    from geneattn.errors import InputError
    from geneattn.io.atomic import atomic_path
    from geneattn.io.readers import read_stage_h5ad
    from geneattn.models import load_model
    from geneattn.shards import check_shard_arguments, describe, shard_of
    from geneattn.tokenize import load_cell_ids, load_tokens

    check_shard_arguments(args)
    n_all = len(load_cell_ids(args.tokens))
    start, stop = shard_of(n_all, args)
    cells = load_tokens(args.tokens, cells=slice(start, stop))
    model = load_model(args.model)
    obs = read_stage_h5ad(args.obs, backed=True).obs
    missing = np.setdiff1d(cells.cell_ids, obs.index.to_numpy().astype(str))
    if missing.size:
        raise InputError(
            f"{missing.size} tokenized cells are not in it, e.g. {missing[0]!r}", args.obs
        )
    emb = model.embed(cells, n_threads=args.threads)
    out = ad.AnnData(
        X=np.zeros((cells.n_cells, 0), dtype=np.float32),
        obs=obs.loc[cells.cell_ids].copy(),
    )
    out.obsm["X_geneattn"] = emb.astype(np.float32)
    out.uns["geneattn_model"] = {k: str(v) for k, v in model.params.items()}
    log.info(
        "%s: embedded %d of %d cells into %d dimensions",
        describe(args),
        cells.n_cells,
        n_all,
        emb.shape[1],
    )
    with atomic_path(args.out) as tmp:
        out.write_h5ad(tmp)
    return 0

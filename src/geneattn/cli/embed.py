"""``geneattn embed``: cell embeddings into ``obsm["X_geneattn"]``."""

from __future__ import annotations

import argparse
import logging

NAME = "embed"
HELP = "embed every tokenized cell with the model and write an AnnData with obsm['X_geneattn']"

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the embed options."""
    from geneattn.cli.options import add_shard_arguments

    parser.add_argument("tokens", help="tokens.npz")
    parser.add_argument(
        "--model", required=True, help="model.npz, or model.json naming a checkpoint"
    )
    parser.add_argument("--obs", required=True, help="qc.h5ad whose obs is carried over")
    add_shard_arguments(parser)
    parser.add_argument("--threads", type=int, default=1, help="rayon threads")
    parser.add_argument("--out", required=True, help="embeddings.h5ad (of the shard) to write")
    parser.add_argument(
        "--gene-sums",
        help="also write each gene's summed per-token states (.npz; Geneformer's "
        "emb_mode gene), gathered by `geneattn gather-gene-embeddings`",
    )


def run(args: argparse.Namespace) -> int:
    """Embed the cells (mean-pooled multi-head attention output, Geneformer style)."""
    import numpy as np

    from geneattn.cli.options import shard_from
    from geneattn.embeddings import EMBEDDING_KEY, embedding_anndata
    from geneattn.io.atomic import atomic_path
    from geneattn.io.readers import read_obs_rows
    from geneattn.models import load_model
    from geneattn.tokenize import load_obs_rows, load_tokens, token_cell_count

    shard = shard_from(args)
    n_all = token_cell_count(args.tokens)
    start, stop = shard.bounds(n_all)
    cells = load_tokens(args.tokens, cells=slice(start, stop))
    model = load_model(args.model)
    # this shard's rows only, found by the rows tokenize recorded (else by cell id)
    rows = load_obs_rows(args.tokens, np.arange(start, stop))
    obs = read_obs_rows(args.obs, cells.cell_ids, rows=rows)
    out = embedding_anndata(cells, model, obs, n_threads=args.threads, source=args.obs)
    log.info(
        "%s: embedded %d of %d cells into %d dimensions",
        shard,
        cells.n_cells,
        n_all,
        out.obsm[EMBEDDING_KEY].shape[1],
    )
    sums = None
    if args.gene_sums:
        from geneattn.gene_embeddings import gene_embedding_sums

        sums = gene_embedding_sums(model, cells, n_threads=args.threads)
    with atomic_path(args.out) as tmp:
        out.write_h5ad(tmp)
        if sums is not None:
            sums.save(args.gene_sums)
    return 0

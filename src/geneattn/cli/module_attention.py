"""``geneattn module-attention``: within-module attention of each cell of one condition."""

from __future__ import annotations

import argparse
import logging

NAME = "module-attention"
HELP = (
    "per cell of one condition (or one shard of it), the attention among the genes of each "
    "module and the number of gene pairs, for the cell-label differential test"
)

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the module-attention options."""
    from geneattn.shards import add_shard_arguments

    parser.add_argument("tokens", help="tokens.npz of all QC'd cells")
    parser.add_argument(
        "--model", required=True, help="model.npz, or model.json naming a checkpoint"
    )
    parser.add_argument("--obs", required=True, help="qc.h5ad whose obs hold the conditions")
    parser.add_argument("--condition-column", required=True, help="obs column of conditions")
    parser.add_argument("--condition", required=True, help="the condition label of the cells")
    parser.add_argument(
        "--modules", required=True, help="module table .tsv (gene_id, module) of `modules`"
    )
    add_shard_arguments(parser)
    parser.add_argument("--threads", type=int, default=1, help="rayon threads")
    parser.add_argument("--out", required=True, help="module-attention .npz to write")


def run(args: argparse.Namespace) -> int:
    """Compute the shard's per-cell module attention and write it."""
    import numpy as np

    from geneattn.cli.attention import _read_obs, condition_shard
    from geneattn.differential import module_attention, read_module_labels, save_module_attention
    from geneattn.errors import InputError
    from geneattn.models import load_model
    from geneattn.shards import check_shard_arguments, describe

    if args.threads < 1:
        raise InputError(f"--threads must be >= 1, got {args.threads}")
    check_shard_arguments(args)
    model = load_model(args.model)
    labels, _ = _read_obs(args.obs, args.condition_column)
    gene_ids, modules = read_module_labels(args.modules)
    shard, n_chosen = condition_shard(labels, args)
    token_of = {str(g): t for t, g in enumerate(np.asarray(shard.vocabulary).astype(str))}
    unknown = [g for g in gene_ids.tolist() if g not in token_of]
    if unknown:
        raise InputError(
            f"{len(unknown)} genes are not tokens of {args.tokens}, e.g. {unknown[0]}",
            args.modules,
        )
    gene_tokens = np.array([token_of[g] for g in gene_ids.tolist()], dtype=np.int64)
    result = module_attention(
        shard,
        model,
        gene_tokens,
        modules,
        n_threads=args.threads,
        condition=args.condition,
    )
    log.info(
        "%s: %s, %d of %d cells, %d modules of %d genes",
        args.condition,
        describe(args),
        shard.n_cells,
        n_chosen,
        len(result.modules),
        int(result.module_sizes.sum()),
    )
    save_module_attention(args.out, result)
    log.info("wrote %s", args.out)
    return 0

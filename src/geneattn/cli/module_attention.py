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
    from geneattn.cli.options import add_shard_arguments

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
    from geneattn.cells import read_condition_shard
    from geneattn.cli.options import check_threads, shard_from
    from geneattn.differential import (
        module_attention,
        module_gene_tokens,
        read_module_labels,
        save_module_attention,
    )
    from geneattn.models import load_model

    check_threads(args)
    shard = shard_from(args)
    model = load_model(args.model)
    gene_ids, modules = read_module_labels(args.modules)
    cells, n_chosen = read_condition_shard(
        args.tokens, args.obs, args.condition, column=args.condition_column, shard=shard
    )
    gene_tokens = module_gene_tokens(
        gene_ids, cells.vocabulary, source=args.modules, tokens_source=args.tokens
    )
    result = module_attention(
        cells,
        model,
        gene_tokens,
        modules,
        n_threads=args.threads,
        condition=args.condition,
    )
    log.info(
        "%s: %s, %d of %d cells, %d modules of %d genes",
        args.condition,
        shard,
        cells.n_cells,
        n_chosen,
        len(result.modules),
        int(result.module_sizes.sum()),
    )
    save_module_attention(args.out, result)
    log.info("wrote %s", args.out)
    return 0

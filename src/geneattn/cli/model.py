"""``geneattn model``: the study-derived attention model (see :mod:`geneattn.models.study`)."""

from __future__ import annotations

import argparse
import logging

NAME = "model"
HELP = (
    "derive attention weights from the study (PCA gene embeddings) into model.npz, or check "
    "a pretrained checkpoint and write its manifest (model.json)"
)

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the model options."""
    parser.add_argument("h5ad", nargs="?", help="QC'd counts (qc.h5ad; the study model)")
    parser.add_argument("--token-dictionary", help="token_dictionary.tsv (the study model)")
    parser.add_argument("--gene-names", help="gene_name_id.tsv (for --gene-id symbol)")
    parser.add_argument("--gene-id", choices=["symbol", "ensembl"], default="symbol")
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--n-heads", type=int, default=4)
    parser.add_argument("--temperature", type=float, default=8.0)
    parser.add_argument(
        "--value-rank",
        choices=["log", "none"],
        default="log",
        help="scale each token's value by ln((n+1)/(rank+1)) (log) or not (none)",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--chunk-cells",
        type=int,
        default=10_000,
        help="studies of more cells get a streamed PCA (block Krylov over blocks of this many "
        "cells) instead of ARPACK in memory",
    )
    ckpt = parser.add_argument_group("a pretrained checkpoint instead of the study model")
    ckpt.add_argument(
        "--checkpoint", help="Hugging Face model directory (config.json, model.safetensors)"
    )
    ckpt.add_argument(
        "--checkpoint-token-dictionary",
        help="the checkpoint's token dictionary (.pkl or .tsv); none: our token ids as they are",
    )
    ckpt.add_argument("--version", choices=["V1", "V2"], help="Geneformer version (inferred)")
    ckpt.add_argument("--emb-layer", type=int, default=-1, help="0: last layer, -1: one before")
    ckpt.add_argument("--pooling", choices=["mean", "cls"], default="mean")
    ckpt.add_argument("--attention-layer", type=int, default=-1, help="0-based; -1: last")
    ckpt.add_argument(
        "--attention-heads", type=int, nargs="*", help="heads averaged (default: all)"
    )
    parser.add_argument(
        "--attention-graph",
        help="GenoHoption prior (geneattn attention-graph): attend GenoHoption's way in every "
        "layer instead of densely",
    )
    parser.add_argument("--out", required=True, help="model.npz (or model.json) to write")


def run(args: argparse.Namespace) -> int:
    """Build and save the study model, or check a checkpoint and write its manifest."""
    from geneattn.errors import InputError

    if args.checkpoint is not None:
        return _checkpoint(args)
    if args.h5ad is None or args.token_dictionary is None:
        raise InputError("the study model needs the QC'd h5ad and --token-dictionary")
    from geneattn.io.readers import read_stage_h5ad
    from geneattn.models.pca import streamed_study_model
    from geneattn.models.study import (
        save_study_model,
        study_model_from_anndata,
        with_genohoption,
    )
    from geneattn.resources.load import load_gene_name_map, load_token_dictionary

    if args.chunk_cells < 1:
        raise InputError(f"--chunk-cells must be >= 1, got {args.chunk_cells}")
    if args.gene_id == "symbol" and not args.gene_names:
        raise InputError("--gene-id symbol needs --gene-names")
    adata = read_stage_h5ad(args.h5ad, backed=True)
    n_cells = adata.n_obs
    adata.file.close()
    options = dict(
        token_dictionary=load_token_dictionary(args.token_dictionary),
        name_map=load_gene_name_map(args.gene_names) if args.gene_names else None,
        gene_id=args.gene_id,
        d_model=args.d_model,
        n_heads=args.n_heads,
        temperature=args.temperature,
        value_rank=args.value_rank,
        seed=args.seed,
    )
    if n_cells > args.chunk_cells:
        log.info("%d cells > --chunk-cells %d: PCA over blocks of cells", n_cells, args.chunk_cells)
        model = streamed_study_model(args.h5ad, chunk_cells=args.chunk_cells, **options)
    else:
        model = study_model_from_anndata(read_stage_h5ad(args.h5ad), **options)
    if args.attention_graph is not None:
        from geneattn.models.genohoption import load_token_graph

        model = with_genohoption(model, load_token_graph(args.attention_graph))
    log.info(
        "model: %d genes with embeddings, d_model %d, %d heads, %s attention",
        model.params["genes_with_embedding"],
        model.d_model,
        model.n_heads,
        model.params.get("attention", {}).get("mode", "dense"),
    )
    save_study_model(args.out, model)
    return 0


def _checkpoint(args: argparse.Namespace) -> int:
    """Load the checkpoint with the chosen layers and heads, and write model.json."""
    from pathlib import Path

    from geneattn.errors import InputError
    from geneattn.models.checkpoint import write_manifest

    if Path(args.out).suffix != ".json":
        raise InputError("a checkpoint's manifest must be written to a .json file", args.out)
    stage = write_manifest(
        args.out,
        args.checkpoint,
        token_dictionary=args.checkpoint_token_dictionary,
        version=args.version,
        emb_layer=args.emb_layer,
        pooling=args.pooling,
        attention_layer=args.attention_layer,
        attention_heads=args.attention_heads,
        attention_graph=args.attention_graph,
    )
    m = stage.model
    log.info(
        "checkpoint %s: Geneformer %s, %d layers x %d hidden x %d heads, %d positions",
        args.checkpoint,
        m.version,
        m.n_layers,
        m.hidden_size,
        m.config.num_attention_heads,
        m.max_len,
    )
    return 0

"""``geneattn model``: the study-derived attention model (see :mod:`geneattn.study_model`)."""

from __future__ import annotations

import argparse
import logging

NAME = "model"
HELP = "derive attention weights from the study (PCA gene embeddings) and write model.npz"

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the model options."""
    parser.add_argument("h5ad", help="QC'd counts (qc.h5ad)")
    parser.add_argument("--token-dictionary", required=True, help="token_dictionary.tsv")
    parser.add_argument("--gene-names", help="gene_name_id.tsv (for --gene-id symbol)")
    parser.add_argument("--gene-id", choices=["symbol", "ensembl"], default="symbol")
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--n-heads", type=int, default=4)
    parser.add_argument("--temperature", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", required=True, help="model.npz to write")


def run(args: argparse.Namespace) -> int:
    """Build and save the model."""
    import numpy as np
    import scipy.sparse as sp

    from geneattn.errors import InputError
    from geneattn.readers import read_stage_h5ad
    from geneattn.resources import load_gene_name_map, load_token_dictionary
    from geneattn.study_model import build_study_model, save_model
    from geneattn.tokenize import map_genes, merge_duplicate_tokens

    adata = read_stage_h5ad(args.h5ad)
    if args.gene_id == "symbol" and not args.gene_names:
        raise InputError("--gene-id symbol needs --gene-names")
    tokens = load_token_dictionary(args.token_dictionary)
    var_names = adata.var_names.to_numpy()
    if args.gene_id == "ensembl" and "gene_ids" in adata.var:
        var_names = adata.var["gene_ids"].astype(str).to_numpy()
    ensembl, token, _ = map_genes(
        var_names,
        gene_id=args.gene_id,
        token_dictionary=tokens,
        gene_medians=None,
        name_map=load_gene_name_map(args.gene_names) if args.gene_names else None,
    )
    x, token, _, _ = merge_duplicate_tokens(sp.csr_matrix(adata.X), token, ensembl)
    if "n_counts" in adata.obs:
        n_counts = adata.obs["n_counts"].to_numpy(dtype=np.float64)
    else:
        n_counts = np.asarray(adata.X.sum(axis=1), dtype=np.float64).ravel()
    model = build_study_model(
        x,
        n_counts,
        token,
        len(tokens),
        d_model=args.d_model,
        n_heads=args.n_heads,
        temperature=args.temperature,
        seed=args.seed,
    )
    log.info(
        "model: %d genes with embeddings, d_model %d, %d heads",
        model.params["genes_with_embedding"],
        model.d_model,
        model.n_heads,
    )
    save_model(args.out, model)
    return 0

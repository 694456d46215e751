"""``geneattn attention-graph``: GenoHoption's prior over the token ids (Seq2Graph's graph).

See :mod:`geneattn.models.genohoption`: the PPI, the study's co-expression graph (top ``H``
genes by Pearson correlation above a threshold, seed 001 III-C) or their union, with the
diffusion options, written once per study for the ``model`` rule.
"""

from __future__ import annotations

import argparse
import logging

NAME = "attention-graph"
HELP = (
    "build GenoHoption's prior over the token ids (PPI, study co-expression or both) with "
    "the diffusion options, for attention.mode: genohoption"
)

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the options."""
    from geneattn.models.genohoption import DIFFUSIONS, GRAPHS, GenoHoptionConfig

    d = GenoHoptionConfig()
    parser.add_argument("--token-dictionary", required=True, help="token_dictionary.tsv")
    parser.add_argument("--gene-names", required=True, help="gene_name_id.tsv (symbols)")
    parser.add_argument("--ppi", help="PPI edge list (ppi/h_sapiens.tsv; graph ppi or union)")
    parser.add_argument("--counts", help="QC'd counts (qc.h5ad; graph coexpression or union)")
    parser.add_argument("--gene-id", choices=["symbol", "ensembl"], default="symbol")
    parser.add_argument("--graph", choices=GRAPHS, default=d.graph)
    parser.add_argument("--diffusion", choices=DIFFUSIONS, default=d.diffusion)
    parser.add_argument("--alpha", type=float, default=d.alpha, help="PPR teleport probability")
    parser.add_argument("--t", type=float, default=d.t, help="heat diffusion time")
    parser.add_argument("--iterations", type=int, default=d.iterations, help="K")
    parser.add_argument("--coexpression-top", type=int, default=d.coexpression_top, help="H")
    parser.add_argument(
        "--coexpression-min", type=float, default=d.coexpression_min, help="Pearson threshold"
    )
    parser.add_argument("--out", required=True, help="the prior (.npz) to write")


def run(args: argparse.Namespace) -> int:
    """Build the prior and write it."""
    import numpy as np

    from geneattn.errors import InputError
    from geneattn.models.genohoption import GenoHoptionConfig, build_token_graph, save_token_graph
    from geneattn.resources.load import load_gene_name_map, load_ppi, load_token_dictionary
    from geneattn.tokenize import vocabulary_array
    from geneattn.universe import symbols_for

    config = GenoHoptionConfig(
        graph=args.graph,
        diffusion=args.diffusion,
        alpha=args.alpha,
        t=args.t,
        iterations=args.iterations,
        coexpression_top=args.coexpression_top,
        coexpression_min=args.coexpression_min,
    )
    tokens = load_token_dictionary(args.token_dictionary)
    names = load_gene_name_map(args.gene_names)
    vocabulary = vocabulary_array(tokens)
    ppi = symbols = None
    if config.graph in ("ppi", "union"):
        if args.ppi is None:
            raise InputError(f"--graph {config.graph} needs --ppi")
        ppi = load_ppi(args.ppi)
        symbols = symbols_for(vocabulary, names)
    counts = gene_tokens = n_counts = None
    if config.graph in ("coexpression", "union"):
        if args.counts is None:
            raise InputError(f"--graph {config.graph} needs --counts")
        counts, gene_tokens, n_counts = _study_counts(args, tokens, names)
    graph = build_token_graph(
        config,
        np.asarray(vocabulary).astype(str),
        symbols=symbols,
        ppi_edges=ppi,
        counts=counts,
        gene_tokens=gene_tokens,
        n_counts=n_counts,
    )
    save_token_graph(args.out, graph)
    return 0


def _study_counts(args: argparse.Namespace, tokens: dict, names: dict):
    """The QC'd counts, each column's token and each cell's total counts."""
    import numpy as np
    import scipy.sparse as sp

    from geneattn.io.readers import read_stage_h5ad
    from geneattn.tokenize import map_genes

    adata = read_stage_h5ad(args.counts)
    var_names = adata.var_names.to_numpy()
    if args.gene_id == "ensembl" and "gene_ids" in adata.var:
        var_names = adata.var["gene_ids"].astype(str).to_numpy()
    _, token, _ = map_genes(
        var_names, gene_id=args.gene_id, token_dictionary=tokens, gene_medians=None, name_map=names
    )
    if "n_counts" in adata.obs:
        n_counts = adata.obs["n_counts"].to_numpy(dtype=np.float64)
    else:
        n_counts = np.asarray(adata.X.sum(axis=1), dtype=np.float64).ravel()
    return sp.csr_matrix(adata.X), np.asarray(token, dtype=np.int64), n_counts

"""``geneattn network``: the sparse attention gene network of one condition."""

from __future__ import annotations

import argparse
import logging

NAME = "network"
HELP = (
    "mean attention per gene pair, optional GenoHoption diffusion, top-k sparsification "
    "(network .npz, edge list .tsv, GraphML)"
)

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the network options."""
    parser.add_argument("sums", help="attention sums of one condition (.npz, gathered)")
    parser.add_argument(
        "--min-cells", type=int, default=3, help="drop gene pairs co-present in fewer cells"
    )
    parser.add_argument("--top-k", type=int, default=10, help="edges kept per gene")
    parser.add_argument(
        "--symmetrize", action="store_true", help="use (A + A^T)/2: an undirected network"
    )
    diff = parser.add_argument_group("GenoHoption diffusion")
    diff.add_argument("--diffusion", choices=["none", "ppr", "heat"], default="none")
    diff.add_argument("--prior", choices=["ppi", "coexpression", "union"], default="ppi")
    diff.add_argument("--ppi", help="PPI edge list (ppi/h_sapiens.tsv) for --prior ppi/union")
    diff.add_argument(
        "--min-confidence", type=float, default=0.0, help="drop PPI edges below this confidence"
    )
    diff.add_argument("--counts", help="QC'd counts (qc.h5ad) for --prior coexpression/union")
    diff.add_argument(
        "--coexpression-neighbors", type=int, default=20, help="H: neighbours per gene"
    )
    diff.add_argument(
        "--coexpression-threshold", type=float, default=0.4, help="minimum Pearson correlation"
    )
    diff.add_argument("--alpha", type=float, default=0.25, help="PPR teleport probability")
    diff.add_argument("--t", type=float, default=5.0, help="heat-kernel diffusion time")
    diff.add_argument("--iterations", type=int, default=6, help="diffusion steps K")
    parser.add_argument("--out-npz", required=True, help="network .npz to write")
    parser.add_argument("--out-edges", required=True, help="edge list .tsv to write")
    parser.add_argument("--out-graphml", required=True, help="GraphML to write")


def run(args: argparse.Namespace) -> int:
    """Build the network and write the three outputs, all or none."""
    import contextlib

    from geneattn.attention_sums import load_attention_sums
    from geneattn.errors import InputError
    from geneattn.io.atomic import atomic_path
    from geneattn.network import (
        build_network,
        edge_table,
        network_graph,
        write_graphml,
        write_network,
        write_table,
    )

    if args.min_cells < 1:
        raise InputError(f"--min-cells must be at least 1, got {args.min_cells}")
    if args.top_k < 1:
        raise InputError(f"--top-k must be at least 1, got {args.top_k}")
    data = load_attention_sums(args.sums)
    prior = None
    params: dict[str, object] = {"input": str(args.sums)}
    if args.diffusion != "none":
        prior, prior_params = _prior(args, data.gene_ids, data.gene_symbols)
        params.update(prior_params)
    try:
        network = build_network(
            data,
            min_cells=args.min_cells,
            top_k=args.top_k,
            symmetric=args.symmetrize,
            diffusion=args.diffusion,
            prior=prior,
            alpha=args.alpha,
            t=args.t,
            iterations=args.iterations,
            params=params,
        )
    except ValueError as err:
        raise InputError(str(err)) from None
    n_edges = network.adjacency.nnz if network.directed else network.adjacency.nnz // 2
    log.info(
        "%s: %d genes, %d defined pairs, %d %s edges",
        network.condition,
        network.n_genes,
        network.mean_attention.nnz,
        n_edges,
        "directed" if network.directed else "undirected",
    )
    with contextlib.ExitStack() as stack:
        tmp_npz = stack.enter_context(atomic_path(args.out_npz))
        tmp_edges = stack.enter_context(atomic_path(args.out_edges))
        tmp_graphml = stack.enter_context(atomic_path(args.out_graphml))
        write_network(tmp_npz, network)
        write_table(tmp_edges, edge_table(network))
        write_graphml(tmp_graphml, network_graph(network))
    return 0


def _prior(args: argparse.Namespace, gene_ids, gene_symbols):
    """:func:`geneattn.diffusion.network_prior` of the files named by the options."""
    from geneattn.diffusion import network_prior
    from geneattn.errors import InputError
    from geneattn.io.readers import read_stage_h5ad
    from geneattn.resources.load import load_ppi

    ppi = study = None
    if args.prior in ("ppi", "union"):
        if not args.ppi:
            raise InputError(f"--prior {args.prior} needs --ppi")
        ppi = load_ppi(args.ppi)
    if args.prior in ("coexpression", "union"):
        if not args.counts:
            raise InputError(f"--prior {args.prior} needs --counts")
        study = read_stage_h5ad(args.counts)
    return network_prior(
        args.prior,
        gene_ids=gene_ids,
        gene_symbols=gene_symbols,
        ppi=ppi,
        study=study,
        min_confidence=args.min_confidence,
        coexpression_neighbors=args.coexpression_neighbors,
        coexpression_threshold=args.coexpression_threshold,
        study_source=args.counts,
    )

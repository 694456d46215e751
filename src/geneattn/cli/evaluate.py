"""``geneattn evaluate``: enrichment fraction and known-program cohesion of the modules."""

from __future__ import annotations

import argparse

NAME = "evaluate"
HELP = "measure whether modules are meaningful: enriched fraction, known programs together"


def _program(text: str) -> tuple[str, list[str]]:
    name, _, genes = text.partition("=")
    if not name or not genes:
        raise argparse.ArgumentTypeError(f"expected NAME=GENE1,GENE2,..., got {text!r}")
    return name, [g for g in genes.split(",") if g]


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the evaluate options."""
    parser.add_argument("--modules", required=True, help="modules.tsv")
    parser.add_argument("--enrichment", required=True, help="enrichment.tsv")
    parser.add_argument(
        "--program",
        type=_program,
        action="append",
        metavar="NAME=G1,G2,...",
        help="a known program (repeat); default: T-cell cytotoxicity, Treg, proliferation, IFN",
    )
    parser.add_argument("--fdr", type=float, default=0.05)
    parser.add_argument("--permutations", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    base = parser.add_argument_group(
        "baselines on the same cells and genes (co-expression modules, PCA, random vectors)"
    )
    base.add_argument("--counts", help="QC'd counts (qc.h5ad): compare with co-expression modules")
    base.add_argument("--markers", help="human_immune_cell_markers.json: more known programs")
    base.add_argument("--embeddings", help="embeddings.h5ad (obsm X_geneattn)")
    base.add_argument("--label-column", help="obs column of cell labels for label transfer")
    base.add_argument("--resolution", type=float, default=1.0, help="Leiden, as the modules")
    base.add_argument("--objective", default="rb_configuration")
    base.add_argument("--min-size", type=int, default=5)
    base.add_argument("--top-k", type=int, default=10, help="co-expression edges per gene")
    base.add_argument("--coexpression-out", help="co-expression module table (TSV) to write")
    base.add_argument(
        "--chunk-cells",
        type=int,
        default=10_000,
        help="cells of --counts read at a time (above this, qc.h5ad is opened backed)",
    )
    base.add_argument(
        "--transfer-cells",
        type=int,
        help="most cells of the label-transfer comparison, a seeded subsample above it"
        " (default: geneattn.baselines.TRANSFER_CELLS, 20,000)",
    )
    parser.add_argument("--out", required=True, help="evaluation.tsv to write")


def run(args: argparse.Namespace) -> int:
    """Write one table: a summary line (as comments) and one row per program."""
    import logging

    from geneattn.baselines import TRANSFER_CELLS, evaluate_against_baselines
    from geneattn.errors import InputError
    from geneattn.evaluation import (
        DEFAULT_PROGRAMS,
        enriched_fraction,
        evaluation_text,
        program_cohesion,
        read_table,
    )
    from geneattn.io.atomic import write_text
    from geneattn.io.readers import read_stage_h5ad

    modules = read_table(args.modules, {"gene", "module"})
    enrichment = read_table(args.enrichment, {"module", "fdr"})
    programs = dict(args.program) if args.program else DEFAULT_PROGRAMS
    frac = enriched_fraction(modules, enrichment, fdr=args.fdr)
    cohesion = program_cohesion(modules, programs, n_permutations=args.permutations, seed=args.seed)
    logging.getLogger(__name__).info(
        "%d of %d modules enriched at FDR < %g", frac["n_enriched"], frac["n_modules"], args.fdr
    )
    if args.counts is None:
        if args.embeddings or args.label_column or args.markers:
            raise InputError("--embeddings, --label-column and --markers need --counts")
        write_text(args.out, evaluation_text(frac, cohesion, fdr=args.fdr))
        return 0
    if "gene_id" not in modules.columns:
        raise InputError("missing column gene_id (needed with --counts)", args.modules)
    if args.label_column and not args.embeddings:
        raise InputError("--label-column needs --embeddings")
    embedding = cell_names = None
    if args.label_column:
        emb = read_stage_h5ad(args.embeddings)
        if "X_geneattn" not in emb.obsm:
            raise InputError("no obsm['X_geneattn']", args.embeddings)
        embedding, cell_names = emb.obsm["X_geneattn"], emb.obs_names
    transfer_cells = TRANSFER_CELLS if args.transfer_cells is None else args.transfer_cells
    if args.chunk_cells < 1 or transfer_cells < 1:
        raise InputError("--chunk-cells and --transfer-cells must be >= 1")
    counts = read_stage_h5ad(args.counts, backed=True)
    if counts.n_obs <= args.chunk_cells:
        counts.file.close()
        counts = read_stage_h5ad(args.counts)
    result = evaluate_against_baselines(
        modules,
        counts,
        programs,
        fdr=args.fdr,
        **frac,
        markers=args.markers,
        embedding=embedding,
        cell_names=cell_names,
        label_column=args.label_column,
        top_k=args.top_k,
        resolution=args.resolution,
        objective=args.objective,
        min_size=args.min_size,
        n_permutations=args.permutations,
        seed=args.seed,
        chunk_cells=args.chunk_cells,
        transfer_cells=transfer_cells,
        source=args.counts,
    )
    if args.coexpression_out:
        write_text(args.coexpression_out, result["coexpression"].to_csv(sep="\t", index=False))
    table = result["table"].to_csv(sep="\t", index=False, float_format="%.6g")
    write_text(args.out, result["head"] + table)
    return 0

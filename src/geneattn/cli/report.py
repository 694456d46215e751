"""``geneattn report``: one self-contained HTML report of a study."""

from __future__ import annotations

import argparse

NAME = "report"
HELP = "one self-contained HTML report: config, QC, UMAP, modules, enrichment, perturbation"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the report options."""
    parser.add_argument("--study", required=True, help="study name shown in the title")
    parser.add_argument(
        "--config-yaml",
        metavar="PATH",
        help="the resolved config as a YAML file, shown in the report ('-': read stdin)",
    )
    parser.add_argument("--qc-summary", required=True, help="qc_summary.json")
    parser.add_argument("--qc", required=True, help="qc.h5ad")
    parser.add_argument("--embeddings", required=True, help="embeddings.h5ad")
    parser.add_argument("--modules", required=True, help="modules.tsv")
    parser.add_argument("--module-graph", required=True, help="modules.graphml")
    parser.add_argument("--enrichment", required=True, help="enrichment.tsv")
    parser.add_argument("--differential", required=True, help="differential.tsv")
    parser.add_argument("--evaluation", required=True, help="evaluation.tsv")
    parser.add_argument("--perturbation", help="perturbation.tsv (without it the section says so)")
    parser.add_argument("--gene-shifts", help="gene_shifts.tsv (gene-level perturbation shifts)")
    parser.add_argument(
        "--skipped", help="perturbation/skipped.tsv (the genes asked for but not perturbed)"
    )
    parser.add_argument("--module-traits", help="module_traits.tsv (module-condition association)")
    parser.add_argument("--module-preservation", help="module_preservation.tsv")
    parser.add_argument("--fdr", type=float, default=0.05, help="significance threshold shown")
    parser.add_argument("--top-enrichment", type=int, default=5, help="gene sets per module")
    parser.add_argument("--hubs-per-module", type=int, default=25, help="genes drawn per module")
    parser.add_argument("--seed", type=int, default=0, help="seed of the UMAP and the layout")
    parser.add_argument(
        "--neighbors-method",
        choices=["umap", "gauss"],
        default="umap",
        help="connectivities of scanpy's neighbour graph for the UMAP",
    )
    parser.add_argument(
        "--umap-cells",
        type=int,
        default=20_000,
        help="studies of more cells show a seeded random subsample of this many in the UMAP",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="numba threads of the neighbour graph"
    )
    parser.add_argument("--out", required=True, help="report.html to write")


def run(args: argparse.Namespace) -> int:
    """Build the report and write it atomically."""
    import logging
    import sys
    from pathlib import Path

    from geneattn.errors import InputError

    for flag, value in (
        ("--top-enrichment", args.top_enrichment),
        ("--hubs-per-module", args.hubs_per_module),
        ("--threads", args.threads),
        ("--umap-cells", args.umap_cells),
    ):
        if value < 1:
            raise InputError(f"{flag} must be at least 1, got {value}")
    if not 0 < args.fdr < 1:
        raise InputError(f"--fdr must be between 0 and 1, got {args.fdr}")
    from geneattn.report.html import (
        ReportInputs,
        ReportOptions,
        read_config_file,
        read_config_text,
        write_report,
    )

    config_text = None
    if args.config_yaml == "-":
        config_text = read_config_text(sys.stdin.read(), "<stdin>")
    elif args.config_yaml is not None:
        config_text = read_config_file(args.config_yaml)
    inputs = ReportInputs(
        qc_summary=Path(args.qc_summary),
        qc=Path(args.qc),
        embeddings=Path(args.embeddings),
        modules=Path(args.modules),
        module_graph=Path(args.module_graph),
        enrichment=Path(args.enrichment),
        differential=Path(args.differential),
        evaluation=Path(args.evaluation),
        perturbation=None if args.perturbation is None else Path(args.perturbation),
        gene_shifts=None if args.gene_shifts is None else Path(args.gene_shifts),
        skipped=None if args.skipped is None else Path(args.skipped),
        module_traits=None if args.module_traits is None else Path(args.module_traits),
        module_preservation=(
            None if args.module_preservation is None else Path(args.module_preservation)
        ),
    )
    options = ReportOptions(
        fdr=args.fdr,
        top_enrichment=args.top_enrichment,
        hubs_per_module=args.hubs_per_module,
        seed=args.seed,
        neighbors_method=args.neighbors_method,
        umap_cells=args.umap_cells,
    )
    write_report(
        args.out,
        inputs,
        study=args.study,
        config_text=config_text,
        options=options,
        n_threads=args.threads,
    )
    logging.getLogger(__name__).info("wrote %s", args.out)
    return 0

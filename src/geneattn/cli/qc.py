"""``geneattn qc``: read raw counts, run scanpy QC, write the h5ad, summary and plot."""

from __future__ import annotations

import argparse
import logging

NAME = "qc"
HELP = "read raw counts, filter cells and genes with scanpy QC, write h5ad + JSON + PNG"

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the qc options."""
    from geneattn.io.formats import FORMATS

    parser.add_argument("counts", help="raw counts: .h5ad, 10x .h5, 10x mtx dir, .loom, .csv/.tsv")
    parser.add_argument("--format", default="auto", choices=["auto", *FORMATS], dest="fmt")
    parser.add_argument("--layer", help="take the counts from this layer instead of X")
    parser.add_argument("--transpose", action="store_true", help="csv/tsv: genes are rows")
    parser.add_argument(
        "--allow-non-integer", action="store_true", help="accept non-integer counts"
    )
    parser.add_argument(
        "--obs",
        metavar="TABLE",
        help="cell metadata (.csv/.tsv, barcodes in the first column) joined onto the counts",
    )
    parser.add_argument(
        "--condition-column",
        help="obs column of conditions; leave out (with --keep) for a single-condition study",
    )
    parser.add_argument(
        "--keep",
        nargs="+",
        metavar="LABEL",
        help="the condition labels to keep: case then control (or, for the cells of "
        "alternative end states, those labels)",
    )
    parser.add_argument("--min-genes", type=int, default=200, help="min detected genes per cell")
    parser.add_argument("--min-cells", type=int, default=3, help="min cells per gene")
    parser.add_argument("--max-pct-mito", type=float, default=20.0, help="max %% mito counts")
    parser.add_argument("--max-counts", type=float, help="max total counts per cell")
    parser.add_argument(
        "--mito-prefix", default="auto", help="mitochondrial gene prefix, or auto (MT-/mt-)"
    )
    parser.add_argument(
        "--chunk-cells",
        type=int,
        default=10_000,
        help="cells read at a time (h5ad, 10x h5/mtx and loom stream; csv/tsv are read whole)",
    )
    parser.add_argument("--out", required=True, help="QC'd counts (.h5ad)")
    parser.add_argument("--summary", required=True, help="QC summary (.json)")
    parser.add_argument("--plot", required=True, help="QC distributions (.png)")


def run(args: argparse.Namespace) -> int:
    """Run QC and write the three outputs together (all or none)."""
    import json

    from geneattn.errors import InputError
    from geneattn.io.atomic import atomic_path
    from geneattn.io.chunks import open_counts
    from geneattn.qc import plot_qc, run_qc_chunked

    if (args.condition_column is None) != (args.keep is None):
        raise InputError(
            "--condition-column and --keep go together: give both for a case vs control "
            "study, neither for a single-condition study"
        )

    if args.chunk_cells < 1:
        raise InputError(f"--chunk-cells must be >= 1, got {args.chunk_cells}")
    counts = open_counts(
        args.counts,
        fmt=args.fmt,
        layer=args.layer,
        transpose=args.transpose,
        allow_non_integer=args.allow_non_integer,
        obs=args.obs,
    )
    # Nested: each output is renamed into place only when all three blocks succeeded.
    with (
        counts,
        atomic_path(args.out) as out,
        atomic_path(args.summary) as summary_path,
        atomic_path(args.plot) as plot,
    ):
        # the counts are read in blocks of cells and the filtered X written block by block
        result, summary = run_qc_chunked(
            counts,
            out,
            condition_column=args.condition_column,
            keep=args.keep,
            min_genes=args.min_genes,
            min_cells=args.min_cells,
            max_pct_mito=args.max_pct_mito,
            max_counts=args.max_counts,
            mito_prefix=args.mito_prefix,
            chunk_cells=args.chunk_cells,
            source=args.counts,
        )
        text = json.dumps(summary, indent=2, sort_keys=True) + "\n"
        summary_path.write_text(text, encoding="utf-8")
        plot_qc(result, summary, plot)
    log.info("wrote %s, %s and %s", args.out, args.summary, args.plot)
    return 0

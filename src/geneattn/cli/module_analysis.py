"""``geneattn module-analysis``: hdWGCNA-style eigengenes, kME, traits and preservation."""

from __future__ import annotations

import argparse

NAME = "module-analysis"
HELP = (
    "module eigengenes per cell, kME and hubs, module-condition association and "
    "preservation of the control network's modules in the case network"
)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the module-analysis options."""
    parser.add_argument("--modules", required=True, help="modules.tsv")
    parser.add_argument("--counts", required=True, help="QC'd counts (qc.h5ad)")
    parser.add_argument("--condition-column", required=True, help="obs column of the condition")
    parser.add_argument("--case", required=True, help="case label (or the one condition)")
    parser.add_argument("--control", help="control label (none: a single-condition study)")
    parser.add_argument(
        "--sample-column",
        help="obs column of the sample (donor) of each cell: test across samples, not cells",
    )
    parser.add_argument("--case-network", help="the case network (.npz)")
    parser.add_argument("--control-network", help="the control network (.npz)")
    parser.add_argument("--min-kme", type=float, default=0.3, help="weak members below this kME")
    parser.add_argument("--trait-permutations", type=int, default=10_000)
    parser.add_argument("--preservation-permutations", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--chunk-cells",
        type=int,
        default=10_000,
        help="above this many cells, read the counts this many cells at a time",
    )
    parser.add_argument("--out-kme", required=True, help="module_kme.tsv to write")
    parser.add_argument("--out-eigengenes", required=True, help="module_eigengenes.tsv to write")
    parser.add_argument("--out-traits", required=True, help="module_traits.tsv to write")
    parser.add_argument(
        "--out-preservation", required=True, help="module_preservation.tsv to write"
    )


def run(args: argparse.Namespace) -> int:
    """Compute the four tables, then write each atomically."""
    from geneattn.errors import InputError
    from geneattn.evaluation import read_table
    from geneattn.io.readers import read_stage_h5ad
    from geneattn.module_study import analyse_study_modules
    from geneattn.network import load_network, save_table
    from geneattn.tokenize_stream import stage_blocks

    if (args.case_network is None) != (args.control_network is None):
        raise InputError("--case-network and --control-network go together")
    if args.control_network is not None and args.control is None:
        raise InputError("--control-network needs --control")
    if args.chunk_cells < 1:
        raise InputError(f"--chunk-cells must be >= 1, got {args.chunk_cells}")
    modules = read_table(args.modules, {"gene", "gene_id", "module"})
    blocks = stage_blocks(args.counts, args.chunk_cells, whole_at_most=args.chunk_cells)
    counts = read_stage_h5ad(args.counts, backed=blocks is not None)
    if blocks is not None:
        counts.file.close()  # obs and var stay in memory
    networks = {}
    if args.case_network is not None:
        networks = {
            "case_network": load_network(args.case_network),
            "control_network": load_network(args.control_network),
        }
    result = analyse_study_modules(
        modules,
        counts,
        condition_column=args.condition_column,
        case=args.case,
        control=args.control,
        sample_column=args.sample_column,
        **networks,
        min_kme=args.min_kme,
        trait_permutations=args.trait_permutations,
        preservation_permutations=args.preservation_permutations,
        seed=args.seed,
        source=args.counts,
        modules_source=args.modules,
        blocks=blocks,
    )
    for path, table in (
        (args.out_kme, result.kme),
        (args.out_eigengenes, result.eigengene_table),
        (args.out_traits, result.traits),
        (args.out_preservation, result.preservation),
    ):
        save_table(path, table)
    return 0

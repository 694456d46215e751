"""``geneattn perturb-stats``: goal-state statistics of the gathered perturbation shards."""

from __future__ import annotations

import argparse
import logging

NAME = "perturb-stats"
HELP = "gather perturbation shards: Wilcoxon tests against frequency-matched null genes, FDR"

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the perturb-stats options."""
    parser.add_argument("shards", nargs="+", help="per-cell shift tables of `geneattn perturb`")
    parser.add_argument("--gene-names", required=True, help="gene_name_id.tsv (symbols)")
    parser.add_argument("--modules", help="modules.tsv (the module column)")
    parser.add_argument("--obs", help="QC'd h5ad whose obs holds --sample-column")
    parser.add_argument(
        "--sample-column",
        help="obs column of the sample (donor) of each cell: test across samples, not cells",
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap / sign-flip seed")
    parser.add_argument("--out", required=True, help="perturbation.tsv to write")
    parser.add_argument(
        "--groups-out",
        help="also write, per group perturbed together (role 'group'), the cells, mean cosine "
        "and goal shifts (Geneformer's aggregate_data)",
    )
    parser.add_argument(
        "--geneformer-out",
        help="also write Geneformer's InSilicoPerturberStats table with its column names "
        "(Shift_to_goal_end, Goal_end_vs_random_pval, Goal_end_FDR, ...), of the mode "
        "--geneformer-stats",
    )
    parser.add_argument(
        "--geneformer-stats",
        choices=["goal_state_shift", "vs_null", "mixture_model"],
        default="goal_state_shift",
        help="Geneformer's stats mode of --geneformer-out: goal_state_shift (with the "
        "plan's alternative end states; mixture_model without a goal state), vs_null "
        "(against --null-shifts) or mixture_model",
    )
    parser.add_argument(
        "--null-shifts",
        help="vs_null: the null study's per-cell shifts (its perturbation_cells.tsv, or its "
        "results directory holding one)",
    )
    parser.add_argument(
        "--cells-out",
        help="also write the gathered per-cell shifts (perturbation_cells.tsv: another "
        "study's --null-shifts)",
    )


def run(args: argparse.Namespace) -> int:
    """Test each target gene's shifts against the null genes of its bin; write the table."""
    from geneattn.errors import InputError
    from geneattn.io.atomic import atomic_path
    from geneattn.io.readers import read_obs_columns
    from geneattn.network import write_table
    from geneattn.perturb import perturbation_table, read_module_annotation, read_shift_tables
    from geneattn.resources.load import load_gene_name_map

    null = None
    if args.geneformer_stats == "vs_null" and args.geneformer_out:
        from geneattn.geneformer_stats import null_shift_file

        if args.null_shifts is None:
            raise InputError("--geneformer-stats vs_null needs --null-shifts")
        null = read_shift_tables([null_shift_file(args.null_shifts)])
    table = read_shift_tables(args.shards)
    module_of = module_symbols = None
    if args.modules is not None:
        module_of, module_symbols = read_module_annotation(args.modules)
    name_map = load_gene_name_map(args.gene_names)
    samples = None
    if args.sample_column is not None:
        if args.obs is None:
            raise InputError("--sample-column needs --obs (the QC'd h5ad)")
        obs, _ = read_obs_columns(args.obs, [args.sample_column])
        if args.sample_column not in obs:
            raise InputError(f"no obs column {args.sample_column!r}", args.obs)
        samples = dict(zip(obs.index.astype(str), obs[args.sample_column].astype(str), strict=True))
    out = perturbation_table(
        table,
        name_map=name_map,
        module_of=module_of,
        module_symbols=module_symbols,
        samples=samples,
        seed=args.seed,
    )
    extra = {}
    if args.groups_out:
        from geneattn.geneformer_perturb import group_table

        extra[args.groups_out] = group_table(table, name_map=name_map)
    if args.geneformer_out:
        from geneattn.geneformer_stats import geneformer_table

        extra[args.geneformer_out] = geneformer_table(
            table, name_map=name_map, stats=args.geneformer_stats, null=null
        )
    if args.cells_out:
        extra[args.cells_out] = table
    with atomic_path(args.out) as path:
        write_table(path, out)
        for extra_path, extra_table in extra.items():
            with atomic_path(extra_path) as tmp:
                write_table(tmp, extra_table)
    n_sig = int((out["fdr"] < 0.05).sum())
    log.info("%d genes, %d at FDR < 0.05; wrote %s", len(out), n_sig, args.out)
    return 0

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
    parser.add_argument("--out", required=True, help="perturbation.tsv to write")
    parser.add_argument(
        "--groups-out",
        help="also write, per group perturbed together (role 'group'), the cells, mean cosine "
        "and goal shifts (Geneformer's aggregate_data)",
    )
    parser.add_argument(
        "--geneformer-out",
        help="also write Geneformer's InSilicoPerturberStats table with its column names: "
        "goal_state_shift (Shift_to_goal_end, Goal_end_vs_random_pval, Goal_end_FDR, ...) "
        "with a goal state, else mixture_model",
    )


def run(args: argparse.Namespace) -> int:
    """Test each target gene's shifts against the null genes of its bin; write the table."""
    from geneattn.io.atomic import atomic_path
    from geneattn.network import write_table
    from geneattn.perturb import perturbation_table, read_module_annotation, read_shift_tables
    from geneattn.resources.load import load_gene_name_map

    table = read_shift_tables(args.shards)
    module_of = module_symbols = None
    if args.modules is not None:
        module_of, module_symbols = read_module_annotation(args.modules)
    name_map = load_gene_name_map(args.gene_names)
    out = perturbation_table(
        table,
        name_map=name_map,
        module_of=module_of,
        module_symbols=module_symbols,
    )
    extra = {}
    if args.groups_out:
        from geneattn.geneformer_perturb import group_table

        extra[args.groups_out] = group_table(table, name_map=name_map)
    if args.geneformer_out:
        from geneattn.geneformer_stats import geneformer_table

        extra[args.geneformer_out] = geneformer_table(table, name_map=name_map)
    with atomic_path(args.out) as path:
        write_table(path, out)
        for extra_path, extra_table in extra.items():
            with atomic_path(extra_path) as tmp:
                write_table(tmp, extra_table)
    n_sig = int((out["fdr"] < 0.05).sum())
    log.info("%d genes, %d at FDR < 0.05; wrote %s", len(out), n_sig, args.out)
    return 0

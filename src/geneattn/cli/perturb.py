"""``geneattn perturb``: in-silico perturbation of one shard of the case cells."""

from __future__ import annotations

import argparse
import logging

NAME = "perturb"
HELP = "perturb module hub genes (or a list) in a shard of the case cells; per-cell shifts"

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the perturb options."""
    from geneattn.cli.options import add_shard_arguments
    from geneattn.edits import MODES

    parser.add_argument("tokens", help="tokens.npz of all QC'd cells")
    parser.add_argument(
        "--model", required=True, help="model.npz, or model.json naming a checkpoint"
    )
    parser.add_argument("--obs", required=True, help="qc.h5ad whose obs hold the conditions")
    parser.add_argument("--condition-column", required=True, help="obs column of conditions")
    parser.add_argument("--case", required=True, help="label of the cells perturbed")
    parser.add_argument("--plan", required=True, help="plan .npz of `geneattn perturb-plan`")
    parser.add_argument("--mode", choices=MODES, default="delete")
    parser.add_argument("--shift", type=float, default=0.25, help="inhibit/activate: fraction")
    add_shard_arguments(parser)
    parser.add_argument("--threads", type=int, default=1, help="rayon threads")
    parser.add_argument("--out", required=True, help="per-cell shifts .tsv to write")
    parser.add_argument(
        "--definition",
        choices=["auto", "geneformer", "geneattn"],
        default="auto",
        help="shift definitions: Geneformer's own (per-token cosines; the default for "
        "checkpoints in delete/overexpress) or ours (pooled embeddings without the gene)",
    )
    parser.add_argument(
        "--anchor",
        help="an anchor gene (Ensembl ID, or symbol with --gene-names): every planned gene is "
        "perturbed together with it (Geneformer's anchor_gene, combos 1); definition geneformer",
    )
    parser.add_argument(
        "--group",
        action="append",
        default=[],
        metavar="GENE,GENE,...",
        help="also perturb these genes together as one unit (repeatable; Geneformer's "
        "genes_to_perturb list); rows of role 'group'; definition geneformer",
    )
    parser.add_argument("--gene-names", help="gene_name_id.tsv, to give genes by symbol")
    parser.add_argument(
        "--gene-shifts",
        help="also write gene-level shift sums (.npz; Geneformer's cell_and_gene) of the "
        "target genes on every gene; definition geneformer",
    )


def run(args: argparse.Namespace) -> int:
    """Perturb the plan's genes in this shard of the case cells and write their shifts."""
    from geneattn.cells import condition_cells
    from geneattn.cli.options import check_threads, shard_from
    from geneattn.errors import InputError
    from geneattn.io.atomic import atomic_path
    from geneattn.models import load_model
    from geneattn.network import write_table
    from geneattn.perturb import check_plan, load_plan, perturbation_shifts, shift_table
    from geneattn.tokenize import load_tokens

    check_threads(args)
    if not 0.0 <= args.shift <= 1.0:
        raise InputError(f"--shift must be between 0 and 1, got {args.shift}")
    shard = shard_from(args)
    plan = load_plan(args.plan)
    model = load_model(args.model)
    case_index = condition_cells(args.tokens, args.obs, args.case, column=args.condition_column)
    start, stop = shard.bounds(len(case_index))
    cells = load_tokens(args.tokens, cells=case_index[start:stop])
    check_plan(plan, cells.vocabulary, source=args.plan, tokens_source=args.tokens)
    log.info(
        "%s mode: %d genes + %d null genes, %s = %d of %d %s cells",
        args.mode,
        int((plan.roles == "target").sum()),
        int((plan.roles == "null").sum()),
        shard,
        cells.n_cells,
        len(case_index),
        args.case,
    )

    def progress(done: int, total: int) -> None:
        log.info("perturbed %d/%d cells (%.0f%%)", done, total, 100 * done / max(total, 1))

    definition = args.definition
    if definition == "auto":
        checkpoint = model.params.get("kind") == "checkpoint"
        gf_mode = args.mode in ("delete", "overexpress")
        definition = "geneformer" if checkpoint and gf_mode else "geneattn"
    if (args.gene_shifts or args.anchor or args.group) and definition != "geneformer":
        raise InputError("--gene-shifts, --anchor and --group need --definition geneformer")
    log.info("shift definition: %s", definition)
    goal = plan.goal if len(plan.goal) else None
    if definition == "geneattn":
        shifts = perturbation_shifts(
            model,
            cells,
            plan.tokens,
            args.mode,
            goal=goal,
            alt_goals=plan.alt_goal_map,
            shift=args.shift,
            n_threads=args.threads,
            progress=progress,
        )
        table = shift_table(plan, shifts, cells, args.mode)
        sums = None
    else:
        table, sums = _geneformer(args, model, plan, cells, goal, progress)
    with atomic_path(args.out) as path:
        write_table(path, table)
        if sums is not None:
            sums.save(args.gene_shifts)
    log.info("wrote %s (%d rows)", args.out, len(table))
    return 0


def _geneformer(args, model, plan, cells, goal, progress):
    """The shard table (and gene-level sums) with Geneformer's definitions."""
    import numpy as np

    from geneattn.errors import InputError
    from geneattn.geneformer_perturb import (
        GeneShiftSums,
        gene_token,
        geneformer_perturbation_shifts,
        geneformer_shift_table,
    )
    from geneattn.perturb import alt_shift_column, shift_table
    from geneattn.resources.load import load_gene_name_map

    names = load_gene_name_map(args.gene_names) if args.gene_names else None

    def token(gene: str) -> int:
        try:
            return gene_token(gene, cells.vocabulary, names)
        except InputError as err:
            raise InputError(str(err), args.tokens) from None

    anchor = None if args.anchor is None else token(args.anchor)
    groups = [[token(g) for g in spec.split(",") if g.strip()] for spec in args.group]
    # the goal and the alternative end states (keys "alt_{label}": never "goal")
    alt = {f"alt_{k}": v for k, v in plan.alt_goal_map.items()}
    options = {
        "states": None if goal is None else {"goal": goal, **alt},
        "goal": None if goal is None else "goal",
        "n_threads": args.threads,
    }
    sums = None
    if args.gene_shifts:
        sums = GeneShiftSums.empty(plan.targets, np.arange(len(cells.vocabulary)))
    shifts = geneformer_perturbation_shifts(
        model,
        cells,
        plan.tokens,
        args.mode,
        gene_sums=sums,
        anchor=anchor,
        progress=progress,
        **options,
    )
    shifts = shifts.rename(
        columns={f"shift_to_alt_{k}": alt_shift_column(k) for k in plan.alt_goal_map}
    )
    group_shifts = None
    if groups:
        group_shifts = geneformer_perturbation_shifts(
            model, cells, [], args.mode, groups=groups, **options
        )
    table = geneformer_shift_table(
        shift_table(plan, shifts, cells, args.mode),
        cells,
        args.mode,
        anchor=anchor,
        groups=groups,
        group_shifts=group_shifts,
    )
    return table, sums

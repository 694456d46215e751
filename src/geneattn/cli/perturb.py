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


def run(args: argparse.Namespace) -> int:
    """Perturb the plan's genes in this shard of the case cells and write their shifts."""
    from geneattn.cells import labelled_positions, read_condition_labels
    from geneattn.cli.options import check_threads, shard_from
    from geneattn.errors import InputError
    from geneattn.io.atomic import atomic_path
    from geneattn.models import load_model
    from geneattn.network import write_table
    from geneattn.perturb import check_plan, load_plan, perturbation_shifts, shift_table
    from geneattn.tokenize import load_cell_ids, load_tokens

    check_threads(args)
    if not 0.0 <= args.shift <= 1.0:
        raise InputError(f"--shift must be between 0 and 1, got {args.shift}")
    shard = shard_from(args)
    plan = load_plan(args.plan)
    model = load_model(args.model)
    labels, _ = read_condition_labels(args.obs, args.condition_column)
    case_index = labelled_positions(
        load_cell_ids(args.tokens), labels, args.case, column=args.condition_column, source=args.obs
    )
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

    shifts = perturbation_shifts(
        model,
        cells,
        plan.tokens,
        args.mode,
        goal=plan.goal if len(plan.goal) else None,
        shift=args.shift,
        n_threads=args.threads,
        progress=progress,
    )
    with atomic_path(args.out) as path:
        write_table(path, shift_table(plan, shifts, cells, args.mode))
    log.info("wrote %s (%d perturbations)", args.out, len(shifts))
    return 0

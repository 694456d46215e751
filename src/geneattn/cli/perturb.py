"""``geneattn perturb``: in-silico perturbation of one shard of the case cells."""

from __future__ import annotations

import argparse
import logging

NAME = "perturb"
HELP = "perturb module hub genes (or a list) in a shard of the case cells; per-cell shifts"

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the perturb options."""
    from geneattn.edits import MODES
    from geneattn.shards import add_shard_arguments

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
    import numpy as np
    import pandas as pd

    from geneattn.cli.attention import labelled_cells
    from geneattn.errors import InputError
    from geneattn.io.atomic import atomic_path
    from geneattn.models import load_model
    from geneattn.network import write_table
    from geneattn.perturb import load_plan, perturbation_shifts
    from geneattn.shards import check_shard_arguments, describe, shard_of
    from geneattn.tokenize import load_cell_ids, load_tokens

    if args.threads < 1:
        raise InputError(f"--threads must be >= 1, got {args.threads}")
    if not 0.0 <= args.shift <= 1.0:
        raise InputError(f"--shift must be between 0 and 1, got {args.shift}")
    check_shard_arguments(args)
    plan = load_plan(args.plan)
    model = load_model(args.model)
    case_index = labelled_cells(
        load_cell_ids(args.tokens), args.obs, args.condition_column, args.case
    )
    start, stop = shard_of(len(case_index), args)
    shard = load_tokens(args.tokens, cells=case_index[start:stop])
    vocabulary = np.asarray(shard.vocabulary).astype(str)
    if len(plan.tokens) and plan.tokens.max() >= len(vocabulary):
        raise InputError(f"a token is outside the vocabulary of {args.tokens}", args.plan)
    goal = plan.goal if len(plan.goal) else None
    log.info(
        "%s mode: %d genes + %d null genes, %s = %d of %d %s cells",
        args.mode,
        int((plan.roles == "target").sum()),
        int((plan.roles == "null").sum()),
        describe(args),
        shard.n_cells,
        len(case_index),
        args.case,
    )

    def progress(done: int, total: int) -> None:
        log.info("perturbed %d/%d cells (%.0f%%)", done, total, 100 * done / max(total, 1))

    shifts = perturbation_shifts(
        model,
        shard,
        plan.tokens,
        args.mode,
        goal=goal,
        shift=args.shift,
        n_threads=args.threads,
        progress=progress,
    )
    role_of = dict(zip(plan.tokens.tolist(), plan.roles.tolist(), strict=True))
    bin_of = dict(zip(plan.tokens.tolist(), plan.bins.tolist(), strict=True))
    out = pd.DataFrame(
        {
            "gene_id": vocabulary[shifts["token"].to_numpy()],
            "role": [role_of[t] for t in shifts["token"].tolist()],
            "bin": [bin_of[t] for t in shifts["token"].tolist()],
            "cell": shard.cell_ids.astype(str)[shifts["cell"].to_numpy()],
            "mode": args.mode,
            "cosine_shift": shifts["cosine_shift"].to_numpy(),
            "goal_shift": shifts["goal_shift"].to_numpy(),
        }
    )
    # every planned gene appears, even one this shard's cells do not express
    planned = pd.DataFrame(
        {
            "gene_id": vocabulary[plan.tokens],
            "role": plan.roles,
            "bin": plan.bins,
            "cell": "",
            "mode": args.mode,
            "cosine_shift": np.nan,
            "goal_shift": np.nan,
        }
    )
    with atomic_path(args.out) as path:
        write_table(path, pd.concat([planned, out], ignore_index=True))
    log.info("wrote %s (%d perturbations)", args.out, len(out))
    return 0

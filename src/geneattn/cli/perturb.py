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
    parser.add_argument(
        "--definition",
        choices=["auto", "geneformer", "geneattn"],
        default="auto",
        help="shift definitions: Geneformer's own (per-token cosines; the default for "
        "checkpoints) or ours (pooled embeddings without the gene; the study model's default)",
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
        "target genes on every gene; definition geneformer only",
    )
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
    definition = args.definition
    if definition == "auto":
        checkpoint = model.params.get("kind") == "checkpoint"
        gf_mode = args.mode in ("delete", "overexpress")
        definition = "geneformer" if checkpoint and gf_mode else "geneattn"
    if (args.gene_shifts or args.anchor or args.group) and definition != "geneformer":
        raise InputError("--gene-shifts, --anchor and --group need --definition geneformer")
    resolve = _resolver(vocabulary, args)
    anchor = None if args.anchor is None else resolve(args.anchor)
    groups = [[resolve(g) for g in spec.split(",") if g] for spec in args.group]
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

    if definition == "geneformer":
        from geneattn.geneformer_perturb import GeneShiftSums, geneformer_perturbation_shifts

        sums = None
        if args.gene_shifts:
            sums = GeneShiftSums.empty(plan.targets, np.arange(len(vocabulary)))
        options = {
            "states": None if goal is None else {"goal": goal},
            "goal": None if goal is None else "goal",
            "n_threads": args.threads,
        }
        shifts = geneformer_perturbation_shifts(
            model,
            shard,
            plan.tokens,
            args.mode,
            gene_sums=sums,
            anchor=anchor,
            progress=progress,
            **options,
        )
        group_shifts = None
        if groups:
            group_shifts = geneformer_perturbation_shifts(
                model, shard, [], args.mode, groups=groups, **options
            )
    else:
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
    log.info("shift definition: %s", definition)
    anchor_id = "" if anchor is None else vocabulary[anchor]
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
            "anchor": anchor_id,
        }
    )
    group_ids = ["+".join(vocabulary[g]) for g in groups]
    if groups:
        out = pd.concat(
            [
                out,
                pd.DataFrame(
                    {
                        "gene_id": [group_ids[i] for i in group_shifts["token"].tolist()],
                        "role": "group",
                        "bin": -1,
                        "cell": shard.cell_ids.astype(str)[group_shifts["cell"].to_numpy()],
                        "mode": args.mode,
                        "cosine_shift": group_shifts["cosine_shift"].to_numpy(),
                        "goal_shift": group_shifts["goal_shift"].to_numpy(),
                        "anchor": "",
                    }
                ),
            ],
            ignore_index=True,
        )
    # every planned gene appears, even one this shard's cells do not express
    planned = pd.DataFrame(
        {
            "gene_id": [*vocabulary[plan.tokens], *group_ids],
            "role": [*plan.roles, *(["group"] * len(groups))],
            "bin": [*plan.bins, *([-1] * len(groups))],
            "cell": "",
            "mode": args.mode,
            "cosine_shift": np.nan,
            "goal_shift": np.nan,
            "anchor": anchor_id,
        }
    )
    with atomic_path(args.out) as path:
        write_table(path, pd.concat([planned, out], ignore_index=True))
        if args.gene_shifts:
            sums.save(args.gene_shifts)
    log.info("wrote %s (%d perturbations)", args.out, len(out))
    return 0


def _resolver(vocabulary, args: argparse.Namespace):
    """A function from an Ensembl ID or symbol (with --gene-names) to our token id."""
    from geneattn.errors import InputError

    token_of = {str(g): i for i, g in enumerate(vocabulary)}
    names = {}
    if args.gene_names:
        from geneattn.resources.load import load_gene_name_map

        names = load_gene_name_map(args.gene_names)

    def resolve(gene: str) -> int:
        gene = gene.strip()
        token = token_of.get(gene, token_of.get(names.get(gene, ""), -1))
        if token < 0:
            raise InputError(f"gene {gene!r} is not in the token vocabulary", args.tokens)
        return token

    return resolve

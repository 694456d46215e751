"""``geneattn perturb-plan``: the genes to perturb, their null genes and the goal state."""

from __future__ import annotations

import argparse
import logging

NAME = "perturb-plan"
HELP = (
    "choose the genes to perturb (module hubs, a list, or the most expressed), null genes "
    "per expression-frequency bin and the control centroid, once for every shard"
)

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the perturb-plan options."""
    parser.add_argument("tokens", help="tokens.npz of all QC'd cells")
    parser.add_argument("--obs", required=True, help="qc.h5ad whose obs hold the conditions")
    parser.add_argument("--condition-column", required=True, help="obs column of conditions")
    parser.add_argument("--case", required=True, help="label of the cells perturbed")
    parser.add_argument("--control", help="label of the goal-state cells (none: no goal shift)")
    parser.add_argument(
        "--embeddings", help="embeddings.h5ad of `geneattn embed` (the control centroid)"
    )
    parser.add_argument(
        "--alt-state",
        action="append",
        default=[],
        metavar="LABEL",
        help="another label of --condition-column whose cells' state embedding is an "
        "alternative end state (Geneformer's alt_states; repeatable; needs --control)",
    )
    parser.add_argument(
        "--alt-embeddings",
        help="embeddings .h5ad of the --alt-state cells (`geneattn embed` of their own QC "
        "and tokens), when --obs and --embeddings hold only the case and control cells",
    )
    parser.add_argument(
        "--summary-stat",
        choices=["exact_mean", "exact_median"],
        default="exact_mean",
        help="goal-state embedding from the control cells' embeddings (Geneformer's "
        "EmbExtractor summary_stat; exact_median: per dimension, the lower middle value)",
    )
    parser.add_argument("--gene-names", required=True, help="gene_name_id.tsv (symbols)")
    parser.add_argument(
        "--modules", help="modules.tsv (for --genes-from hubs and the module column)"
    )
    parser.add_argument("--differential", help="differential.tsv (disease modules)")
    parser.add_argument(
        "--genes-from",
        choices=["hubs", "list", "expressed"],
        default="hubs",
        help="hub genes of the disease modules, --genes, or every expressed gene up to --max-genes",
    )
    parser.add_argument("--genes", nargs="*", default=[], help="symbols or Ensembl IDs")
    parser.add_argument("--hubs-per-module", type=int, default=5, help="top hubs per module")
    parser.add_argument(
        "--disease-fdr",
        type=float,
        default=0.05,
        help="modules with a differential FDR below this are disease modules (none: all modules)",
    )
    parser.add_argument("--max-genes", type=int, default=200, help="cap on perturbed genes")
    parser.add_argument(
        "--min-cells", type=int, default=5, help="genes expressed in fewer case cells are skipped"
    )
    parser.add_argument("--null-per-bin", type=int, default=10, help="null genes per frequency bin")
    parser.add_argument("--seed", type=int, default=0, help="seed of the null genes")
    parser.add_argument("--out", required=True, help="plan .npz to write")
    parser.add_argument(
        "--out-skipped",
        help="table (.tsv) of the genes asked for but not perturbed, with the reason",
    )


def run(args: argparse.Namespace) -> int:
    """Count each gene's case cells, choose targets and null genes, average the controls."""
    import contextlib

    from geneattn.cells import labelled_positions, read_condition_labels
    from geneattn.embeddings import read_embeddings
    from geneattn.errors import InputError
    from geneattn.io.atomic import atomic_path
    from geneattn.network import write_table
    from geneattn.perturb import save_plan
    from geneattn.resources.load import load_gene_name_map
    from geneattn.targets import (
        check_alt_states,
        choose_targets,
        control_centroid,
        expressed_tokens,
        perturbation_plan,
        read_differential_table,
        read_hub_table,
    )
    from geneattn.tokenize import load_cell_ids, load_tokens

    if args.max_genes < 1:
        raise InputError(f"--max-genes must be >= 1, got {args.max_genes}")
    if args.control is not None and args.embeddings is None:
        raise InputError("--control needs --embeddings (the control cells' centroid)")
    if args.genes_from == "list" and not args.genes:
        raise InputError("--genes-from list needs --genes")
    if args.genes_from == "hubs" and args.modules is None:
        raise InputError("--genes-from hubs needs --modules")
    labels, _ = read_condition_labels(args.obs, args.condition_column)
    alt_embeddings = alt_labels = None
    if args.alt_state and args.alt_embeddings is not None:
        alt_embeddings, alt_labels = read_embeddings(args.alt_embeddings, args.condition_column)
    check_alt_states(
        labels.dropna().astype(str).to_numpy() if alt_labels is None else alt_labels,
        args.alt_state,
        column=args.condition_column,
        case=args.case,
        control=args.control,
        source=args.obs if alt_labels is None else args.alt_embeddings,
    )
    case_index = labelled_positions(
        load_cell_ids(args.tokens), labels, args.case, column=args.condition_column, source=args.obs
    )
    case = load_tokens(args.tokens, cells=case_index)
    presence, expressed = expressed_tokens(case, min_cells=args.min_cells, label=args.case)
    hubs = differential = None
    if args.genes_from == "hubs":
        hubs = read_hub_table(args.modules)
        if args.differential is not None:
            differential = read_differential_table(args.differential)
    chosen = choose_targets(
        genes_from=args.genes_from,
        vocabulary=case.vocabulary,
        presence=presence,
        expressed=expressed,
        name_map=load_gene_name_map(args.gene_names),
        genes=args.genes,
        hubs=hubs,
        differential=differential,
        hubs_per_module=args.hubs_per_module,
        disease_fdr=args.disease_fdr,
        max_genes=args.max_genes,
        min_cells=args.min_cells,
        differential_source=args.differential,
    )
    goal = None
    alt_goals = {}
    if args.control is not None:
        embeddings, emb_labels = read_embeddings(args.embeddings, args.condition_column)
        goal = control_centroid(
            embeddings,
            emb_labels,
            args.control,
            summary_stat=args.summary_stat,
            source=args.embeddings,
        )
        if alt_embeddings is None:
            alt_embeddings, alt_labels, alt_source = embeddings, emb_labels, args.embeddings
        else:
            alt_source = args.alt_embeddings
        alt_goals = {
            label: control_centroid(
                alt_embeddings,
                alt_labels,
                label,
                summary_stat=args.summary_stat,
                source=alt_source,
            )
            for label in args.alt_state
        }
    plan = perturbation_plan(
        targets=chosen.tokens,
        presence=presence,
        expressed=expressed,
        goal=goal,
        alt_goals=alt_goals,
        null_per_bin=args.null_per_bin,
        seed=args.seed,
    )
    with contextlib.ExitStack() as stack:
        if args.out_skipped is not None:
            write_table(stack.enter_context(atomic_path(args.out_skipped)), chosen.skipped)
        save_plan(args.out, plan)
    log.info(
        "%d genes to perturb + %d null genes over %d %s cells%s",
        len(chosen.tokens),
        int((plan.roles == "null").sum()),
        len(case_index),
        args.case,
        "" if args.control is None else f"; goal: centroid of the {args.control} cells",
    )
    if args.alt_state:
        log.info("alternative end states: %s", ", ".join(args.alt_state))
    return 0

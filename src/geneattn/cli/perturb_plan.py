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


def run(args: argparse.Namespace) -> int:
    """Count each gene's case cells, choose targets and null genes, average the controls."""
    import numpy as np

    from geneattn.cli.attention import labelled_cells
    from geneattn.errors import InputError
    from geneattn.perturb import PerturbPlan, choose_null_tokens, save_plan
    from geneattn.resources.load import load_gene_name_map
    from geneattn.tokenize import load_cell_ids, load_tokens

    if args.max_genes < 1:
        raise InputError(f"--max-genes must be >= 1, got {args.max_genes}")
    if args.control is not None and args.embeddings is None:
        raise InputError("--control needs --embeddings (the control cells' centroid)")
    case_index = labelled_cells(
        load_cell_ids(args.tokens), args.obs, args.condition_column, args.case
    )
    case = load_tokens(args.tokens, cells=case_index)
    vocabulary = np.asarray(case.vocabulary).astype(str)
    token_of = {g: t for t, g in enumerate(vocabulary)}
    # case cells expressing each token (a token occurs once per cell)
    presence = np.bincount(case.tokens, minlength=len(vocabulary))
    expressed = np.flatnonzero(presence >= args.min_cells)
    if len(expressed) == 0:
        raise InputError(f"no gene is expressed in {args.min_cells} or more {args.case} cells")
    targets = _targets(args, token_of, presence, expressed, load_gene_name_map(args.gene_names))
    null, bin_of = choose_null_tokens(
        expressed, presence[expressed], targets, per_bin=args.null_per_bin, seed=args.seed
    )
    goal = np.zeros(0, dtype=np.float64)
    if args.control is not None:
        goal = _control_centroid(args)
    tokens = np.concatenate([targets, null]).astype(np.int64)
    plan = PerturbPlan(
        tokens=tokens,
        roles=np.array(["target"] * len(targets) + ["null"] * len(null)),
        bins=np.array([bin_of.get(int(t), -1) for t in tokens], dtype=np.int64),
        goal=goal,
    )
    save_plan(args.out, plan)
    log.info(
        "%d genes to perturb + %d null genes over %d %s cells%s",
        len(targets),
        len(null),
        len(case_index),
        args.case,
        "" if args.control is None else f"; goal: centroid of the {args.control} cells",
    )
    return 0


def _control_centroid(args: argparse.Namespace):
    """Mean embedding of the cells labelled ``--control`` in ``--embeddings``."""
    import numpy as np

    from geneattn.errors import InputError
    from geneattn.io.readers import read_stage_h5ad

    emb = read_stage_h5ad(args.embeddings)
    if "X_geneattn" not in emb.obsm:
        raise InputError("no obsm['X_geneattn'] (not an embeddings file)", args.embeddings)
    if args.condition_column not in emb.obs.columns:
        raise InputError(f"no obs column {args.condition_column!r}", args.embeddings)
    control = emb.obs[args.condition_column].astype(str).to_numpy() == args.control
    if not control.any():
        raise InputError(f"no cell labelled {args.control!r}", args.embeddings)
    x = np.asarray(emb.obsm["X_geneattn"], dtype=np.float64)[control]
    return x.mean(axis=0)


def _targets(args, token_of, presence, expressed, name_map):
    """Tokens of the genes to perturb, in a fixed order."""
    import numpy as np
    import pandas as pd

    from geneattn.errors import InputError

    if args.genes_from == "expressed":
        order = sorted(expressed.tolist(), key=lambda t: (-presence[t], t))
        return np.array(order[: args.max_genes], dtype=np.int64)
    if args.genes_from == "list":
        if not args.genes:
            raise InputError("--genes-from list needs --genes")
        chosen, unknown = [], []
        for g in args.genes:
            ens = g.split(".")[0] if g.startswith("ENS") else name_map.get(g, "")
            t = token_of.get(ens)
            (unknown if t is None else chosen).append(g if t is None else t)
        if unknown:
            raise InputError(f"genes without a token in the vocabulary: {', '.join(unknown)}")
        kept = [t for t in dict.fromkeys(chosen) if presence[t] >= args.min_cells]
        if len(kept) < len(set(chosen)):
            log.warning(
                "%d listed genes are expressed in fewer than %d case cells; skipped",
                len(set(chosen)) - len(kept),
                args.min_cells,
            )
        return np.array(kept[: args.max_genes], dtype=np.int64)
    if args.modules is None:
        raise InputError("--genes-from hubs needs --modules")
    try:
        table = pd.read_csv(args.modules, sep="\t")
    except (OSError, pd.errors.ParserError) as err:
        raise InputError(f"cannot read the module table ({err})", args.modules) from None
    missing = {"gene_id", "module", "hub_rank"} - set(table.columns)
    if missing:
        raise InputError(f"missing columns {sorted(missing)}", args.modules)
    table = table[table["module"] > 0]
    disease = _disease_modules(args, set(table["module"].tolist()))
    table = table[table["module"].isin(disease)].sort_values(["module", "hub_rank"])
    chosen = []
    for _, group in table.groupby("module", sort=True):
        hubs = [token_of.get(str(g)) for g in group["gene_id"]]
        hubs = [t for t in hubs if t is not None and presence[t] >= args.min_cells]
        chosen.extend(hubs[: args.hubs_per_module])
    return np.array(list(dict.fromkeys(chosen))[: args.max_genes], dtype=np.int64)


def _disease_modules(args, modules: set[int]) -> set[int]:
    """Modules whose differential FDR is below --disease-fdr, or all when none is."""
    import pandas as pd

    from geneattn.errors import InputError

    if args.differential is None:
        return modules
    try:
        diff = pd.read_csv(args.differential, sep="\t")
    except (OSError, pd.errors.ParserError) as err:
        raise InputError(f"cannot read the differential table ({err})", args.differential) from None
    if diff.empty:
        return modules
    if not {"module", "fdr"} <= set(diff.columns):
        raise InputError("needs the columns module and fdr", args.differential)
    hits = set(diff.loc[diff["fdr"] < args.disease_fdr, "module"].astype(int).tolist()) & modules
    if not hits:
        log.info(
            "no module has a differential FDR below %g; perturbing hubs of all modules",
            args.disease_fdr,
        )
        return modules
    log.info("%d disease modules (FDR < %g): %s", len(hits), args.disease_fdr, sorted(hits))
    return hits

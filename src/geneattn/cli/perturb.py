"""``geneattn perturb``: in-silico perturbation of one shard of the case cells."""

from __future__ import annotations

import argparse
import logging

NAME = "perturb"
HELP = "perturb module hub genes (or a list) in a shard of the case cells; per-cell shifts"

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the perturb options."""
    from geneattn.perturb import MODES

    parser.add_argument("tokens", help="tokens.npz of all QC'd cells")
    parser.add_argument("--model", required=True, help="model.npz")
    parser.add_argument("--obs", required=True, help="qc.h5ad whose obs hold the conditions")
    parser.add_argument("--condition-column", required=True, help="obs column of conditions")
    parser.add_argument("--case", required=True, help="label of the cells perturbed")
    parser.add_argument("--control", help="label of the goal-state cells (none: no goal shift)")
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
    parser.add_argument("--mode", choices=MODES, default="delete")
    parser.add_argument("--shift", type=float, default=0.25, help="inhibit/activate: fraction")
    parser.add_argument("--null-per-bin", type=int, default=10, help="null genes per frequency bin")
    parser.add_argument("--seed", type=int, default=0, help="seed of the null genes")
    parser.add_argument("--shard", type=int, default=0, help="0-based shard of the case cells")
    parser.add_argument("--n-shards", type=int, default=1, help="contiguous shards")
    parser.add_argument("--threads", type=int, default=1, help="rayon threads")
    parser.add_argument("--out", required=True, help="per-cell shifts .tsv to write")


def run(args: argparse.Namespace) -> int:
    """Plan the genes on all case cells, perturb this shard's cells, write their shifts."""
    import numpy as np
    import pandas as pd

    from geneattn.atomic import atomic_path
    from geneattn.attention import presence_matrix, shard_bounds, subset_cells
    from geneattn.cli.attention import _read_obs
    from geneattn.errors import InputError
    from geneattn.network import write_table
    from geneattn.perturb import choose_null_tokens, perturbation_shifts
    from geneattn.resources import load_gene_name_map
    from geneattn.study_model import load_model
    from geneattn.tokenize import load_tokens

    for flag, value in (("--threads", args.threads), ("--max-genes", args.max_genes)):
        if value < 1:
            raise InputError(f"{flag} must be >= 1, got {value}")
    if not 0.0 <= args.shift <= 1.0:
        raise InputError(f"--shift must be between 0 and 1, got {args.shift}")
    shard_bounds(0, args.shard, args.n_shards)
    cells = load_tokens(args.tokens)
    model = load_model(args.model)
    labels, _ = _read_obs(args.obs, args.condition_column)
    cell_labels = labels.reindex(cells.cell_ids.astype(str)).to_numpy().astype(object)
    case_index = np.flatnonzero(cell_labels == args.case)
    if len(case_index) == 0:
        raise InputError(f"no cell labelled {args.case!r} in {args.condition_column!r}", args.obs)
    case = subset_cells(cells, case_index)
    vocabulary = np.asarray(cells.vocabulary).astype(str)
    token_of = {g: t for t, g in enumerate(vocabulary)}

    n_tokens = len(vocabulary)
    presence = np.asarray(presence_matrix(case, np.arange(n_tokens), n_tokens).sum(axis=0))
    presence = presence.ravel()
    expressed = np.flatnonzero(presence >= args.min_cells)
    if len(expressed) == 0:
        raise InputError(f"no gene is expressed in {args.min_cells} or more {args.case} cells")
    targets = _targets(args, token_of, presence, expressed, load_gene_name_map(args.gene_names))
    null, bin_of = choose_null_tokens(
        expressed, presence[expressed], targets, per_bin=args.null_per_bin, seed=args.seed
    )
    goal = None
    if args.control is not None:
        control_index = np.flatnonzero(cell_labels == args.control)
        if len(control_index) == 0:
            raise InputError(f"no cell labelled {args.control!r}", args.obs)
        control = subset_cells(cells, control_index)
        interface = model.interface(n_threads=args.threads)
        goal = interface.encode_batch(control.tokens, control.offsets).mean(axis=0)

    start, stop = shard_bounds(case.n_cells, args.shard, args.n_shards)
    shard = subset_cells(case, np.arange(start, stop))
    log.info(
        "%s mode: %d genes + %d null genes, shard %d/%d = %d of %d %s cells",
        args.mode,
        len(targets),
        len(null),
        args.shard,
        args.n_shards,
        shard.n_cells,
        case.n_cells,
        args.case,
    )

    def progress(done: int, total: int) -> None:
        log.info("perturbed %d/%d cells (%.0f%%)", done, total, 100 * done / max(total, 1))

    tokens = np.concatenate([targets, null])
    shifts = perturbation_shifts(
        model, shard, tokens, args.mode, goal=goal, n_threads=args.threads, progress=progress
    )
    target_set = set(targets.tolist())
    out = pd.DataFrame(
        {
            "gene_id": vocabulary[shifts["token"].to_numpy()],
            "role": ["target" if t in target_set else "null" for t in shifts["token"]],
            "bin": [bin_of.get(int(t), -1) for t in shifts["token"]],
            "cell": shard.cell_ids.astype(str)[shifts["cell"].to_numpy()],
            "mode": args.mode,
            "cosine_shift": shifts["cosine_shift"].to_numpy(),
            "goal_shift": shifts["goal_shift"].to_numpy(),
        }
    )
    # every target appears, even one this shard's cells do not express
    plan = pd.DataFrame(
        {
            "gene_id": vocabulary[tokens],
            "role": ["target"] * len(targets) + ["null"] * len(null),
            "bin": [bin_of.get(int(t), -1) for t in tokens],
            "cell": "",
            "mode": args.mode,
            "cosine_shift": np.nan,
            "goal_shift": np.nan,
        }
    )
    with atomic_path(args.out) as path:
        write_table(path, pd.concat([plan, out], ignore_index=True))
    log.info("wrote %s (%d perturbations)", args.out, len(out))
    return 0


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

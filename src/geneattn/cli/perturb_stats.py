"""``geneattn perturb-stats``: goal-state statistics of the gathered perturbation shards."""

from __future__ import annotations

import argparse
import logging

NAME = "perturb-stats"
HELP = "gather perturbation shards: Wilcoxon tests against frequency-matched null genes, FDR"

log = logging.getLogger(__name__)

#: Columns after :data:`geneattn.perturb.TABLE_COLUMNS`: the unit the p-values treat as
#: replicates (``samples`` or ``cells``), samples seen, the shift beyond the null genes and
#: its bootstrap interval over samples.
EXTRA_COLUMNS = ("unit", "n_samples", "effect", "ci_low", "ci_high")


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


def run(args: argparse.Namespace) -> int:
    """Test each target gene's shifts against the null genes of its bin; write the table."""
    import numpy as np
    import pandas as pd

    from geneattn.errors import InputError
    from geneattn.io.atomic import atomic_path
    from geneattn.network import write_table
    from geneattn.perturb import TABLE_COLUMNS
    from geneattn.resources.load import load_gene_name_map

    need = {"gene_id", "role", "bin", "cell", "mode", "cosine_shift", "goal_shift"}
    parts = []
    for path in args.shards:
        try:
            part = pd.read_csv(path, sep="\t", keep_default_na=False, na_values=["NA"])
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            raise InputError(f"cannot read the shard ({err})", path) from None
        missing = need - set(part.columns)
        if missing:
            raise InputError(f"missing columns {sorted(missing)}", path)
        parts.append(part)
    table = pd.concat(parts, ignore_index=True)
    modes = sorted(set(table["mode"]))
    if len(modes) != 1:
        raise InputError(f"the shards mix perturbation modes {modes}", args.shards[0])
    plan = table[table["cell"] == ""].drop_duplicates(["gene_id", "role"])
    shifts = table[table["cell"] != ""]
    genes = sorted(set(plan["gene_id"]))
    code = {g: i for i, g in enumerate(genes)}
    shifts = shifts.assign(token=shifts["gene_id"].map(code).astype(np.int64))
    targets = [code[g] for g in plan.loc[plan["role"] == "target", "gene_id"]]
    null = [code[g] for g in plan.loc[plan["role"] == "null", "gene_id"]]
    bin_of = {code[g]: int(b) for g, b in zip(plan["gene_id"], plan["bin"], strict=True)}
    column = "goal_shift" if shifts["goal_shift"].notna().any() else "cosine_shift"
    if column == "cosine_shift":
        log.info("no goal state (single-condition study): testing the cosine shifts")
    if args.sample_column is not None:
        from geneattn.io.readers import read_stage_h5ad
        from geneattn.perturb_stats import sample_level_statistics

        if args.obs is None:
            raise InputError("--sample-column needs --obs (the QC'd h5ad)")
        obs = read_stage_h5ad(args.obs, backed=True).obs
        if args.sample_column not in obs:
            raise InputError(f"no obs column {args.sample_column!r}", args.obs)
        cell_ids = np.asarray(sorted(set(shifts["cell"].astype(str))))
        missing_cells = set(cell_ids.tolist()) - set(obs.index.astype(str))
        if missing_cells:
            raise InputError(f"{len(missing_cells)} perturbed cells not in obs", args.obs)
        samples = obs[args.sample_column].astype(str).reindex(cell_ids).to_numpy()
        cell_index = {c: i for i, c in enumerate(cell_ids.tolist())}
        indexed = shifts.assign(cell=shifts["cell"].astype(str).map(cell_index).astype(np.int64))
        stats = sample_level_statistics(
            indexed, targets, null, bin_of, samples, column=column, seed=args.seed
        )
        log.info("tested across %d samples (%s)", len(set(samples)), args.sample_column)
    else:
        from geneattn.perturb_stats import cell_level_statistics

        stats = cell_level_statistics(
            shifts.assign(cell=np.arange(len(shifts))), targets, null, bin_of, column=column
        )
        log.warning("no sample column: the test treats every cell as an independent replicate")

    symbol_of: dict[str, str] = {}
    for symbol, ens in sorted(load_gene_name_map(args.gene_names).items()):
        symbol_of.setdefault(ens, symbol)
    module_of: dict[str, int] = {}
    if args.modules is not None:
        modules = pd.read_csv(args.modules, sep="\t")
        if not {"gene", "gene_id", "module"} <= set(modules.columns):
            raise InputError("needs the columns gene, gene_id and module", args.modules)
        module_of = dict(zip(modules["gene_id"], modules["module"].astype(int), strict=True))
        for g, s in zip(modules["gene_id"], modules["gene"], strict=True):
            symbol_of[g] = s
    ensembl = [genes[t] for t in stats["token"]]
    out = pd.DataFrame(
        {
            "gene": [symbol_of.get(g, g) for g in ensembl],
            "ensembl_id": ensembl,
            "module": [module_of.get(g, -1) for g in ensembl],
            "mode": modes[0],
            "n_cells": stats["n_cells"].to_numpy(),
            "mean_cosine_shift": stats["mean_cosine_shift"].to_numpy(),
            "mean_goal_shift": stats["mean_goal_shift"].to_numpy(),
            "statistic": stats["statistic"].to_numpy(),
            "p_value": stats["p_value"].to_numpy(),
            "fdr": stats["fdr"].to_numpy(),
            "unit": stats["unit"].to_numpy(),
            "n_samples": stats["n_samples"].to_numpy(),
            "effect": stats["effect"].to_numpy(),
            "ci_low": stats["ci_low"].to_numpy(),
            "ci_high": stats["ci_high"].to_numpy(),
        }
    )
    effect = out["mean_goal_shift"] if column == "goal_shift" else out["mean_cosine_shift"]
    out = (
        out.assign(_effect=effect.fillna(-np.inf))
        .sort_values(["_effect", "gene"], ascending=[False, True], kind="mergesort")
        .drop(columns="_effect")
    )
    with atomic_path(args.out) as path:
        write_table(path, out[[*TABLE_COLUMNS, *EXTRA_COLUMNS]])
    n_sig = int((out["fdr"] < 0.05).sum())
    log.info("%d genes, %d at FDR < 0.05; wrote %s", len(out), n_sig, args.out)
    return 0

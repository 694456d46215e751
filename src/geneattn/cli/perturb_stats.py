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


def run(args: argparse.Namespace) -> int:
    """Test each target gene's shifts against the null genes of its bin; write the table."""
    import numpy as np
    import pandas as pd

    from geneattn.errors import InputError
    from geneattn.io.atomic import atomic_path
    from geneattn.network import write_table
    from geneattn.perturb import TABLE_COLUMNS, goal_statistics
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
    stats = goal_statistics(shifts, targets, null, bin_of, column=column)

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
        }
    )
    effect = out["mean_goal_shift"] if column == "goal_shift" else out["mean_cosine_shift"]
    out = (
        out.assign(_effect=effect.fillna(-np.inf))
        .sort_values(["_effect", "gene"], ascending=[False, True], kind="mergesort")
        .drop(columns="_effect")
    )
    with atomic_path(args.out) as path:
        write_table(path, out[list(TABLE_COLUMNS)])
    n_sig = int((out["fdr"] < 0.05).sum())
    log.info("%d genes, %d at FDR < 0.05; wrote %s", len(out), n_sig, args.out)
    return 0

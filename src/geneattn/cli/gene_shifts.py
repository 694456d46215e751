"""``geneattn gene-shifts``: gather gene-level perturbation shifts into one table."""

from __future__ import annotations

import argparse
import logging

NAME = "gene-shifts"
HELP = "gather gene-level shift sums of perturbation shards (Geneformer's aggregate_gene_shifts)"

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the gene-shifts options."""
    parser.add_argument("shards", nargs="+", help="gene shift sums (.npz) of `geneattn perturb`")
    parser.add_argument("--tokens", required=True, help="tokens.npz (its vocabulary names genes)")
    parser.add_argument("--gene-names", required=True, help="gene_name_id.tsv (symbols)")
    parser.add_argument("--out", required=True, help="gene_shifts.tsv to write")


def run(args: argparse.Namespace) -> int:
    """Add the shards' sums; write mean, standard deviation and count per gene pair."""
    import numpy as np

    from geneattn.geneformer_perturb import load_gene_shifts
    from geneattn.io.atomic import atomic_path
    from geneattn.io.npz import map_npz_arrays
    from geneattn.network import write_table
    from geneattn.resources.load import load_gene_name_map

    total = load_gene_shifts(args.shards[0])
    for path in args.shards[1:]:
        total.merge(load_gene_shifts(path))
    vocabulary = np.asarray(
        map_npz_arrays(args.tokens, ("vocabulary",), "a tokens file")["vocabulary"]
    ).astype(str)
    table = total.table(vocabulary)
    symbol_of: dict[str, str] = {}
    for symbol, ens in sorted(load_gene_name_map(args.gene_names).items()):
        symbol_of.setdefault(ens, symbol)
    table.insert(1, "perturbed_gene", [symbol_of.get(g, g) for g in table["perturbed"]])
    table.insert(3, "affected_gene", [symbol_of.get(g, g) for g in table["affected"]])
    with atomic_path(args.out) as path:
        write_table(path, table)
    log.info("%d gene pairs from %d shards; wrote %s", len(table), len(args.shards), args.out)
    return 0

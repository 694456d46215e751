"""Over-representation of gene sets in modules: hypergeometric test and Benjamini-Hochberg FDR.

Each module is tested against each gene set of GMT files (``resources/genesets/*.gmt``). The
universe is the network's genes; gene sets are intersected with it first (a GMT entry matches a
gene by symbol or by Ensembl ID) and sets with fewer than ``min_set_size`` universe genes are
skipped. The p-value of an overlap of ``k`` genes between a module of ``n`` genes and a set of
``K`` universe genes, in a universe of ``N`` genes, is ``P(X >= k)`` for ``X`` hypergeometric
(``scipy.stats.hypergeom.sf(k - 1, N, K, n)``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

__all__ = ["ENRICHMENT_COLUMNS", "bh_fdr", "load_gene_sets", "module_enrichment"]

#: Columns of the enrichment table, in order.
ENRICHMENT_COLUMNS = [
    "module",
    "collection",
    "gene_set",
    "overlap",
    "set_size",
    "module_size",
    "universe",
    "p_value",
    "fdr",
    "genes",
]


def bh_fdr(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values).

    Parameters
    ----------
    p_values
        P-values in [0, 1]; NaN entries are ignored (they do not count as tests) and stay NaN.

    Returns
    -------
    numpy.ndarray
        ``q_(i) = min_{j >= i} min(1, p_(j) m / j)`` for the sorted finite p-values, in the
        input order; ``m`` is the number of finite p-values.
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError("p_values must be one-dimensional")
    q = np.full(p.shape, np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    if np.any((p[finite] < 0) | (p[finite] > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    m = len(finite)
    if m == 0:
        return q
    order = finite[np.argsort(p[finite], kind="stable")]
    scaled = p[order] * m / np.arange(1, m + 1)
    q[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return q


def load_gene_sets(paths: Sequence[str | Path]) -> dict[str, dict[str, list[str]]]:
    """Read GMT files into ``{collection: {set name: genes}}``.

    The collection of a file is its name without ``.gmt``; two files with the same name are an
    error (their sets could not be told apart). Bad files raise
    :class:`~geneattn.errors.InputError` naming the file.
    """
    from geneattn.errors import InputError
    from geneattn.resources.load import read_gmt

    collections: dict[str, dict[str, list[str]]] = {}
    for path in paths:
        name = Path(path).name.removesuffix(".gmt")
        if name in collections:
            raise InputError(f"a gene set collection named {name!r} was already read", path)
        collections[name] = read_gmt(path)
    return collections


def module_enrichment(
    modules: np.ndarray,
    gene_ids: np.ndarray,
    gene_symbols: np.ndarray,
    gene_sets: Mapping[str, Mapping[str, Sequence[str]]],
    *,
    min_set_size: int = 3,
) -> pd.DataFrame:
    """Hypergeometric over-representation of every gene set in every module.

    Parameters
    ----------
    modules
        Module of each universe gene (0 = unassigned: not tested, but part of the universe).
    gene_ids, gene_symbols
        The universe (the network's genes): Ensembl IDs and symbols (``""`` if unknown).
    gene_sets
        ``{collection: {set name: genes}}``, e.g. from :func:`load_gene_sets`; genes are symbols
        or Ensembl IDs.
    min_set_size
        Sets with fewer genes in the universe are skipped.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`ENRICHMENT_COLUMNS`: ``overlap`` genes of the module in the set,
        ``set_size`` (set genes in the universe), ``module_size``, ``universe`` size,
        ``p_value``, ``fdr`` (Benjamini-Hochberg over all module x set tests, including those
        with no overlap) and ``genes`` (the overlap, comma-separated, by gene label). Only rows
        with an overlap are listed, sorted by FDR, p-value, module, collection and set name.
    """
    import pandas as pd
    from scipy.stats import hypergeom

    from geneattn.network import gene_labels

    modules = np.asarray(modules, dtype=np.int64)
    gene_ids = np.asarray(gene_ids, dtype=str)
    gene_symbols = np.asarray(gene_symbols, dtype=str)
    n_universe = len(gene_ids)
    if len(modules) != n_universe or len(gene_symbols) != n_universe:
        raise ValueError("modules, gene_ids and gene_symbols must have the same length")
    if np.any(modules < 0):
        raise ValueError("module labels must be non-negative")
    logger.info(
        "enrichment: %d gene sets in %d collections x %d modules, universe of %d genes",
        sum(len(sets) for sets in gene_sets.values()),
        len(gene_sets),
        len(np.unique(modules[modules > 0])),
        n_universe,
    )
    lookup: dict[str, set[int]] = {}
    for i, (gid, sym) in enumerate(zip(gene_ids.tolist(), gene_symbols.tolist(), strict=True)):
        for key in (gid, sym):
            if key:
                lookup.setdefault(key, set()).add(i)
    labels = gene_labels(gene_ids, gene_symbols)
    module_ids = np.unique(modules[modules > 0])
    module_sizes = np.bincount(modules, minlength=int(modules.max(initial=0)) + 1)[module_ids]

    records: list[tuple] = []
    for collection in sorted(gene_sets):
        for set_name in sorted(gene_sets[collection]):
            found: set[int] = set()
            for gene in gene_sets[collection][set_name]:
                found |= lookup.get(gene, set())
            if len(found) < min_set_size:
                continue
            members = np.array(sorted(found), dtype=np.int64)
            member_modules = modules[members]
            overlaps = np.bincount(member_modules, minlength=int(modules.max(initial=0)) + 1)
            overlaps = overlaps[module_ids]
            p_values = hypergeom.sf(overlaps - 1, n_universe, len(members), module_sizes)
            for module, size, overlap, p in zip(
                module_ids.tolist(),
                module_sizes.tolist(),
                overlaps.tolist(),
                p_values.tolist(),
                strict=True,
            ):
                hits = members[member_modules == module] if overlap else members[:0]
                records.append(
                    (
                        module,
                        collection,
                        set_name,
                        overlap,
                        len(members),
                        size,
                        n_universe,
                        min(max(float(p), 0.0), 1.0),
                        ",".join(labels[hits].tolist()),
                    )
                )
    columns = [c for c in ENRICHMENT_COLUMNS if c != "fdr"]
    table = pd.DataFrame.from_records(records, columns=columns)
    table.insert(columns.index("p_value") + 1, "fdr", bh_fdr(table["p_value"].to_numpy(float)))
    table = table[table["overlap"] > 0]
    table = table.sort_values(
        ["fdr", "p_value", "module", "collection", "gene_set"], kind="stable"
    ).reset_index(drop=True)
    for column in ("module", "overlap", "set_size", "module_size", "universe"):
        table[column] = table[column].astype(np.int64)
    return table

"""Case-vs-control differential attention of gene modules, tested by permuting cell labels.

Whether a module's attention differs between conditions is a question about the case and
control *cells*. :func:`module_attention` computes, for every cell ``c`` and module ``k``,

- ``S[c, k]``: the head-averaged attention summed over ordered pairs of distinct genes of
  module ``k`` present in the cell (both directions, as in the attention sums), and
- ``N[c, k]``: the number of those pairs, ``n (n - 1)`` for ``n`` module genes in the cell,

in one Rust call per shard of cells (:func:`geneattn._kernels.mha_module_cells`); no per-cell
attention matrix reaches Python. :func:`cell_label_test` compares the pair-weighted mean
within-module attention of the two conditions::

    diff[k] = sum_{case c} S[c, k] / sum_{case c} N[c, k]
              - sum_{control c} S[c, k] / sum_{control c} N[c, k]

with a two-sided p-value from permuting the case/control labels among the cells (group
sizes kept). Under the null that the conditions do not differ, cells are exchangeable, so the
test holds its level for modules chosen on the same cells without regard to their labels
(modules of the pooled network). Summed over all cells, ``S`` and ``N`` are the
within-module blocks (off the diagonal) of the attention sums and co-occurrence counts of the
attention stage: ``case_mean`` is the module's mean attention over its co-present gene pairs,
each pair weighted by the number of case cells it co-occurs in.

A module-attention file (:func:`save_module_attention`) is an uncompressed ``.npz`` holding
``modules`` (int64, K module numbers), ``module_sizes`` (int64, K genes per module),
``cell_ids`` (str, C), ``sums`` (float64, C x K), ``pairs`` (int64, C x K) and ``condition``
(str scalar). Shards of one condition are concatenated by :func:`gather_module_attention`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from geneattn.errors import InputError
from geneattn.io.atomic import atomic_path
from geneattn.io.npz import read_npz_arrays

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    import networkx as nx
    import pandas as pd

    from geneattn.models.protocol import AttentionModel
    from geneattn.network import GeneNetwork
    from geneattn.tokenize import TokenizedCells

__all__ = [
    "ModuleAttention",
    "cell_label_test",
    "differential_graph",
    "gather_module_attention",
    "load_module_attention",
    "module_attention",
    "module_gene_tokens",
    "read_hub_ranks",
    "read_module_labels",
    "save_module_attention",
]

_ARRAYS = ("modules", "module_sizes", "cell_ids", "sums", "pairs", "condition")

#: Permuted labels are drawn in blocks of at most this many entries (bounds the memory).
_BLOCK_ENTRIES = 1 << 22

#: Null statistics within this fraction of the module's mean attention of ``|diff|`` count as
#: ties (as extreme): sums of the same cells in another order may differ in the last bits.
_TIE_TOLERANCE = 1e-10


@dataclass(frozen=True)
class ModuleAttention:
    """Within-module attention per cell of one condition (or one shard of it).

    Attributes
    ----------
    modules
        Module numbers of the columns (int64, K, ascending, from 1).
    module_sizes
        Genes per module (int64, K).
    cell_ids
        Cell names (str, C).
    sums
        ``S``: float64 C x K, attention summed over ordered pairs of distinct module genes
        present in the cell.
    pairs
        ``N``: int64 C x K, number of those pairs.
    condition
        The condition label.
    """

    modules: np.ndarray
    module_sizes: np.ndarray
    cell_ids: np.ndarray
    sums: np.ndarray
    pairs: np.ndarray
    condition: str

    @property
    def n_cells(self) -> int:
        """Number of cells."""
        return len(self.cell_ids)


def read_module_labels(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Gene IDs and module numbers of a module table (``modules.tsv``).

    Parameters
    ----------
    path
        A table with columns ``gene_id`` and ``module`` (0 = unassigned), as written by
        ``geneattn modules``.

    Returns
    -------
    gene_ids
        str array of the table's genes, in table order.
    modules
        int64 module of each gene.

    Raises
    ------
    InputError
        If the file is missing or unreadable, lacks a column, repeats a gene or holds a
        module that is not a non-negative integer.
    """
    import pandas as pd

    try:
        table = pd.read_csv(path, sep="\t", dtype={"gene_id": str}, keep_default_na=False)
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise InputError(f"cannot read as a TSV table ({err})", path) from None
    missing = [c for c in ("gene_id", "module") if c not in table.columns]
    if missing:
        raise InputError(f"no column {', '.join(missing)} (not a module table)", path)
    gene_ids = table["gene_id"].to_numpy(dtype=str)
    if len(set(gene_ids.tolist())) != len(gene_ids):
        raise InputError("a gene_id occurs more than once", path)
    modules = pd.to_numeric(table["module"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(modules) | (modules < 0) | (modules != np.round(modules))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"module {table['module'].iloc[row]!r} of gene {gene_ids[row]} is not a "
            "non-negative integer",
            path,
        )
    return gene_ids, modules.astype(np.int64)


def module_gene_tokens(
    gene_ids: np.ndarray,
    vocabulary: np.ndarray,
    *,
    source: str | Path | None = None,
    tokens_source: str | Path | None = None,
) -> np.ndarray:
    """Token id of each module gene (by Ensembl ID in ``vocabulary``).

    Raises
    ------
    InputError
        A gene is not a token (naming ``source``, the module table, and ``tokens_source``).
    """
    token_of = {str(g): t for t, g in enumerate(np.asarray(vocabulary).astype(str))}
    unknown = [g for g in np.asarray(gene_ids).tolist() if g not in token_of]
    if unknown:
        raise InputError(
            f"{len(unknown)} genes are not tokens of {tokens_source}, e.g. {unknown[0]}",
            source,
        )
    return np.array([token_of[g] for g in np.asarray(gene_ids).tolist()], dtype=np.int64)


def module_attention(
    cells: TokenizedCells,
    model: AttentionModel,
    gene_tokens: np.ndarray,
    gene_modules: np.ndarray,
    *,
    n_threads: int = 1,
    condition: str = "all",
) -> ModuleAttention:
    """Within-module attention of every cell, in one kernel call.

    Parameters
    ----------
    cells
        The cells (of one condition, or one shard of it).
    model
        The attention model (the study model's single layer, or a checkpoint's
        ``attention_layer`` averaged over ``attention_heads``).
    gene_tokens
        Token ids of the genes of the module table, unique.
    gene_modules
        Module number of each of those genes (0 = unassigned, left out).
    n_threads
        Rayon threads; the result is bit-identical for any value.
    condition
        Condition label stored with the result.

    Returns
    -------
    ModuleAttention
        ``sums`` and ``pairs`` per cell and module; modules are the distinct positive
        numbers of ``gene_modules``, ascending.

    Raises
    ------
    InputError
        If the genes repeat a token or name one outside the model's vocabulary, the two
        arrays differ in length, or a module number is negative.
    """
    gene_tokens = np.asarray(gene_tokens, dtype=np.int64)
    gene_modules = np.asarray(gene_modules, dtype=np.int64)
    vocab = len(cells.vocabulary)
    if gene_tokens.shape != gene_modules.shape or gene_tokens.ndim != 1:
        raise InputError(f"{len(gene_tokens)} gene tokens but {len(gene_modules)} module labels")
    if len(np.unique(gene_tokens)) != len(gene_tokens):
        raise InputError("the module genes repeat a token")
    if len(gene_tokens) and (gene_tokens.min() < 0 or gene_tokens.max() >= vocab):
        raise InputError(f"a module gene's token is outside the vocabulary (0..{vocab - 1})")
    if np.any(gene_modules < 0):
        raise InputError("module numbers must be non-negative (0 = unassigned)")
    modules, sizes = np.unique(gene_modules[gene_modules > 0], return_counts=True)
    column = np.full(len(gene_tokens), -1, dtype=np.int64)
    assigned = gene_modules > 0
    column[assigned] = np.searchsorted(modules, gene_modules[assigned])
    sums, pairs = model.module_sums(
        cells, gene_tokens, column, len(modules), n_threads=int(n_threads)
    )
    return ModuleAttention(
        modules=modules.astype(np.int64),
        module_sizes=sizes.astype(np.int64),
        cell_ids=np.asarray(cells.cell_ids).astype(str),
        sums=sums,
        pairs=pairs,
        condition=str(condition),
    )


def save_module_attention(path: str | Path, data: ModuleAttention) -> None:
    """Write ``data`` to ``path`` atomically (uncompressed ``.npz``, byte-deterministic)."""
    data = _checked(data, path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            modules=data.modules,
            module_sizes=data.module_sizes,
            cell_ids=data.cell_ids,
            sums=data.sums,
            pairs=data.pairs,
            condition=np.str_(data.condition),
        )


def load_module_attention(path: str | Path) -> ModuleAttention:
    """Read and check a module-attention file.

    Raises
    ------
    InputError
        If the file is missing, not an ``.npz``, lacks an array or its arrays disagree.
    """
    arrays = read_npz_arrays(path, _ARRAYS, "a module-attention file")
    condition = arrays.pop("condition")
    if condition.shape != () or condition.dtype.kind != "U":
        raise InputError("condition must be a string scalar", path)
    return _checked(ModuleAttention(**arrays, condition=str(condition)), path)


def gather_module_attention(paths: Sequence[str | Path]) -> ModuleAttention:
    """Concatenate the cells of several shards of one condition, in the given order.

    Raises
    ------
    InputError
        If no path is given, or a shard's modules, module sizes or condition differ from the
        first shard's (the error names the shard).
    """
    if not paths:
        raise InputError("no module-attention shard given")
    parts = [load_module_attention(p) for p in paths]
    first = parts[0]
    for path, part in zip(paths[1:], parts[1:], strict=True):
        if not (
            np.array_equal(part.modules, first.modules)
            and np.array_equal(part.module_sizes, first.module_sizes)
        ):
            raise InputError(f"modules differ from those of the first shard {paths[0]}", path)
        if part.condition != first.condition:
            raise InputError(
                f"condition {part.condition!r} differs from {first.condition!r} of {paths[0]}",
                path,
            )
    k = len(first.modules)
    return ModuleAttention(
        modules=first.modules,
        module_sizes=first.module_sizes,
        cell_ids=np.concatenate([p.cell_ids for p in parts]).astype(str),
        sums=np.concatenate([p.sums for p in parts]).reshape(-1, k),
        pairs=np.concatenate([p.pairs for p in parts]).reshape(-1, k),
        condition=first.condition,
    )


def cell_label_test(
    case: ModuleAttention,
    control: ModuleAttention,
    *,
    n_permutations: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Differential within-module attention, with a permutation test over cell labels.

    For module ``k`` the statistic is ``case_mean - control_mean``, each the pair-weighted
    mean within-module attention ``sum S[c, k] / sum N[c, k]`` over the cells of the
    condition. The two-sided p-value is ``(1 + #{|null| >= |diff|}) / (1 + n_permutations)``
    over ``n_permutations`` random relabellings of the pooled cells with the group sizes kept
    (one label matrix shared by all modules, drawn from a generator seeded with ``seed``); a
    relabelling that leaves a group without a pair of the module counts as at least as
    extreme. The Benjamini-Hochberg FDR is taken across the modules with a p-value.

    Parameters
    ----------
    case, control
        Module attention of the cells of each condition, over the same modules.
    n_permutations
        Random relabellings (at least 1).
    seed
        Seed of the relabellings.

    Returns
    -------
    pandas.DataFrame
        One row per module: ``module``, ``size`` (genes), ``n_pairs`` (co-present ordered
        gene pairs summed over the cells of both conditions: the weight of the means),
        ``case_mean``, ``control_mean``, ``diff``, ``p_value``, ``fdr``, ``n_permutations``
        and ``test`` (``"cells"``). ``diff`` and the p-value are NaN for a module without a
        pair in one of the conditions.

    Raises
    ------
    InputError
        If the modules differ between the conditions or a condition has no cell.
    ValueError
        If ``n_permutations`` is below 1.
    """
    import pandas as pd

    from geneattn.enrichment import bh_fdr
    from geneattn.modules import DIFFERENTIAL_COLUMNS

    if n_permutations < 1:
        raise ValueError(f"n_permutations must be at least 1, got {n_permutations}")
    if not (
        np.array_equal(case.modules, control.modules)
        and np.array_equal(case.module_sizes, control.module_sizes)
    ):
        raise InputError("the case and control module attention are over different modules")
    if case.n_cells == 0 or control.n_cells == 0:
        raise InputError(
            f"{case.n_cells} case and {control.n_cells} control cells: both need cells"
        )
    logger.info(
        "%d modules: %d relabellings of %d case and %d control cells",
        len(case.modules),
        n_permutations,
        case.n_cells,
        control.n_cells,
    )
    sums = np.concatenate([case.sums, control.sums]).astype(np.float64)
    pairs = np.concatenate([case.pairs, control.pairs]).astype(np.float64)
    n, n_case = len(sums), case.n_cells
    observed_labels = np.zeros((1, n))
    observed_labels[0, :n_case] = 1.0
    case_mean, control_mean = _group_means(observed_labels, sums, pairs)
    case_mean, control_mean = case_mean[0], control_mean[0]
    observed = case_mean - control_mean
    tolerance = _TIE_TOLERANCE * (np.abs(case_mean) + np.abs(control_mean))
    threshold = np.abs(observed) - tolerance

    rng = np.random.default_rng(seed)
    extreme = np.zeros(len(case.modules), dtype=np.int64)
    block = max(1, _BLOCK_ENTRIES // n)
    for start in range(0, n_permutations, block):
        rows = min(block, n_permutations - start)
        order = np.argsort(rng.random((rows, n)), axis=1, kind="stable")
        labels = (order < n_case).astype(np.float64)
        null_case, null_control = _group_means(labels, sums, pairs)
        null = null_case - null_control
        with np.errstate(invalid="ignore"):
            extreme += (np.isnan(null) | (np.abs(null) >= threshold)).sum(axis=0)
    p_value = (1.0 + extreme) / (1.0 + n_permutations)
    p_value[np.isnan(observed)] = np.nan

    table = pd.DataFrame(
        {
            "module": case.modules.astype(np.int64),
            "size": case.module_sizes.astype(np.int64),
            "n_pairs": (case.pairs.sum(axis=0) + control.pairs.sum(axis=0)).astype(np.int64),
            "case_mean": case_mean,
            "control_mean": control_mean,
            "diff": observed,
            "p_value": p_value,
        }
    )
    table["fdr"] = bh_fdr(table["p_value"].to_numpy(dtype=np.float64))
    table["n_permutations"] = np.int64(n_permutations)
    table["test"] = "cells"
    return table[list(DIFFERENTIAL_COLUMNS)]


def read_hub_ranks(path: str | Path) -> dict[str, int] | None:
    """``{gene_id: hub_rank}`` of a module table, or None when it has no ``hub_rank``
    column (read it with :func:`read_module_labels` first: that checks the table)."""
    import pandas as pd

    written = pd.read_csv(path, sep="\t", dtype={"gene_id": str}, keep_default_na=False)
    if "hub_rank" not in written.columns:
        return None
    return dict(zip(written["gene_id"].tolist(), written["hub_rank"].tolist(), strict=True))


def differential_graph(
    case: GeneNetwork,
    control: GeneNetwork,
    gene_ids: np.ndarray,
    gene_modules: np.ndarray,
    scored: ModuleAttention,
    table: pd.DataFrame,
    *,
    detect_on: str = "pooled",
    hub_ranks: Mapping[str, int] | None = None,
    source: str | Path | None = None,
    case_source: str | Path | None = None,
    control_source: str | Path | None = None,
    scored_source: str | Path | None = None,
) -> nx.Graph:
    """The module graph of :func:`geneattn.modules.find_modules` (same network, modules and
    hubs) with the results of :func:`cell_label_test`.

    Parameters
    ----------
    case, control
        The networks the modules were found from.
    gene_ids, gene_modules
        The module table's genes and modules (:func:`read_module_labels`).
    scored
        Module attention of cells scored on these modules (checks they are the same).
    table
        The :func:`cell_label_test` table.
    detect_on
        The network the modules were found in (as given to ``find_modules``).
    hub_ranks
        ``{gene_id: hub_rank}`` as written in the module table, checked against the
        recomputed ones (None: not checked).
    source, case_source, control_source, scored_source
        Files of the module table, the networks and the scored cells, named in errors.

    Raises
    ------
    InputError
        The module table does not fit the networks or the scored cells.
    """
    from geneattn.modules import detection_network, module_graph, module_table, undirected_weights

    try:
        detected_in = detection_network(case, control, detect_on)
    except ValueError as err:
        raise InputError(str(err), case_source) from None
    module_of = dict(zip(np.asarray(gene_ids).tolist(), gene_modules.tolist(), strict=True))
    missing = [g for g in detected_in.gene_ids.tolist() if g not in module_of]
    if missing or len(module_of) != detected_in.n_genes:
        raise InputError(
            f"its genes are not those of the network {case_source}"
            + (f" (e.g. {missing[0]} is missing)" if missing else ""),
            source,
        )
    modules = np.array([module_of[g] for g in detected_in.gene_ids.tolist()], dtype=np.int64)
    numbers, sizes = np.unique(modules[modules > 0], return_counts=True)
    if numbers.tolist() != scored.modules.tolist() or sizes.tolist() != (
        scored.module_sizes.tolist()
    ):
        raise InputError(
            f"its modules are not those the cells were scored on ({scored_source})", source
        )
    weights = undirected_weights(detected_in.adjacency)
    recomputed = module_table(detected_in, modules, weights)
    if hub_ranks is not None and recomputed["hub_rank"].tolist() != [
        hub_ranks[g] for g in recomputed["gene_id"]
    ]:
        raise InputError(
            f"its hub ranks are not those of the modules in the {detect_on} network "
            f"of {case_source} and {control_source} (another --detect-on?)",
            source,
        )
    return module_graph(detected_in, recomputed, table, weights)


def _group_means(
    labels: np.ndarray, sums: np.ndarray, pairs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pair-weighted means of the cells labelled 1 and of those labelled 0, per row."""
    other = 1.0 - labels
    with np.errstate(invalid="ignore", divide="ignore"):
        first = (labels @ sums) / (labels @ pairs)
        second = (other @ sums) / (other @ pairs)
    return first, second


def _checked(data: ModuleAttention, path: str | Path) -> ModuleAttention:
    """``data`` with its arrays in their dtypes, or an :class:`InputError` naming ``path``."""
    modules = np.asarray(data.modules)
    sizes = np.asarray(data.module_sizes)
    cell_ids = np.asarray(data.cell_ids)
    sums = np.asarray(data.sums)
    pairs = np.asarray(data.pairs)
    k, c = len(modules), len(cell_ids)
    if modules.ndim != 1 or modules.dtype.kind not in "iu" or sizes.shape != (k,):
        raise InputError("modules and module_sizes must be integer arrays of one length", path)
    if k and (modules.min() < 1 or np.any(np.diff(modules) <= 0) or sizes.min() < 1):
        raise InputError("modules must be ascending numbers from 1 with positive sizes", path)
    if cell_ids.ndim != 1 or sums.shape != (c, k) or pairs.shape != (c, k):
        raise InputError(
            f"sums {sums.shape} and pairs {pairs.shape} must be cells x modules ({c}, {k})",
            path,
        )
    if sums.dtype.kind != "f" or pairs.dtype.kind not in "iu":
        raise InputError("sums must be float and pairs integer", path)
    if not np.all(np.isfinite(sums)) or np.any(sums < 0) or np.any(pairs < 0):
        raise InputError("sums and pairs must be finite and non-negative", path)
    return ModuleAttention(
        modules=modules.astype(np.int64),
        module_sizes=sizes.astype(np.int64),
        cell_ids=cell_ids.astype(str),
        sums=sums.astype(np.float64),
        pairs=pairs.astype(np.int64),
        condition=str(data.condition),
    )

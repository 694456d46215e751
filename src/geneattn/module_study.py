"""hdWGCNA-style analysis of a study's modules (the ``module_analysis`` rule and
:func:`geneattn.tl.module_analysis`).

The module table (``modules.tsv``), the study's QC'd counts and its case and control
networks in; four tables out (:class:`StudyModuleAnalysis`): each cell's module eigengenes,
each gene's kME and hub rank by kME, the module-condition association (with the sample as
the unit when a sample column is given) and the preservation of the control network's
modules in the case network. The statistics are those of :mod:`geneattn.module_analysis`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from geneattn.errors import InputError

if TYPE_CHECKING:
    import anndata as ad
    import pandas as pd

    from geneattn.module_blocks import Blocks
    from geneattn.network import GeneNetwork

__all__ = [
    "PRESERVATION_COLUMNS",
    "TRAIT_COLUMNS",
    "StudyModuleAnalysis",
    "analyse_study_modules",
    "module_expression",
]

logger = logging.getLogger(__name__)

#: Columns of ``module_traits.tsv``.
TRAIT_COLUMNS = (
    "module",
    "n_genes",
    "variance_explained",
    "case_mean",
    "control_mean",
    "diff",
    "n_units",
    "unit",
    "p_value",
    "fdr",
)
#: Columns of ``module_preservation.tsv``.
PRESERVATION_COLUMNS = (
    "module",
    "size",
    "mean_weight",
    "cor_weight",
    "cor_kim",
    "z_density",
    "z_connectivity",
    "z_summary",
    "p_density",
    "reference",
    "test",
)


@dataclass(frozen=True)
class StudyModuleAnalysis:
    """The module analysis of a study (:func:`analyse_study_modules`).

    Attributes
    ----------
    ids
        Module numbers (ascending) with at least one gene in the counts: the eigengene
        columns.
    cells
        Names of the cells analysed (those of the case and control conditions, in the
        counts' order).
    rows
        Row of each of those cells in the counts.
    eigengenes
        ``(n_cells, n_modules)`` eigengenes (:func:`geneattn.module_analysis.module_eigengenes`).
    eigengene_table
        ``module_eigengenes.tsv``: ``cell``, ``condition``, ``sample`` (with a sample
        column), then ``ME{module}`` per module.
    kme
        ``module_kme.tsv``: one row per gene of the module table, in its order: ``gene``,
        ``gene_id``, ``module``, ``in_counts``, ``kme`` (to its own module; empty for
        unassigned genes or genes not in the counts), ``kme_rank`` (1 = the module's hub by
        kME), ``weak_member`` (kME below ``min_kme``: WGCNA would make it grey), then
        ``kme_M{module}`` (correlation with every eigengene).
    traits
        ``module_traits.tsv`` (:data:`TRAIT_COLUMNS`; no rows without control cells).
    preservation
        ``module_preservation.tsv`` (:data:`PRESERVATION_COLUMNS`; no rows without the two
        networks).
    columns
        Column of each module-table gene in the counts (-1 when absent).
    """

    ids: np.ndarray
    cells: np.ndarray
    rows: np.ndarray
    eigengenes: np.ndarray
    eigengene_table: pd.DataFrame
    kme: pd.DataFrame
    traits: pd.DataFrame
    preservation: pd.DataFrame
    columns: np.ndarray


def module_columns(
    modules: pd.DataFrame, counts: ad.AnnData, *, source: str | Path | None = None
) -> np.ndarray:
    """Column of each module-table gene in ``counts`` (-1 when absent), as the ``evaluate``
    stage finds them (:func:`geneattn.baselines.universe_columns`); reads no counts.

    Raises
    ------
    InputError
        No gene of the module table is in the counts (``source`` named).
    """
    from geneattn.baselines import universe_columns

    var_names = counts.var_names.astype(str).to_numpy()
    var_ids = (
        counts.var["gene_ids"].astype(str).to_numpy() if "gene_ids" in counts.var else var_names
    )
    columns = universe_columns(var_ids, var_names, modules["gene_id"], modules["gene"])
    if not (columns >= 0).any():
        raise InputError("none of the module genes is in the counts", source)
    if (columns < 0).any():
        logger.warning("%d module genes not in the counts: no kME", int((columns < 0).sum()))
    return columns


def _n_counts(counts: ad.AnnData) -> np.ndarray | None:
    """``obs["n_counts"]`` when present (the QC stage's totals over all genes)."""
    if "n_counts" in counts.obs:
        return counts.obs["n_counts"].to_numpy(dtype=np.float64)
    return None


def module_expression(
    modules: pd.DataFrame, counts: ad.AnnData, *, source: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Log-normalised expression of the module table's genes
    (:func:`module_columns`, :func:`geneattn.diffusion.log_normalise` with
    ``obs["n_counts"]`` when present).

    Returns
    -------
    columns
        Column of each module-table gene in ``counts`` (-1 when absent).
    expression
        Dense ``(n_cells, n_present)`` float64 of the genes with a column, in table order.

    Raises
    ------
    InputError
        No gene of the module table is in the counts (``source`` named).
    """
    from geneattn.diffusion import log_normalise

    columns = module_columns(modules, counts, source=source)
    full = log_normalise(counts.X, n_counts=_n_counts(counts))
    return columns, full[:, columns[columns >= 0]].toarray()


def analyse_study_modules(
    modules: pd.DataFrame,
    counts: ad.AnnData,
    *,
    condition_column: str,
    case: str,
    control: str | None = None,
    sample_column: str | None = None,
    case_network: GeneNetwork | None = None,
    control_network: GeneNetwork | None = None,
    min_kme: float = 0.3,
    trait_permutations: int = 10_000,
    preservation_permutations: int = 200,
    seed: int = 0,
    source: str | Path | None = None,
    modules_source: str | Path | None = None,
    blocks: Blocks | None = None,
) -> StudyModuleAnalysis:
    """Eigengenes, kME and hubs, module-condition association and module preservation.

    The cells are those of ``counts`` labelled ``case`` or ``control`` in
    ``obs[condition_column]``; each module's eigengene is the first principal component of
    its genes' z-scored log-normalised expression over all of them. Preservation compares
    the control network (reference) with the case network (test) on their **mean
    attention** (every gene pair seen together in enough cells, before diffusion and the
    top-k sparsification; pairs never seen count 0): the top-k adjacency keeps too few
    pairs inside a module for its pair-weight correlations to mean much.

    Parameters
    ----------
    modules
        The module table (``gene``, ``gene_id``, ``module``; 0 = unassigned).
    counts
        AnnData of the QC'd raw counts (``obs`` holds the condition and sample columns).
    condition_column, case, control
        The condition column and labels (``control`` None: a single-condition study, whose
        trait and preservation tables have no rows).
    sample_column
        ``obs`` column of each cell's sample (donor): the association test's unit is then
        the sample (:func:`geneattn.module_analysis.module_condition_association`); None:
        the cells, said in the table's ``unit`` column.
    case_network, control_network
        The networks of the two conditions (:func:`geneattn.network.load_network`), over
        the same genes; without both, no preservation rows.
    min_kme
        Assigned genes whose kME to their own module is below this are flagged
        ``weak_member`` (WGCNA's ``minKMEtoStay``; their module is kept).
    trait_permutations, preservation_permutations
        Relabellings (or sign flips) of the association test when not enumerated, and
        random gene sets per module of the preservation statistics.
    seed
        Seed of both.
    source, modules_source
        Names of the counts file and of the module table, for errors.
    blocks
        Blocks of the raw counts of every cell of ``counts``
        (:func:`geneattn.tokenize_stream.h5ad_blocks`): the eigengenes and kME are then
        computed a block at a time (:func:`geneattn.module_blocks.blocked_eigengenes`, equal
        up to round-off) and ``counts.X`` is not read, so ``counts`` may be backed.

    Returns
    -------
    StudyModuleAnalysis

    Raises
    ------
    InputError
        A column or gene is missing, no cell has the condition labels, or the networks'
        genes differ.
    """
    import pandas as pd

    from geneattn.cells import condition_labels
    from geneattn.module_analysis import (
        module_condition_association,
        module_eigengenes,
        module_kme,
    )

    if missing := sorted({"gene", "gene_id", "module"} - set(modules.columns)):
        raise InputError(f"missing columns {missing}", modules_source)
    module_of = pd.to_numeric(modules["module"], errors="coerce").to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(module_of)) or np.any(module_of < 0) or np.any(module_of % 1):
        raise InputError("column 'module' is not a non-negative integer", modules_source)
    module_of = module_of.astype(np.int64)
    for name, value in (
        ("trait_permutations", trait_permutations),
        ("preservation_permutations", preservation_permutations),
    ):
        if value < 2:
            raise InputError(f"{name} must be at least 2, got {value}")
    labels = condition_labels(counts.obs, condition_column, source=source).astype(str).to_numpy()
    case, control = str(case), None if control is None else str(control)
    wanted = [case] if control is None else [case, control]
    rows = np.flatnonzero(np.isin(labels, wanted))
    if not len(rows):
        raise InputError(f"no cell labelled {' or '.join(map(repr, wanted))}", source)
    samples = None
    if sample_column is not None:
        if sample_column not in counts.obs:
            raise InputError(f"no obs column {sample_column!r}", source)
        samples = counts.obs[sample_column].astype(str).to_numpy()[rows]
    cells = counts.obs_names.astype(str).to_numpy()[rows]
    if blocks is None:
        columns, expression = module_expression(modules, counts, source=source)
        expression = expression[rows]
        present_modules = module_of[columns >= 0]
        ids, eig, explained = module_eigengenes(expression, present_modules)
        kme_all = module_kme(expression, eig) if len(ids) else np.zeros((expression.shape[1], 0))
    else:
        from geneattn.module_blocks import blocked_eigengenes

        columns = module_columns(modules, counts, source=source)
        present_modules = module_of[columns >= 0]
        ids, eig, explained, kme_all = blocked_eigengenes(
            blocks,
            rows=rows,
            columns=columns[columns >= 0],
            modules=present_modules,
            n_counts=_n_counts(counts),
        )
    present = columns >= 0

    # module_kme.tsv: every gene of the table, in its order
    n = len(modules)
    kme_matrix = np.full((n, len(ids)), np.nan)
    kme_matrix[present] = kme_all
    own = np.full(n, np.nan)
    rank = np.zeros(n, dtype=np.int64)
    for c, m in enumerate(ids.tolist()):
        members = np.flatnonzero(present & (module_of == m))
        own[members] = kme_matrix[members, c]
        order = members[np.lexsort((members, -own[members]))]
        rank[order] = np.arange(1, len(order) + 1)
    kme = pd.DataFrame(
        {
            "gene": modules["gene"].astype(str).to_numpy(),
            "gene_id": modules["gene_id"].astype(str).to_numpy(),
            "module": module_of,
            "in_counts": present,
            "kme": own,
            "kme_rank": pd.Series(rank, dtype="Int64").mask(rank == 0),
            "weak_member": (module_of > 0) & present & (own < min_kme),
        }
    )
    for c, m in enumerate(ids.tolist()):
        kme[f"kme_M{m}"] = kme_matrix[:, c]

    condition = labels[rows]
    table = {"cell": cells, "condition": condition}
    if samples is not None:
        table["sample"] = samples
    eigengene_table = pd.DataFrame(table | {f"ME{m}": eig[:, c] for c, m in enumerate(ids)})

    n_genes = np.array([int((present_modules == m).sum()) for m in ids], dtype=np.int64)
    is_case = condition == case
    if control is not None and is_case.any() and (~is_case).any() and len(ids):
        association = module_condition_association(
            eig,
            ids,
            is_case,
            samples=samples,
            n_permutations=trait_permutations,
            seed=seed,
        )
        association.insert(1, "n_genes", n_genes)
        association.insert(2, "variance_explained", explained)
        traits = association[list(TRAIT_COLUMNS)]
    else:
        traits = pd.DataFrame(columns=list(TRAIT_COLUMNS))

    if (case_network is None) != (control_network is None):
        raise InputError("module preservation needs both the case and the control network")
    if case_network is not None and control_network is not None and len(ids):
        preservation = _preservation(
            modules,
            module_of,
            control_network,
            case_network,
            n_permutations=preservation_permutations,
            seed=seed,
        )
    else:
        preservation = pd.DataFrame(columns=list(PRESERVATION_COLUMNS))
    logger.info(
        "module analysis: %d modules over %d cells, %d of %d genes in the counts",
        len(ids),
        len(rows),
        int(present.sum()),
        n,
    )
    return StudyModuleAnalysis(
        ids=ids,
        cells=cells,
        rows=rows,
        eigengenes=eig,
        eigengene_table=eigengene_table,
        kme=kme,
        traits=traits,
        preservation=preservation,
        columns=columns,
    )


def _preservation(
    modules: pd.DataFrame,
    module_of: np.ndarray,
    reference: GeneNetwork,
    test: GeneNetwork,
    *,
    n_permutations: int,
    seed: int,
) -> pd.DataFrame:
    """Preservation of the modules of the reference network's mean attention in the
    test network's (:func:`geneattn.module_analysis.module_preservation`)."""
    from geneattn.module_analysis import module_preservation

    ref_ids = np.asarray(reference.gene_ids).astype(str)
    if not np.array_equal(ref_ids, np.asarray(test.gene_ids).astype(str)):
        raise InputError(
            f"the {reference.condition!r} and {test.condition!r} networks have different genes"
        )
    by_id = dict(zip(modules["gene_id"].astype(str), module_of.tolist(), strict=True))
    on_network = np.array([by_id.get(g, 0) for g in ref_ids], dtype=np.int64)
    if not (on_network > 0).any():
        raise InputError("no module gene is a gene of the networks")
    table = module_preservation(
        reference.mean_attention,
        test.mean_attention,
        on_network,
        n_permutations=n_permutations,
        seed=seed,
    )
    table["reference"] = str(reference.condition)
    table["test"] = str(test.condition)
    return table

"""``ga.tl.modules``, ``ga.tl.differential`` and ``ga.tl.evaluate``: Leiden modules, their
case-vs-control test over cell labels, and whether they mean something."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from geneattn import defaults
from geneattn.errors import InputError
from geneattn.store import conditions, get_model, get_tokens, network_from_uns, record, require
from geneattn.tl._common import cells_of

if TYPE_CHECKING:
    import anndata as ad

    from geneattn.models.protocol import AttentionModel


def modules(
    adata: ad.AnnData,
    *,
    detect_on: str = "pooled",
    objective: str = "rb_configuration",
    resolution: float = 1.0,
    seed: int = 0,
    min_size: int = 5,
    gene_sets: Sequence[str | Path] = defaults.GENE_SETS,
    min_set_size: int = 3,
    gene_set_test: bool = False,
    permutations: int = 1000,
    gene_names: str | Path | Mapping[str, str] | None = None,
    case: str | None = None,
    control: str | None = None,
    copy: bool = False,
) -> ad.AnnData | None:
    """Leiden modules of the case (or pooled) network, hub genes and gene-set enrichment
    (the ``modules`` rule, :func:`geneattn.modules.find_modules`).

    Parameters
    ----------
    adata
        With gene networks (:func:`network`).
    detect_on, objective, resolution, seed, min_size
        As config ``modules`` (``pooled``: modules of the average of the case and control
        networks).
    gene_sets
        ``.gmt`` files, or names of the pinned ones (config ``modules.gene_sets``).
    min_set_size
        Gene sets with fewer network genes are skipped.
    gene_set_test, permutations
        Also run the gene-set permutation test of differential attention (config
        ``modules.differential: genes``; it does not hold its level, :func:`differential`
        is the valid test), with this many random gene sets per module.
    gene_names
        Symbol -> Ensembl map for ``var["module"]`` (None: the pinned one).
    case, control
        The conditions of the networks (None: those :func:`geneattn.pp.qc` kept).
    copy
        Return a copy instead of changing ``adata``.

    Returns
    -------
    anndata.AnnData or None
        The copy when ``copy``; otherwise ``var["module"]`` (the module of each gene of
        ``adata`` in the network, 0 unassigned, -1 not in the network) and ``uns["modules"]``
        with ``table`` (``modules.tsv``), ``enrichment`` (``enrichment.tsv``),
        ``differential`` (the gene-set test, when asked for), ``gene_ids`` and ``weights``
        (the undirected network the modules were found in) and ``params``.
    """
    from geneattn.modules import find_modules
    from geneattn.universe import column_gene_ids

    adata = adata.copy() if copy else adata
    _, case, control = conditions(adata, case=case, control=control)
    networks = require(adata, "network")["networks"]
    for label in (case, control):
        if label is not None and label not in networks:
            raise InputError(f"no network of {label!r} in uns['network'] (run geneattn.tl.network)")
    found = find_modules(
        network_from_uns(networks[case]),
        None if control is None else network_from_uns(networks[control]),
        gene_sets=defaults.gene_sets(gene_sets),
        detect_on=detect_on,
        objective=objective,
        resolution=resolution,
        seed=seed,
        min_size=min_size,
        min_set_size=min_set_size,
        gene_set_test=gene_set_test,
        permutations=permutations,
        graph=False,
        case_source=f"uns['network']['networks'][{case!r}]",
        control_source=None if control is None else f"uns['network']['networks'][{control!r}]",
    )
    module_of = dict(zip(found.table["gene_id"].astype(str), found.table["module"], strict=True))
    var_ids = column_gene_ids(
        adata.var_names.astype(str).tolist(),
        defaults.name_map(gene_names),
        var_gene_ids=(
            adata.var["gene_ids"].astype(str).tolist() if "gene_ids" in adata.var else None
        ),
    )
    adata.var["module"] = np.array([module_of.get(g, -1) for g in var_ids], dtype=np.int64)
    results = {
        "table": found.table,
        "enrichment": found.enrichment,
        "gene_ids": np.asarray(found.network.gene_ids).astype(str),
        "weights": found.weights,
    }
    if found.differential is not None:
        results["differential"] = found.differential
    record(
        adata,
        "modules",
        {
            "case": case,
            "control": control,
            "detect_on": detect_on,
            "objective": objective,
            "resolution": resolution,
            "seed": seed,
            "min_size": min_size,
            "gene_sets": [str(g) for g in gene_sets],
            "min_set_size": min_set_size,
            "gene_set_test": gene_set_test,
            "permutations": permutations,
        },
        **results,
    )
    return adata if copy else None


def differential(
    adata: ad.AnnData,
    *,
    permutations: int = 1000,
    seed: int = 0,
    model: AttentionModel | str | Path | None = None,
    groupby: str | None = None,
    case: str | None = None,
    control: str | None = None,
    n_threads: int | None = None,
    copy: bool = False,
) -> ad.AnnData | None:
    """Does a module's attention differ between case and control cells? (the
    ``module_attention`` and ``differential`` rules).

    Per cell, the attention among each module's genes and the number of gene pairs, in
    Rust (:func:`geneattn.differential.module_attention`); per module, the pair-weighted
    mean of the case cells minus that of the control cells, tested by permuting the cell
    labels (:func:`geneattn.differential.cell_label_test`, BH FDR across modules).

    Parameters
    ----------
    adata
        With modules (:func:`modules`) and a model.
    permutations, seed
        Relabellings of the cells and their seed (config ``modules.permutations``,
        ``modules.seed``).
    model
        An attention model or model file instead of the stored one.
    groupby, case, control
        The condition column and labels (None: those :func:`geneattn.pp.qc` kept).
    n_threads
        Rayon threads (None: every core).
    copy
        Return a copy instead of changing ``adata``.

    Returns
    -------
    anndata.AnnData or None
        The copy when ``copy``; otherwise ``uns["differential"]`` with ``table``
        (``differential.tsv``), ``modules`` (the module numbers) and ``params``, and
        ``obsm["module_attention"]``: each case and control cell's mean attention among the
        genes of each module (columns: ``uns["differential"]["modules"]``; NaN where the cell
        holds no pair of the module's genes, and for other cells).

    Raises
    ------
    InputError
        A study without control cells.
    """
    from geneattn.cells import condition_labels
    from geneattn.differential import cell_label_test, module_attention, module_gene_tokens

    adata = adata.copy() if copy else adata
    column, case, control = conditions(adata, groupby, case, control)
    if control is None:
        raise InputError("the differential test needs case and control cells")
    table = require(adata, "modules")["table"]
    cells = get_tokens(adata)
    labels = condition_labels(adata.obs, column)
    chosen_model = get_model(adata, model)
    gene_tokens = module_gene_tokens(
        table["gene_id"].astype(str).to_numpy(), cells.vocabulary, source="uns['modules']"
    )
    module_numbers = table["module"].to_numpy(dtype=np.int64)
    scored = {
        label: module_attention(
            cells_of(cells, labels, label, column=column),
            chosen_model,
            gene_tokens,
            module_numbers,
            n_threads=defaults.threads(n_threads),
            condition=label,
        )
        for label in (case, control)
    }
    result = cell_label_test(scored[case], scored[control], n_permutations=permutations, seed=seed)
    per_cell = np.full((adata.n_obs, len(scored[case].modules)), np.nan)
    row_of = {c: i for i, c in enumerate(adata.obs_names.astype(str))}
    for part in scored.values():
        rows = np.array([row_of[c] for c in part.cell_ids], dtype=np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_cell[rows] = np.where(part.pairs > 0, part.sums / part.pairs, np.nan)
    adata.obsm["module_attention"] = per_cell
    record(
        adata,
        "differential",
        {
            "groupby": column,
            "case": case,
            "control": control,
            "permutations": permutations,
            "seed": seed,
        },
        table=result,
        modules=scored[case].modules,
    )
    return adata if copy else None


def evaluate(
    adata: ad.AnnData,
    *,
    programs: Mapping[str, Sequence[str]] | None = None,
    fdr: float = 0.05,
    permutations: int = 10_000,
    seed: int = 0,
    copy: bool = False,
) -> ad.AnnData | None:
    """Do the modules mean something? (the ``evaluate`` rule): the fraction of modules with
    an enriched gene set, and whether known programs share a module against random gene
    sets (:func:`geneattn.evaluation.program_cohesion`).

    Parameters
    ----------
    adata
        With modules (:func:`modules`).
    programs
        ``{name: symbols}`` (None: :data:`geneattn.evaluation.DEFAULT_PROGRAMS`, the
        demo's config ``evaluation.programs``).
    fdr, permutations, seed
        As config ``evaluation`` (and its seed).
    copy
        Return a copy instead of changing ``adata``.

    Returns
    -------
    anndata.AnnData or None
        The copy when ``copy``; otherwise ``uns["evaluation"]`` with ``table`` (the rows of
        ``evaluation.tsv``), ``n_modules``, ``n_enriched``, ``fraction`` and ``params``.
    """
    from geneattn.evaluation import DEFAULT_PROGRAMS, enriched_fraction, program_cohesion

    adata = adata.copy() if copy else adata
    stored = require(adata, "modules")
    chosen = {k: list(v) for k, v in (DEFAULT_PROGRAMS if programs is None else programs).items()}
    frac = enriched_fraction(stored["table"], stored["enrichment"], fdr=fdr)
    cohesion = program_cohesion(stored["table"], chosen, n_permutations=permutations, seed=seed)
    record(
        adata,
        "evaluation",
        {"programs": chosen, "fdr": fdr, "permutations": permutations, "seed": seed},
        table=cohesion,
        **frac,
    )
    return adata if copy else None

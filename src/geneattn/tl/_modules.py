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
    baselines: bool = True,
    markers: str | Path | None = "genesets/human_immune_cell_markers.json",
    label_column: str | None = None,
    top_k: int = 10,
    copy: bool = False,
) -> ad.AnnData | None:
    """Do the modules mean something? (the ``evaluate`` rule): the fraction of modules with
    an enriched gene set, and how well known programs share a module, beside WGCNA-like
    co-expression modules of the same genes and, with cell labels, the embeddings beside
    PCA (:func:`geneattn.baselines.evaluate_against_baselines`).

    Parameters
    ----------
    adata
        With modules (:func:`modules`); ``X`` the QC'd counts (:func:`geneattn.pp.qc`).
    programs
        ``{name: symbols}`` (None: :data:`geneattn.evaluation.DEFAULT_PROGRAMS`, the
        demo's config ``evaluation.programs``).
    fdr, permutations, seed
        As config ``evaluation`` (and ``modules.seed``).
    baselines
        Compare with co-expression modules (and PCA); False: the attention modules'
        program cohesion alone (:func:`geneattn.evaluation.program_cohesion`).
    markers
        Cell-type marker programs added to ``programs``: a JSON file, or the path of a
        pinned resource (the default, as the workflow); None: none.
    label_column
        ``obs`` column of cell labels for label transfer of ``obsm["X_geneattn"]``, PCA
        and random vectors (config ``evaluation.label_column``); None: none.
    top_k
        Co-expression edges per gene (config ``network.top_k``); Leiden's resolution,
        objective and minimum size are those the modules were found with.
    copy
        Return a copy instead of changing ``adata``.

    Returns
    -------
    anndata.AnnData or None
        The copy when ``copy``; otherwise ``uns["evaluation"]`` with ``table`` (the rows of
        ``evaluation.tsv``), ``n_modules``, ``n_enriched``, ``fraction``, ``params``, and
        with baselines ``coexpression`` (the co-expression modules) and ``transfer`` (label
        transfer, or absent).
    """
    from geneattn.baselines import evaluate_against_baselines
    from geneattn.datasets import resource
    from geneattn.evaluation import DEFAULT_PROGRAMS, enriched_fraction, program_cohesion

    adata = adata.copy() if copy else adata
    stored = require(adata, "modules")
    chosen = {k: list(v) for k, v in (DEFAULT_PROGRAMS if programs is None else programs).items()}
    frac = enriched_fraction(stored["table"], stored["enrichment"], fdr=fdr)
    params = {"programs": chosen, "fdr": fdr, "permutations": permutations, "seed": seed}
    if not baselines:
        cohesion = program_cohesion(stored["table"], chosen, n_permutations=permutations, seed=seed)
        record(adata, "evaluation", params | {"baselines": False}, table=cohesion, **frac)
        return adata if copy else None
    marker_path = None
    if markers is not None:
        marker_path = Path(markers)
        if not marker_path.is_file():
            marker_path = resource(str(markers))
    found = stored["params"]
    result = evaluate_against_baselines(
        stored["table"],
        adata,
        chosen,
        fdr=fdr,
        **frac,
        markers=None if marker_path is None else str(marker_path),
        embedding=adata.obsm.get("X_geneattn") if label_column else None,
        cell_names=adata.obs_names if label_column else None,
        label_column=label_column,
        top_k=top_k,
        resolution=found["resolution"],
        objective=found["objective"],
        min_size=found["min_size"],
        n_permutations=permutations,
        seed=seed,
    )
    extra = {"transfer": result["transfer"]} if result["transfer"] is not None else {}
    record(
        adata,
        "evaluation",
        params
        | {
            "baselines": True,
            "markers": None if markers is None else str(markers),
            "label_column": label_column,
            "top_k": top_k,
        },
        table=result["table"],
        coexpression=result["coexpression"],
        **extra,
        **frac,
    )
    return adata if copy else None


def module_analysis(
    adata: ad.AnnData,
    *,
    sample_column: str | None = None,
    min_kme: float = 0.3,
    trait_permutations: int = 10_000,
    preservation_permutations: int = 200,
    seed: int = 0,
    groupby: str | None = None,
    case: str | None = None,
    control: str | None = None,
    copy: bool = False,
) -> ad.AnnData | None:
    """hdWGCNA-style analysis of the modules (the ``module_analysis`` rule,
    :func:`geneattn.module_study.analyse_study_modules`): eigengenes per cell, kME and hubs
    by kME, module-condition association and preservation of each module's structure from
    the control network's mean attention to the case network's.

    Parameters
    ----------
    adata
        With modules (:func:`modules`) and the networks they came from (:func:`network`);
        ``X`` the QC'd counts (:func:`geneattn.pp.qc`).
    sample_column
        ``obs`` column of each cell's sample (config ``conditions.sample``): the association
        test's unit is then the sample; None: the cells (treated as replicates).
    min_kme, trait_permutations, preservation_permutations, seed
        As config ``modules`` (``min_kme``, ``trait_permutations``,
        ``preservation_permutations``, ``seed``).
    groupby, case, control
        The condition column and labels (None: those :func:`geneattn.pp.qc` kept).
    copy
        Return a copy instead of changing ``adata``.

    Returns
    -------
    anndata.AnnData or None
        The copy when ``copy``; otherwise ``obsm["X_module_eigengenes"]`` (cells x modules,
        columns ``uns["module_analysis"]["modules"]``; NaN for cells of other conditions),
        ``var["module_kme"]`` (each module gene's kME to its own module; NaN for other
        genes) and ``uns["module_analysis"]`` with ``modules``, ``kme``
        (``module_kme.tsv``), ``eigengenes`` (``module_eigengenes.tsv``), ``traits``
        (``module_traits.tsv``), ``preservation`` (``module_preservation.tsv``) and
        ``params``.
    """
    from geneattn.module_study import analyse_study_modules

    adata = adata.copy() if copy else adata
    column, case, control = conditions(adata, groupby, case, control)
    table = require(adata, "modules")["table"]
    networks = {}
    if control is not None:
        stored = require(adata, "network")["networks"]
        for label in (case, control):
            if label not in stored:
                raise InputError(
                    f"no network of {label!r} in uns['network'] (run geneattn.tl.network)"
                )
        networks = {
            "case_network": network_from_uns(stored[case]),
            "control_network": network_from_uns(stored[control]),
        }
    result = analyse_study_modules(
        table,
        adata,
        condition_column=column,
        case=case,
        control=control,
        sample_column=sample_column,
        **networks,
        min_kme=min_kme,
        trait_permutations=trait_permutations,
        preservation_permutations=preservation_permutations,
        seed=seed,
        source="adata",
        modules_source="uns['modules']['table']",
    )
    per_cell = np.full((adata.n_obs, len(result.ids)), np.nan)
    per_cell[result.rows] = result.eigengenes
    adata.obsm["X_module_eigengenes"] = per_cell
    var_kme = np.full(adata.n_vars, np.nan)
    present = result.columns >= 0
    var_kme[result.columns[present]] = result.kme["kme"].to_numpy(dtype=np.float64)[present]
    adata.var["module_kme"] = var_kme
    record(
        adata,
        "module_analysis",
        {
            "groupby": column,
            "case": case,
            "control": control,
            "sample_column": sample_column,
            "min_kme": min_kme,
            "trait_permutations": trait_permutations,
            "preservation_permutations": preservation_permutations,
            "seed": seed,
        },
        modules=result.ids,
        kme=result.kme,
        eigengenes=result.eigengene_table,
        traits=result.traits,
        preservation=result.preservation,
    )
    return adata if copy else None

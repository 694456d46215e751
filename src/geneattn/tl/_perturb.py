"""``ga.tl.perturb``: in-silico perturbation of genes in the case cells."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from geneattn import defaults
from geneattn.store import conditions, get_model, get_tokens, record, require

if TYPE_CHECKING:
    import anndata as ad
    import pandas as pd

    from geneattn.models.protocol import AttentionModel


def perturb(
    adata: ad.AnnData,
    *,
    genes_from: str = "hubs",
    genes: Sequence[str] = (),
    hubs_per_module: int = 5,
    disease_fdr: float = 0.05,
    max_genes: int = 200,
    min_cells: int = 5,
    mode: str = "delete",
    shift: float = 0.25,
    null_per_bin: int = 10,
    seed: int = 0,
    gene_names: str | Path | Mapping[str, str] | None = None,
    model: AttentionModel | str | Path | None = None,
    groupby: str | None = None,
    case: str | None = None,
    control: str | None = None,
    alt_states: Sequence[str] = (),
    geneformer_table: bool = False,
    geneformer_stats: str = "goal_state_shift",
    null_study: str | Path | pd.DataFrame | ad.AnnData | None = None,
    sample_column: str | None = None,
    n_threads: int | None = None,
    copy: bool = False,
) -> ad.AnnData | None:
    """Delete or move genes in every case cell and test how far the cells move toward the
    control state (the ``perturb_plan``, ``perturb_shard`` and ``perturbation`` rules).

    The genes (:func:`geneattn.targets.choose_targets`): the top hubs of the disease modules
    (modules whose differential FDR is below ``disease_fdr``, every module when none is), a
    list, or the most expressed; plus random null genes of each expression-frequency bin.
    Each is perturbed in every case cell that expresses it
    (:func:`geneattn.perturb.perturbation_shifts`); its goal shifts toward the control
    cells' centroid are tested against the null genes of its bin (Wilcoxon rank-sum, BH
    FDR; :func:`geneattn.perturb.perturbation_table`).

    Parameters
    ----------
    adata
        With embeddings (:func:`embed`) and, for ``genes_from="hubs"``, modules
        (:func:`modules`; the disease modules come from :func:`differential` when it ran).
    genes_from, genes, hubs_per_module, disease_fdr, max_genes, min_cells, mode, shift,
    null_per_bin, seed
        As config ``perturb``.
    gene_names
        Symbol -> Ensembl map (None: the pinned one).
    model
        An attention model or model file instead of the stored one.
    groupby, case, control
        The condition column, the perturbed cells' label and the goal state's (None: those
        :func:`geneattn.pp.qc` kept; no control: cosine shifts only).
    alt_states
        Other labels of ``groupby`` whose cells' mean embedding is an alternative end state
        (Geneformer's ``alt_states``; config ``perturb.alt_states``): the shifts toward each
        go to the per-cell table's ``alt_shift_{label}`` and the Geneformer table's
        ``Shift_to_alt_end_{label}`` columns.
    geneformer_table
        Also store Geneformer's stats table with its column names
        (:func:`geneattn.geneformer_stats.geneformer_table`; ``perturbation_geneformer.tsv``)
        in ``uns["perturbation"]["geneformer"]`` and the per-cell shifts
        (``perturbation_cells.tsv``) in ``uns["perturbation"]["cells"]``.
    geneformer_stats
        Its mode: ``goal_state_shift``, ``vs_null`` or ``mixture_model`` (config
        ``perturb.geneformer_stats``).
    null_study
        ``vs_null``: the null study's per-cell shifts: an AnnData perturbed with
        ``geneformer_table=True``, its ``uns["perturbation"]["cells"]``, or a results
        directory / ``perturbation_cells.tsv`` of the workflow (config
        ``perturb.null_study``).
    sample_column
        ``obs`` column of each cell's sample (donor; config ``conditions.sample``): each
        gene's shift beyond its null genes is then tested across samples (sign flips,
        bootstrap interval; :func:`geneattn.perturb.perturbation_table`); None: across
        cells, which treats them as independent replicates.
    n_threads
        Rayon threads (None: every core).
    copy
        Return a copy instead of changing ``adata``.

    Returns
    -------
    anndata.AnnData or None
        The copy when ``copy``; otherwise ``uns["perturbation"]`` with ``table``
        (``perturbation.tsv``), ``skipped`` (the genes asked for that are not perturbed, and
        why: ``perturbation/skipped.tsv``), ``params`` and, with ``geneformer_table``,
        ``geneformer`` and ``cells``.

    Raises
    ------
    InputError
        No gene is left to perturb (the message names the skipped genes), an input is
        missing, an alternative end state is not a label of ``groupby`` (or is the case or
        control), or ``vs_null`` has no ``null_study``.
    """
    from geneattn.cells import condition_labels, labelled_positions
    from geneattn.embeddings import EMBEDDING_KEY
    from geneattn.errors import InputError
    from geneattn.geneformer_stats import STATS_MODES
    from geneattn.perturb import (
        module_annotation,
        perturbation_shifts,
        perturbation_table,
        shift_table,
    )
    from geneattn.targets import (
        check_alt_states,
        choose_targets,
        control_centroid,
        expressed_tokens,
        perturbation_plan,
    )
    from geneattn.tokenize import subset_cells

    if not 0.0 <= shift <= 1.0:
        raise InputError(f"shift must be between 0 and 1, got {shift}")
    if geneformer_stats not in STATS_MODES:
        raise InputError(
            f"geneformer_stats must be one of {', '.join(STATS_MODES)}, got {geneformer_stats!r}"
        )
    if geneformer_table and geneformer_stats == "vs_null" and null_study is None:
        raise InputError("geneformer_stats vs_null needs null_study")
    if alt_states and not (geneformer_table and geneformer_stats == "goal_state_shift"):
        raise InputError(
            "alt_states are used by the goal_state_shift Geneformer table only: give "
            "geneformer_table=True (and geneformer_stats='goal_state_shift')"
        )
    adata = adata.copy() if copy else adata
    column, case, control = conditions(adata, groupby, case, control)
    cells = get_tokens(adata)
    labels = condition_labels(adata.obs, column)
    alt_states = [str(s) for s in alt_states]
    check_alt_states(
        labels.dropna().astype(str).to_numpy(),
        alt_states,
        column=column,
        case=case,
        control=control,
    )
    case_cells = subset_cells(
        cells, labelled_positions(cells.cell_ids, labels, case, column=column)
    )
    presence, expressed = expressed_tokens(case_cells, min_cells=min_cells, label=case)
    name_map = defaults.name_map(gene_names)
    stored_modules = adata.uns.get("modules")
    hubs = differential = None
    if genes_from == "hubs":
        hubs = require(adata, "modules")["table"]
        if "differential" in adata.uns:
            differential = adata.uns["differential"]["table"]
        elif "differential" in stored_modules:
            differential = stored_modules["differential"]
    chosen = choose_targets(
        genes_from=genes_from,
        vocabulary=cells.vocabulary,
        presence=presence,
        expressed=expressed,
        name_map=name_map,
        genes=list(genes),
        hubs=hubs,
        differential=differential,
        hubs_per_module=hubs_per_module,
        disease_fdr=disease_fdr,
        max_genes=max_genes,
        min_cells=min_cells,
        differential_source="uns['differential']",
    )
    goal = None
    alt_goals = {}
    if control is not None:
        if EMBEDDING_KEY not in adata.obsm:
            raise InputError(f"adata.obsm has no {EMBEDDING_KEY!r}: run geneattn.tl.embed first")
        state_labels = adata.obs[column].astype(str).to_numpy()
        goal = control_centroid(adata.obsm[EMBEDDING_KEY], state_labels, control)
        alt_goals = {
            s: control_centroid(adata.obsm[EMBEDDING_KEY], state_labels, s) for s in alt_states
        }
    plan = perturbation_plan(
        targets=chosen.tokens,
        presence=presence,
        expressed=expressed,
        goal=goal,
        alt_goals=alt_goals,
        null_per_bin=null_per_bin,
        seed=seed,
    )
    shifts = perturbation_shifts(
        get_model(adata, model),
        case_cells,
        plan.tokens,
        mode,
        goal=goal,
        alt_goals=plan.alt_goal_map,
        shift=shift,
        n_threads=defaults.threads(n_threads),
    )
    module_of = module_symbols = None
    if stored_modules is not None:
        module_of, module_symbols = module_annotation(stored_modules["table"])
    cell_table = shift_table(plan, shifts, case_cells, mode)
    samples = None
    if sample_column is not None:
        if sample_column not in adata.obs:
            raise InputError(f"adata.obs has no column {sample_column!r} (sample_column)")
        samples = dict(
            zip(adata.obs_names.astype(str), adata.obs[sample_column].astype(str), strict=True)
        )
    table = perturbation_table(
        cell_table,
        name_map=name_map,
        module_of=module_of,
        module_symbols=module_symbols,
        samples=samples,
        seed=seed,
    )
    extra = {}
    if geneformer_table:
        from geneattn.geneformer_stats import geneformer_table as gf_table

        extra["geneformer"] = gf_table(
            cell_table,
            name_map=name_map,
            stats=geneformer_stats,
            null=_null_cells(null_study) if geneformer_stats == "vs_null" else None,
        )
        extra["cells"] = cell_table
    record(
        adata,
        "perturbation",
        {
            "groupby": column,
            "case": case,
            "control": control,
            "genes_from": genes_from,
            "genes": [str(g) for g in genes],
            "hubs_per_module": hubs_per_module,
            "disease_fdr": disease_fdr,
            "max_genes": max_genes,
            "min_cells": min_cells,
            "mode": mode,
            "shift": shift,
            "null_per_bin": null_per_bin,
            "seed": seed,
            "alt_states": alt_states,
            "geneformer_table": geneformer_table,
            "geneformer_stats": geneformer_stats,
            "sample_column": sample_column,
        },
        table=table,
        skipped=chosen.skipped,
        **extra,
    )
    return adata if copy else None


def _null_cells(null_study) -> pd.DataFrame:
    """The per-cell shifts of a null study given as AnnData, table, file or directory."""
    import anndata as ad
    import pandas as pd

    from geneattn.errors import InputError
    from geneattn.geneformer_stats import null_shift_file
    from geneattn.perturb import read_shift_tables

    if isinstance(null_study, ad.AnnData):
        stored = null_study.uns.get("perturbation", {})
        if "cells" not in stored:
            raise InputError(
                "null_study has no uns['perturbation']['cells']: perturb it with "
                "geneformer_table=True"
            )
        return stored["cells"]
    if isinstance(null_study, pd.DataFrame):
        return null_study
    return read_shift_tables([null_shift_file(null_study)])

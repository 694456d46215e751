"""``ga.tl.perturb``: in-silico perturbation of genes in the case cells."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from geneattn import defaults
from geneattn.store import conditions, get_model, get_tokens, record, require

if TYPE_CHECKING:
    import anndata as ad

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
    n_threads
        Rayon threads (None: every core).
    copy
        Return a copy instead of changing ``adata``.

    Returns
    -------
    anndata.AnnData or None
        The copy when ``copy``; otherwise ``uns["perturbation"]`` with ``table``
        (``perturbation.tsv``), ``skipped`` (the genes asked for that are not perturbed, and
        why: ``perturbation/skipped.tsv``) and ``params``.

    Raises
    ------
    InputError
        No gene is left to perturb (the message names the skipped genes), or an input is
        missing.
    """
    from geneattn.cells import condition_labels, labelled_positions
    from geneattn.embeddings import EMBEDDING_KEY
    from geneattn.errors import InputError
    from geneattn.perturb import (
        module_annotation,
        perturbation_shifts,
        perturbation_table,
        shift_table,
    )
    from geneattn.targets import (
        choose_targets,
        control_centroid,
        expressed_tokens,
        perturbation_plan,
    )
    from geneattn.tokenize import subset_cells

    if not 0.0 <= shift <= 1.0:
        raise InputError(f"shift must be between 0 and 1, got {shift}")
    adata = adata.copy() if copy else adata
    column, case, control = conditions(adata, groupby, case, control)
    cells = get_tokens(adata)
    labels = condition_labels(adata.obs, column)
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
    if control is not None:
        if EMBEDDING_KEY not in adata.obsm:
            raise InputError(f"adata.obsm has no {EMBEDDING_KEY!r}: run geneattn.tl.embed first")
        goal = control_centroid(
            adata.obsm[EMBEDDING_KEY], adata.obs[column].astype(str).to_numpy(), control
        )
    plan = perturbation_plan(
        targets=chosen.tokens,
        presence=presence,
        expressed=expressed,
        goal=goal,
        null_per_bin=null_per_bin,
        seed=seed,
    )
    shifts = perturbation_shifts(
        get_model(adata, model),
        case_cells,
        plan.tokens,
        mode,
        goal=goal,
        shift=shift,
        n_threads=defaults.threads(n_threads),
    )
    module_of = module_symbols = None
    if stored_modules is not None:
        module_of, module_symbols = module_annotation(stored_modules["table"])
    table = perturbation_table(
        shift_table(plan, shifts, case_cells, mode),
        name_map=name_map,
        module_of=module_of,
        module_symbols=module_symbols,
    )
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
        },
        table=table,
        skipped=chosen.skipped,
    )
    return adata if copy else None

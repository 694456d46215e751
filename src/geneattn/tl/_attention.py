"""``ga.tl.attention`` and ``ga.tl.network``: attention sums per condition, gene networks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from geneattn import defaults
from geneattn.store import (
    conditions,
    get_model,
    get_tokens,
    network_to_uns,
    record,
    require,
    sums_from_uns,
    sums_to_uns,
)
from geneattn.tl._common import cells_of

if TYPE_CHECKING:
    import anndata as ad
    import pandas as pd

    from geneattn.models.protocol import AttentionModel


def attention(
    adata: ad.AnnData,
    *,
    groupby: str | None = None,
    groups: Sequence[str] | None = None,
    universe: str = "variable",
    universe_min_cells: int = 10,
    universe_max_genes: int = 2000,
    gene_names: str | Path | Mapping[str, str] | None = None,
    model: AttentionModel | str | Path | None = None,
    n_threads: int | None = None,
    copy: bool = False,
) -> ad.AnnData | None:
    """Each condition's attention summed over a gene universe (the ``universe``,
    ``attention_shard`` and ``gather_attention`` rules).

    The universe is chosen once from all cells (:func:`geneattn.universe.gene_universe`:
    scanpy's most variable genes of ``X``, or the most frequent tokens); then, per
    condition, every cell's head-averaged attention is added into gene x gene sums in Rust
    (:func:`geneattn.attention.aggregate_attention`).

    Parameters
    ----------
    adata
        Tokenized cells (:func:`geneattn.pp.tokenize`) with a model
        (:func:`geneattn.tl.model`) unless ``model`` is given; ``X`` the QC'd counts.
    groupby
        ``obs`` column of the conditions (None: the one :func:`geneattn.pp.qc` used).
    groups
        Conditions to sum (None: the case and control :func:`geneattn.pp.qc` kept).
    universe, universe_min_cells, universe_max_genes
        ``"variable"`` or ``"frequent"``, genes present in at least that many cells, at most
        that many genes (config ``attention``).
    gene_names
        Symbol -> Ensembl map (None: the pinned one).
    model
        An attention model or model file instead of the stored one.
    n_threads
        Rayon threads (None: every core); the sums are bit-identical for any value.
    copy
        Return a copy instead of changing ``adata``.

    Returns
    -------
    anndata.AnnData or None
        The copy when ``copy``; otherwise ``uns["attention"]`` holds ``universe`` (a table of
        ``token``, ``gene_id``, ``symbol``: ``universe.tsv``), ``sums`` (per condition, the
        arrays of an attention-sums file) and ``params``.
    """
    from geneattn.attention import aggregate_attention
    from geneattn.cells import condition_labels
    from geneattn.universe import gene_universe, universe_table

    adata = adata.copy() if copy else adata
    column, case, control = conditions(adata, groupby)
    if groups is None:
        groups = [case] if control is None else [case, control]
    cells = get_tokens(adata)
    labels = condition_labels(adata.obs, column)
    chosen_model = get_model(adata, model)
    name_map = defaults.name_map(gene_names)
    tokens, symbols = gene_universe(
        cells,
        name_map=name_map,
        var_names=adata.var_names.astype(str).tolist(),
        method=universe,
        min_cells=universe_min_cells,
        max_genes=universe_max_genes,
        counts=adata.X,
        var_gene_ids=(
            adata.var["gene_ids"].astype(str).tolist() if "gene_ids" in adata.var else None
        ),
    )
    sums = {
        str(group): sums_to_uns(
            aggregate_attention(
                cells_of(cells, labels, str(group), column=column),
                chosen_model,
                tokens,
                n_threads=defaults.threads(n_threads),
                condition=str(group),
                gene_symbols=symbols,
            )
        )
        for group in groups
    }
    record(
        adata,
        "attention",
        {
            "groupby": column,
            "groups": [str(g) for g in groups],
            "universe": universe,
            "universe_min_cells": universe_min_cells,
            "universe_max_genes": universe_max_genes,
        },
        universe=universe_table(tokens, cells.vocabulary[tokens], symbols),
        sums=sums,
    )
    return adata if copy else None


def network(
    adata: ad.AnnData,
    *,
    min_cells: int = 3,
    top_k: int = 10,
    symmetrize: bool = True,
    diffusion: str = "none",
    prior: str = "ppi",
    alpha: float = 0.25,
    t: float = 5.0,
    iterations: int = 6,
    min_confidence: float = 0.0,
    coexpression_neighbors: int = 20,
    coexpression_threshold: float = 0.4,
    ppi: str | Path | pd.DataFrame | None = None,
    copy: bool = False,
) -> ad.AnnData | None:
    """The gene network of each condition (the ``network`` rule,
    :func:`geneattn.network.build_network`).

    Mean attention per gene pair, optionally (``diffusion="ppr"`` or ``"heat"``) GenoHoption
    diffusion over a prior gene graph (:func:`geneattn.diffusion.network_prior`),
    symmetrised, top ``top_k`` edges per gene.

    Parameters
    ----------
    adata
        With attention sums (:func:`attention`); ``X`` the QC'd counts for the co-expression
        prior.
    min_cells, top_k, symmetrize, diffusion, prior, alpha, t, iterations
        As config ``network``.
    min_confidence, coexpression_neighbors, coexpression_threshold
        The PPI confidence cut and the co-expression graph's neighbours and threshold.
    ppi
        PPI edge list (None: the pinned human PPI).
    copy
        Return a copy instead of changing ``adata``.

    Returns
    -------
    anndata.AnnData or None
        The copy when ``copy``; otherwise ``uns["network"]`` holds ``networks`` (per
        condition, the arrays of a network ``.npz``: ``adjacency``, ``mean_attention``, ...)
        and ``params``.
    """
    from geneattn.diffusion import network_prior
    from geneattn.errors import InputError
    from geneattn.network import build_network

    adata = adata.copy() if copy else adata
    stored = require(adata, "attention")
    networks = {}
    for condition, entry in stored["sums"].items():
        data = sums_from_uns(entry)
        prior_graph = None
        params: dict[str, object] = {"input": f"uns['attention']['sums'][{condition!r}]"}
        if diffusion != "none":
            prior_graph, prior_params = network_prior(
                prior,
                gene_ids=data.gene_ids,
                gene_symbols=data.gene_symbols,
                ppi=defaults.ppi(ppi) if prior in ("ppi", "union") else None,
                study=adata if prior in ("coexpression", "union") else None,
                min_confidence=min_confidence,
                coexpression_neighbors=coexpression_neighbors,
                coexpression_threshold=coexpression_threshold,
            )
            params.update(prior_params)
        try:
            built = build_network(
                data,
                min_cells=min_cells,
                top_k=top_k,
                symmetric=symmetrize,
                diffusion=diffusion,
                prior=prior_graph,
                alpha=alpha,
                t=t,
                iterations=iterations,
                params=params,
            )
        except ValueError as err:
            raise InputError(str(err)) from None
        networks[str(condition)] = network_to_uns(built)
    record(
        adata,
        "network",
        {
            "min_cells": min_cells,
            "top_k": top_k,
            "symmetrize": symmetrize,
            "diffusion": diffusion,
            "prior": prior,
            "alpha": alpha,
            "t": t,
            "iterations": iterations,
            "min_confidence": min_confidence,
            "coexpression_neighbors": coexpression_neighbors,
            "coexpression_threshold": coexpression_threshold,
        },
        networks=networks,
    )
    return adata if copy else None

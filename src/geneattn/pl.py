"""The report's figures from an AnnData the API made: ``ga.pl.qc``, ``ga.pl.embedding``,
``ga.pl.modules`` and ``ga.pl.perturbation``.

Each returns a :class:`matplotlib.figure.Figure` drawn by :mod:`geneattn.report.plots`, the
code that draws the HTML report, without pyplot state: show it in a notebook cell, or
``fig.savefig("modules.png")``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np

from geneattn.errors import InputError
from geneattn.store import conditions, require

if TYPE_CHECKING:
    import anndata as ad
    from matplotlib.figure import Figure

__all__ = ["embedding", "modules", "perturbation", "qc"]


def qc(adata: ad.AnnData) -> Figure:
    """Per-condition violins of the per-cell QC metrics before the cell filters, with the
    thresholds (:func:`geneattn.pp.qc`)."""
    from geneattn.report.html import QC_PANELS
    from geneattn.report.plots import qc_violins_figure

    summary = json.loads(str(require(adata, "qc")["summary"]))
    thresholds = {
        step["filter"]: step["threshold"]
        for step in [*summary["cell_filters"], *summary["gene_filters"]]
    }
    panels = []
    for metric, title, name in QC_PANELS:
        value = thresholds.get(name)
        panels.append((metric, title, float(value) if isinstance(value, int | float) else None))
    cells = adata.uns["qc_cells"] if "qc_cells" in adata.uns else adata.obs
    keep = [str(k) for k in summary["keep"]]
    return qc_violins_figure(cells, str(summary["condition_column"]), keep, panels)


def embedding(
    adata: ad.AnnData,
    *,
    groupby: str | None = None,
    n_neighbors: int = 15,
    method: str = "umap",
    seed: int = 0,
) -> Figure:
    """A seeded UMAP of the cell embeddings (:func:`geneattn.tl.embed`) coloured by
    condition, as in the report (:func:`geneattn.report.html.umap_coordinates`)."""
    from geneattn.embeddings import EMBEDDING_KEY
    from geneattn.report.html import umap_coordinates
    from geneattn.report.plots import embedding_scatter_figure

    if EMBEDDING_KEY not in adata.obsm:
        raise InputError(f"adata.obsm has no {EMBEDDING_KEY!r}: run geneattn.tl.embed first")
    column, case, control = conditions(adata, groupby)
    x = np.asarray(adata.obsm[EMBEDDING_KEY], dtype=np.float64)
    coords = umap_coordinates(x, n_neighbors=n_neighbors, seed=seed, method=method)
    labels = adata.obs[column].astype(str).to_numpy()
    shown = [case] if control is None else [case, control]
    return embedding_scatter_figure(
        coords, labels, shown, title=f"UMAP of {x.shape[0]} cell embeddings (X_geneattn)"
    )


def modules(adata: ad.AnnData, *, hubs_per_module: int = 25, n_labels: int = 5) -> Figure:
    """The module network (:func:`geneattn.tl.modules`): the ``hubs_per_module`` strongest
    hubs of each module and the network edges among them, one panel per module, the top
    ``n_labels`` hubs of each module labelled; genes without an edge among them are left
    out, as in the report."""
    from geneattn.report.plots import module_network_figure

    stored = require(adata, "modules")
    table = stored["table"]
    drawn = table[
        (table["module"] > 0) & (table["hub_rank"] >= 1) & (table["hub_rank"] <= hubs_per_module)
    ].sort_values(["module", "hub_rank"], kind="stable")
    gene_ids = np.asarray(stored["gene_ids"]).astype(str)
    upper = _upper_edges(stored["weights"])
    chosen = set(drawn["gene_id"].astype(str))
    edges = [
        (gene_ids[a], gene_ids[b])
        for a, b in upper
        if gene_ids[a] in chosen and gene_ids[b] in chosen
    ]
    linked = {g for edge in edges for g in edge}
    drawn = drawn[drawn["gene_id"].astype(str).isin(linked)]
    if drawn.empty:
        raise InputError("no module gene has an edge to another drawn gene: nothing to draw")
    return module_network_figure(drawn, edges, n_labels=n_labels)


def perturbation(adata: ad.AnnData, *, fdr: float = 0.05, n_labels: int = 12) -> Figure:
    """The perturbation volcano (:func:`geneattn.tl.perturb`): mean goal shift against
    -log10 FDR, significant genes by mode."""
    from geneattn.report.plots import volcano_figure

    return volcano_figure(require(adata, "perturbation")["table"], fdr=fdr, n_labels=n_labels)


def _upper_edges(weights) -> list[tuple[int, int]]:
    """Each undirected edge once, as (row, column) with row < column, in row-major order."""
    import scipy.sparse as sp

    coo = sp.triu(sp.csr_matrix(weights), k=1, format="coo")
    order = np.lexsort((coo.col, coo.row))
    return list(zip(coo.row[order].tolist(), coo.col[order].tolist(), strict=True))

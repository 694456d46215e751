"""Plain baselines measured in the same run as the attention model: is attention worth it?

Every claim the workflow makes about its attention modules and cell embeddings is put beside
what a plain method gives on the same cells and genes:

* :func:`coexpression_modules`: WGCNA-like co-expression modules of the gene universe:
  Pearson correlation of the log-normalised counts, a graph (each gene's ``top_k``
  strongest positive correlations, or WGCNA's soft-threshold adjacency ``max(r, 0)^beta``,
  optionally turned into its topological overlap), then Leiden with the resolution,
  objective and minimum size of the attention modules. Genes of communities below the
  minimum size get module 0, as WGCNA's grey module (``min_kme`` also greys genes weakly
  correlated with their module's eigengene, WGCNA's ``minKMEtoStay``).
* :func:`pca_embedding`: the top principal components of the log-normalised counts, as
  many as the model's embedding width; :func:`random_embedding` is the floor.
* :func:`label_transfer` : k-nearest-neighbour label transfer of cell labels, out of fold
  (stratified folds), scored by balanced accuracy, for any embedding.

Known-program recovery of any module assignment is
:func:`geneattn.evaluation.program_pair_sharing`.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from geneattn.errors import InputError

__all__ = [
    "GRAPHS",
    "TRANSFER_CELLS",
    "blocked_correlation",
    "coexpression_graph",
    "coexpression_graph_from_correlation",
    "coexpression_modules",
    "compare_programs",
    "embedding_comparison",
    "evaluate_against_baselines",
    "label_transfer",
    "pca_embedding",
    "random_embedding",
    "topological_overlap",
    "universe_columns",
]

#: Co-expression graphs of :func:`coexpression_graph`.
GRAPHS = ("knn", "soft")

#: Most cells of the label-transfer comparison (a seeded subsample above it).
TRANSFER_CELLS = 20_000


def topological_overlap(adjacency: np.ndarray) -> np.ndarray:
    """WGCNA's topological overlap of a weighted adjacency (dense, values in [0, 1]).

    ``TOM[i, j] = (sum_u a_iu a_uj + a_ij) / (min(k_i, k_j) + 1 - a_ij)`` with
    ``k_i = sum_u a_iu``, the diagonal of ``a`` taken as 0; ``TOM[i, i] = 1``.

    Parameters
    ----------
    adjacency
        G x G symmetric, entries in [0, 1].

    Returns
    -------
    numpy.ndarray
        G x G float64, symmetric.
    """
    a = np.array(adjacency, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"the adjacency must be square, got shape {a.shape}")
    if a.size and (a.min() < 0 or a.max() > 1 or not np.allclose(a, a.T)):
        raise ValueError("the adjacency must be symmetric with entries in [0, 1]")
    np.fill_diagonal(a, 0.0)
    k = a.sum(axis=1)
    shared = a @ a
    tom = (shared + a) / (np.minimum.outer(k, k) + 1.0 - a)
    np.fill_diagonal(tom, 1.0)
    return tom


def coexpression_graph(
    expression: np.ndarray | sparse.spmatrix,
    *,
    graph: str = "knn",
    top_k: int | None = 10,
    beta: float = 6.0,
    tom: bool = False,
) -> sparse.csr_matrix:
    """Undirected co-expression graph of the genes (columns) of ``expression``.

    Parameters
    ----------
    expression
        Cells x G log-normalised expression (:func:`geneattn.diffusion.log_normalise`).
    graph
        ``"knn"``: weights are the positive correlations; ``"soft"``: WGCNA's signed-hybrid
        soft threshold ``max(r, 0) ** beta``.
    top_k
        Keep the edges among the ``top_k`` strongest of either endpoint
        (:func:`geneattn.network.top_k_edges`, as the attention networks are sparsified);
        None keeps every positive weight (dense; slow for Leiden on thousands of genes).
    beta
        Soft-threshold power (``graph="soft"``).
    tom
        Replace the weights by their topological overlap (:func:`topological_overlap`)
        before sparsifying.

    Returns
    -------
    scipy.sparse.csr_matrix
        G x G symmetric non-negative weights, no diagonal.
    """
    from geneattn.diffusion import pearson_correlation

    return coexpression_graph_from_correlation(
        pearson_correlation(expression), graph=graph, top_k=top_k, beta=beta, tom=tom
    )


def coexpression_graph_from_correlation(
    corr: np.ndarray,
    *,
    graph: str = "knn",
    top_k: int | None = 10,
    beta: float = 6.0,
    tom: bool = False,
) -> sparse.csr_matrix:
    """:func:`coexpression_graph` from the genes' correlation matrix (G x G)."""
    from geneattn.network import top_k_edges

    if graph not in GRAPHS:
        raise ValueError(f"unknown co-expression graph {graph!r} (expected one of {GRAPHS})")
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta}")
    weights = np.clip((corr + corr.T) * 0.5, 0.0, 1.0)
    if graph == "soft":
        weights = weights**beta
    np.fill_diagonal(weights, 0.0)
    if tom:
        weights = topological_overlap(weights)
        weights = (weights + weights.T) * 0.5
        np.fill_diagonal(weights, 0.0)
    if top_k is None:
        out = sparse.csr_matrix(weights)
        out.eliminate_zeros()
        out.sort_indices()
        return out
    return top_k_edges(weights, top_k, directed=False)


def coexpression_modules(
    expression: np.ndarray | sparse.spmatrix,
    *,
    graph: str = "knn",
    top_k: int | None = 10,
    beta: float = 6.0,
    tom: bool = False,
    resolution: float = 1.0,
    objective: str = "rb_configuration",
    seed: int = 0,
    min_size: int = 5,
    min_kme: float | None = None,
) -> np.ndarray:
    """WGCNA-like co-expression modules: Leiden communities of :func:`coexpression_graph`.

    Parameters
    ----------
    expression
        Cells x G log-normalised expression over the gene universe.
    graph, top_k, beta, tom
        The graph (see :func:`coexpression_graph`).
    resolution, objective, seed, min_size
        Leiden, as for the attention modules (:func:`geneattn.modules.leiden_modules`);
        genes of communities smaller than ``min_size`` get module 0 (WGCNA's grey).
    min_kme
        Genes whose correlation with their module's eigengene is below this are unassigned
        too (WGCNA's ``minKMEtoStay`` is 0.3;
        :func:`geneattn.module_analysis.grey_weak_members`). None (the default) keeps every
        gene Leiden placed, as the attention modules do: single-cell correlations are low,
        and on the demo 0.3 greys 40% of the universe, known programs included.

    Returns
    -------
    numpy.ndarray
        int64 module of each gene (1 = largest, 0 = unassigned).
    """
    from geneattn.modules import leiden_modules

    weights = coexpression_graph(expression, graph=graph, top_k=top_k, beta=beta, tom=tom)
    modules = leiden_modules(
        weights, resolution=resolution, objective=objective, seed=seed, min_size=min_size
    )
    if min_kme is None:
        return modules
    from geneattn.module_analysis import grey_weak_members

    return grey_weak_members(expression, modules, min_kme=min_kme, min_size=min_size)


def _universe_blocks(counts, columns: np.ndarray, n_counts, chunk_cells: int):
    """Blocks of log-normalised expression over the universe columns (-1: a gene the counts
    lack, all zeros), ``chunk_cells`` rows of ``counts`` at a time, as CSR."""
    from geneattn.io.chunks import chunk_bounds

    for start, stop in chunk_bounds(counts.n_obs, chunk_cells):
        totals = None if n_counts is None else n_counts[start:stop]
        yield _universe_expression(counts.X[start:stop], columns, totals)


def _universe_expression(x, columns: np.ndarray, totals) -> sparse.csr_matrix:
    """Rows of raw counts -> log-normalised CSR over the universe columns (zeros at -1)."""
    from geneattn.diffusion import log_normalise

    full = log_normalise(x, n_counts=totals)
    out = sparse.csr_matrix(full[:, np.maximum(columns, 0)])
    if (columns < 0).any():
        out = sparse.csr_matrix(out @ sparse.diags((columns >= 0).astype(np.float64)))
        out.eliminate_zeros()
    return out


def blocked_correlation(blocks) -> np.ndarray:
    """Gene x gene Pearson correlation over blocks of cells (rows), in G x G memory.

    One block gives exactly :func:`geneattn.diffusion.pearson_correlation`; more add up
    their column sums and cross-products ``X_b^T X_b`` first (equal within round-off).
    """
    from geneattn.diffusion import correlation_from_moments, pearson_correlation

    blocks = iter(blocks)
    first = next(blocks, None)
    if first is None:
        raise ValueError("the co-expression baseline needs at least 2 cells")
    block = next(blocks, None)
    if block is None:
        return pearson_correlation(first)
    total, second, n_cells = _moments(first)
    while block is not None:
        t, c, n = _moments(block)
        total += t
        second += c
        n_cells += n
        block = next(blocks, None)
    return correlation_from_moments(total / n_cells, second / n_cells, n_cells)


def _moments(block: sparse.csr_matrix) -> tuple[np.ndarray, np.ndarray, int]:
    x = sparse.csr_matrix(block, dtype=np.float64)
    return np.asarray(x.sum(axis=0)).ravel(), np.asarray((x.T @ x).todense()), x.shape[0]


def _rows_of(counts, rows: np.ndarray, columns: np.ndarray, n_counts, chunk_cells: int):
    """Dense log-normalised universe expression of ``rows`` of ``counts`` (in that order),
    read a block at a time."""
    from geneattn.io.chunks import chunk_bounds

    out = np.zeros((len(rows), len(columns)))
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    for start, stop in chunk_bounds(counts.n_obs, chunk_cells):
        lo, hi = np.searchsorted(sorted_rows, [start, stop])
        if lo == hi:
            continue
        totals = None if n_counts is None else n_counts[start:stop]
        block = _universe_expression(counts.X[start:stop], columns, totals)
        out[order[lo:hi]] = block[sorted_rows[lo:hi] - start].toarray()
    return out


def pca_embedding(
    expression: np.ndarray | sparse.spmatrix, *, n_components: int, seed: int = 0
) -> np.ndarray:
    """Cell scores on the top principal components of log-normalised expression.

    Parameters
    ----------
    expression
        Cells x genes log-normalised expression (zero-centred here, not scaled).
    n_components
        Width of the embedding (the model's ``d_model``).
    seed
        Seed of the ARPACK start vector.

    Returns
    -------
    numpy.ndarray
        ``(n_cells, n_components)`` float64; each component's sign is fixed so that its
        largest absolute gene loading is positive.
    """
    x = sparse.csr_matrix(expression, dtype=np.float64)
    max_comps = min(x.shape) - 1
    if n_components < 1 or n_components > max_comps:
        raise InputError(
            f"n_components={n_components} must lie in 1..{max_comps} for"
            f" {x.shape[0]} cells x {x.shape[1]} genes"
        )
    import anndata as ad
    import scanpy as sc

    adata = ad.AnnData(x)
    sc.pp.pca(adata, n_comps=n_components, zero_center=True, svd_solver="arpack", random_state=seed)
    scores = np.asarray(adata.obsm["X_pca"], dtype=np.float64)
    loadings = np.asarray(adata.varm["PCs"], dtype=np.float64)
    sign = np.sign(loadings[np.abs(loadings).argmax(axis=0), np.arange(n_components)])
    return scores * np.where(sign == 0, 1.0, sign)


def random_embedding(n_cells: int, n_components: int, *, seed: int = 0) -> np.ndarray:
    """Standard normal vectors, one per cell: the floor of :func:`label_transfer`."""
    return np.random.default_rng(seed).standard_normal((n_cells, n_components))


def label_transfer(
    embedding: np.ndarray,
    labels: np.ndarray,
    *,
    k: int = 10,
    n_folds: int = 5,
    seed: int = 0,
) -> dict:
    """k-nearest-neighbour label transfer, out of fold, scored by balanced accuracy.

    Cells are split into ``n_folds`` stratified folds (shuffled with ``seed``); each fold's
    labels are predicted by a majority vote of its ``k`` nearest cells (Euclidean) among the
    other folds. The balanced accuracy (mean per-label recall) is taken over all out-of-fold
    predictions. Labels held by fewer than ``n_folds`` cells cannot be stratified and are
    left out (counted in ``labels_dropped``); so are missing labels.

    Parameters
    ----------
    embedding
        ``(n_cells, d)`` cell embeddings.
    labels
        Label of each cell (strings or numbers; NaN / None / ``""`` = missing).
    k
        Neighbours voting.
    n_folds
        Folds.
    seed
        Seed of the fold assignment.

    Returns
    -------
    dict
        ``balanced_accuracy``, ``accuracy``, ``n_cells`` (scored), ``n_labels``,
        ``labels_dropped``, ``k``, ``n_folds``.
    """
    import pandas as pd
    from sklearn.metrics import accuracy_score, balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier

    x = np.asarray(embedding, dtype=np.float64)
    y = pd.Series(np.asarray(labels, dtype=object))
    if x.ndim != 2 or x.shape[0] != len(y):
        raise InputError(f"{x.shape} embedding for {len(y)} labels")
    if not np.all(np.isfinite(x)):
        raise InputError("the embedding holds NaN or infinite values")
    missing = y.isna() | (y.astype(str) == "")
    counts = y[~missing].astype(str).value_counts()
    keep_labels = set(counts[counts >= n_folds].index)
    keep = (~missing) & y.astype(str).isin(keep_labels)
    x, yk = x[keep.to_numpy()], y[keep].astype(str).to_numpy()
    result = {
        "n_cells": len(yk),
        "n_labels": len(keep_labels),
        "labels_dropped": int(len(counts) - len(keep_labels)),
        "k": int(k),
        "n_folds": int(n_folds),
    }
    if len(keep_labels) < 2:
        return result | {"balanced_accuracy": float("nan"), "accuracy": float("nan")}
    predicted = np.empty(len(yk), dtype=object)
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for train, test in folds.split(x, yk):
        knn = KNeighborsClassifier(n_neighbors=min(k, len(train)), algorithm="brute")
        knn.fit(x[train], yk[train])
        predicted[test] = knn.predict(x[test])
    predicted = predicted.astype(str)
    return result | {
        "balanced_accuracy": float(balanced_accuracy_score(yk, predicted)),
        "accuracy": float(accuracy_score(yk, predicted)),
    }


def universe_columns(var_ids: np.ndarray, var_names: np.ndarray, gene_ids, symbols) -> np.ndarray:
    """Column of each universe gene in a counts matrix (-1 when absent).

    Genes are found by Ensembl ID among ``var_ids`` (or the var names), then by symbol among
    the var names, as :func:`geneattn.diffusion.coexpression_prior_from_h5ad` finds them.
    """
    var_ids = [str(v) for v in var_ids]
    var_names = [str(v) for v in var_names]
    by_id = {g: j for j, g in reversed(list(enumerate(var_ids)))}
    by_name = {g: j for j, g in reversed(list(enumerate(var_names)))}
    out = []
    for gid, sym in zip(gene_ids, symbols, strict=True):
        j = by_id.get(str(gid), by_name.get(str(gid)))
        if j is None and sym:
            j = by_name.get(str(sym))
        out.append(-1 if j is None else j)
    return np.asarray(out, dtype=np.int64)


def compare_programs(
    attention: np.ndarray,
    coexpression: np.ndarray,
    symbols: np.ndarray,
    programs: dict[str, list[str]],
    *,
    n_permutations: int = 10_000,
    seed: int = 0,
):
    """Known-program recovery of attention and co-expression modules side by side.

    Parameters
    ----------
    attention, coexpression
        Module of each universe gene (0 = unassigned) by each method.
    symbols
        Symbol of each universe gene.
    programs
        ``{name: [symbols]}``.
    n_permutations, seed
        As :func:`geneattn.evaluation.program_pair_sharing` (the same seed for both
        methods, so they face the same random gene sets).

    Returns
    -------
    pandas.DataFrame
        ``program``, ``genes``, ``in_universe``, ``pairs``, ``expected_fraction``, then for
        ``attention`` and ``coexpression``: ``*_fraction``, ``*_p_value``, ``*_module``,
        ``*_members``; programs with fewer than 2 genes in the universe are left out.
    """
    import pandas as pd

    from geneattn.evaluation import program_pair_sharing

    symbols = np.asarray(symbols).astype(str)
    parts = {}
    for name, labels in (("attention", attention), ("coexpression", coexpression)):
        table = pd.DataFrame({"gene": symbols, "module": np.asarray(labels, dtype=np.int64)})
        parts[name] = program_pair_sharing(
            table, programs, n_permutations=n_permutations, seed=seed
        )
    first = parts["attention"]
    out = first[["program", "genes", "in_universe", "pairs", "expected_fraction"]].copy()
    for name, table in parts.items():
        for column in ("fraction", "p_value", "module", "members"):
            out[f"{name}_{column}"] = table[column].to_numpy()
    return out[out["in_universe"] >= 2].reset_index(drop=True)


def embedding_comparison(
    embedding: np.ndarray,
    expression: np.ndarray | sparse.spmatrix,
    labels: np.ndarray,
    *,
    k: int = 10,
    n_folds: int = 5,
    seed: int = 0,
):
    """Label transfer of the model's embeddings, PCA of the same width, and random vectors.

    Parameters
    ----------
    embedding
        ``(n_cells, d)`` model embeddings.
    expression
        Cells x genes log-normalised expression of the same cells (the gene universe).
    labels
        Label of each cell.
    k, n_folds, seed
        As :func:`label_transfer`; PCA and the random vectors use ``seed`` too.

    Returns
    -------
    pandas.DataFrame
        One row per embedding (``geneattn``, ``pca``, ``random``): ``embedding``, ``width``
        and the fields of :func:`label_transfer`.
    """
    import pandas as pd

    embedding = np.asarray(embedding, dtype=np.float64)
    n, d = embedding.shape
    rows = []
    for name, emb in (
        ("geneattn", embedding),
        (
            "pca",
            pca_embedding(expression, n_components=min(d, min(expression.shape) - 1), seed=seed),
        ),
        ("random", random_embedding(n, d, seed=seed)),
    ):
        res = label_transfer(emb, labels, k=k, n_folds=n_folds, seed=seed)
        rows.append({"embedding": name, "width": emb.shape[1]} | res)
    return pd.DataFrame(rows)


def evaluate_against_baselines(
    modules,
    counts,
    programs: dict[str, list[str]],
    *,
    fdr: float,
    n_enriched: int,
    n_modules: int,
    fraction: float,
    markers: str | None = None,
    embedding: np.ndarray | None = None,
    cell_names=None,
    label_column: str | None = None,
    top_k: int = 10,
    resolution: float = 1.0,
    objective: str = "rb_configuration",
    min_size: int = 5,
    n_permutations: int = 10_000,
    seed: int = 0,
    chunk_cells: int = 10_000,
    transfer_cells: int = TRANSFER_CELLS,
    source: str | None = None,
) -> dict:
    """The ``evaluate`` stage with its baselines: attention modules vs co-expression modules
    on the same genes and known programs, and (with labels) the embeddings vs PCA.

    Memory is set by ``chunk_cells`` and the universe, not by the cells: the co-expression
    correlation adds up per-gene sums and the gene x gene cross-products of blocks of
    ``chunk_cells`` cells (one block: exactly :func:`geneattn.diffusion.pearson_correlation`),
    and label transfer, with the PCA it is compared with, runs on a seeded subsample of at
    most ``transfer_cells`` embedded cells (all of them below that).

    Parameters
    ----------
    modules
        The module table (``gene``, ``gene_id``, ``module``).
    counts
        AnnData of the QC'd raw counts, in memory or opened backed (``backed="r"``: its
        rows are read a block at a time); ``obs["n_counts"]`` when present normalises.
    programs
        ``{name: [symbols]}`` known programs; ``markers`` (the pinned
        ``human_immune_cell_markers.json``) adds its cell-type programs.
    fdr, n_enriched, n_modules, fraction
        The enrichment summary (:func:`geneattn.evaluation.enriched_fraction`), for the
        table's head.
    embedding, cell_names, label_column
        The model's cell embeddings, the names of their cells (rows of ``counts`` by name)
        and the ``counts.obs`` column of labels: label transfer vs PCA and random vectors.
    top_k, resolution, objective, min_size, n_permutations, seed
        The co-expression graph's edges per gene, and Leiden and permutations as the
        attention modules.
    chunk_cells
        Cells per block of ``counts``.
    transfer_cells
        Most cells of the label-transfer comparison (a seeded subsample above it).
    source
        Name of the counts file, for errors.

    Returns
    -------
    dict
        ``head`` (the ``#`` comment lines of ``evaluation.tsv``), ``table``
        (:func:`compare_programs`), ``coexpression`` (the co-expression module table:
        ``gene``, ``gene_id``, ``module``) and ``transfer`` (:func:`embedding_comparison`,
        or None).
    """
    import logging

    import pandas as pd

    from geneattn.evaluation import immune_marker_programs
    from geneattn.modules import leiden_modules

    if "gene_id" not in modules.columns:
        raise InputError("the module table has no column gene_id (needed with counts)")
    var_names = counts.var_names.astype(str).to_numpy()
    var_ids = var_names
    if "gene_ids" in counts.var:
        var_ids = counts.var["gene_ids"].astype(str).to_numpy()
    columns = universe_columns(var_ids, var_names, modules["gene_id"], modules["gene"])
    if not (columns >= 0).any():
        raise InputError("none of the module genes is in the counts", source)
    if (columns < 0).any():
        logging.getLogger(__name__).warning(
            "%d module genes not in the counts: no co-expression", (columns < 0).sum()
        )
    if chunk_cells < 1:
        raise InputError(f"chunk_cells must be >= 1, got {chunk_cells}")
    n_counts = None
    if "n_counts" in counts.obs:
        n_counts = counts.obs["n_counts"].to_numpy(dtype=np.float64)
    # The co-expression modules of a gene set do not depend on the order the module table
    # lists its genes in (Leiden's result depends on the node order): genes by Ensembl ID.
    order = np.argsort(modules["gene_id"].astype(str).to_numpy(), kind="stable")
    blocks = _universe_blocks(counts, columns[order], n_counts, chunk_cells)
    coexpr = np.empty(len(order), dtype=np.int64)
    coexpr[order] = leiden_modules(
        coexpression_graph_from_correlation(blocked_correlation(blocks), top_k=top_k),
        resolution=resolution,
        objective=objective,
        seed=seed,
        min_size=min_size,
    )
    if markers:
        programs = dict(programs) | immune_marker_programs(markers)
    table = compare_programs(
        modules["module"].to_numpy(dtype=np.int64),
        coexpr,
        modules["gene"].astype(str).to_numpy(),
        programs,
        n_permutations=n_permutations,
        seed=seed,
    )
    ties = int((table["attention_fraction"] >= table["coexpression_fraction"] - 1e-12).sum())
    head = (
        f"# modules: {n_modules}\n# enriched at FDR < {fdr:g}: {n_enriched} ({fraction:.3f})\n"
        f"# co-expression modules (correlation kNN, top {top_k}, Leiden as the modules):"
        f" {len(set(coexpr.tolist()) - {0})}\n"
        f"# programs with >= 2 genes in the universe: {len(table)}; attention modules keep at"
        f" least as large a fraction of their pairs together in {ties}\n"
    )
    transfer = None
    if label_column:
        if embedding is None or cell_names is None:
            raise InputError("label transfer needs the embeddings and their cell names")
        if label_column not in counts.obs:
            raise InputError(f"no obs column {label_column!r}", source)
        index = pd.Index(counts.obs_names.astype(str)).get_indexer(pd.Index(cell_names).astype(str))
        if (index < 0).any():
            raise InputError("embedded cells missing from the counts", source)
        embedding = np.asarray(embedding)
        picked = np.arange(len(index))
        if len(index) > transfer_cells:
            rng = np.random.default_rng(seed)
            picked = np.sort(rng.choice(len(index), size=transfer_cells, replace=False))
        rows = index[picked]
        labels = counts.obs[label_column].astype(object).to_numpy()[rows]
        expression = _rows_of(counts, rows, columns, n_counts, chunk_cells)
        transfer = embedding_comparison(embedding[picked], expression, labels, seed=seed)
        sample = (
            ""
            if len(picked) == len(index)
            else f" on a random {len(picked):,} of the {len(index):,} embedded cells (seed {seed})"
        )
        head += (
            f"# label transfer of {label_column!r} (kNN k=10, 5-fold stratified, balanced"
            f" accuracy, {int(transfer['n_labels'].iloc[0])} labels{sample}):"
            + ",".join(f" {r.embedding} {r.balanced_accuracy:.3f}" for r in transfer.itertuples())
            + "\n"
        )
    coexpression = pd.DataFrame(
        {"gene": modules["gene"], "gene_id": modules["gene_id"], "module": coexpr}
    )
    return {"head": head, "table": table, "coexpression": coexpression, "transfer": transfer}

"""GenoHoption graph diffusion of an attention matrix over a prior gene graph.

GenoHoption (seed 001, equations 5 to 11) widens attention to multi-hop neighbours of a gene
graph with a diffusion matrix ``sum_k theta_k A^k``, computed by power iteration:

* personalised PageRank (GenoHoption-p, eq. 6 and 8): ``V_0 = V``,
  ``V_k = (1 - alpha) A V_{k-1} + alpha V``, so that after ``K`` steps
  ``V_K = ((1 - alpha)^K A^K + sum_{k<K} alpha (1 - alpha)^k A^k) V`` (eq. 9);
* heat kernel (GenoHoption-h, eq. 7 and 10): ``sum_{k=0..K} e^{-t} t^k / k! A^k V`` (eq. 11).

Here ``V`` is the gene x gene mean-attention matrix (rows: query genes) and ``A`` the
row-normalised adjacency of the prior graph over the same genes, with a self-loop on every gene
(as GenoHoption's graphs, built with ``dgl.add_self_loop``; it also keeps the attention of genes
the prior does not know). Row ``i`` of ``A V`` mixes the attention rows of ``i``'s prior
neighbours. Defaults follow GenoHoption's ``gn_attn.py`` and its Table IV: ``alpha = 0.25``,
``t = 5``, ``K = 6``.

Prior graphs (all binary and undirected, G x G in the order of the attention universe):
:func:`ppi_prior` from the fetched PPI edge list, :func:`coexpression_prior` from the study's
counts (seed 001, section III-C: each gene linked to its top ``H`` genes by Pearson correlation
above a threshold; ``H = 20``, threshold 0.4 as in GenoHoption's Table IV), and
:func:`union_prior` of both.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from scipy import sparse

if TYPE_CHECKING:
    import pandas as pd
    from anndata import AnnData

__all__ = [
    "coexpression_prior",
    "coexpression_prior_from_anndata",
    "coexpression_prior_from_h5ad",
    "diffuse",
    "diffusion_operator",
    "heat_diffusion",
    "log_normalise",
    "network_prior",
    "pearson_correlation",
    "ppi_prior",
    "ppr_diffusion",
    "union_prior",
]

log = logging.getLogger(__name__)

Matrix = np.ndarray | sparse.spmatrix


def diffusion_operator(prior: Matrix) -> sparse.csr_matrix:
    """Row-normalised prior adjacency with a self-loop on every gene.

    Parameters
    ----------
    prior
        G x G non-negative prior graph (weights are kept; a binary graph gives a uniform
        average over a gene and its neighbours).

    Returns
    -------
    scipy.sparse.csr_matrix
        ``D^{-1} (P + I)`` with ``P`` the prior without its diagonal and ``D`` the row sums
        of ``P + I``: every row sums to 1.
    """
    p = sparse.csr_matrix(prior, dtype=np.float64)
    n = p.shape[0]
    if p.shape != (n, n):
        raise ValueError(f"the prior must be square, got shape {p.shape}")
    if np.any(p.data < 0) or not np.all(np.isfinite(p.data)):
        raise ValueError("prior weights must be finite and non-negative")
    p = p - sparse.diags(p.diagonal()) + sparse.identity(n, format="csr")
    p = sparse.csr_matrix(p)
    p.eliminate_zeros()
    row_sums = np.asarray(p.sum(axis=1)).ravel()
    a = sparse.diags(1.0 / row_sums) @ p
    a = sparse.csr_matrix(a)
    a.sort_indices()
    return a


def ppr_diffusion(
    values: Matrix, operator: sparse.spmatrix, *, alpha: float = 0.25, iterations: int = 6
) -> Matrix:
    """Personalised-PageRank diffusion (GenoHoption-p): ``K`` steps of eq. 8.

    Parameters
    ----------
    values
        ``V``, G x G (or G x d) dense or sparse.
    operator
        ``A`` from :func:`diffusion_operator`.
    alpha
        Teleport probability, in (0, 1].
    iterations
        ``K``, the number of steps (0 returns ``V``).

    Returns
    -------
    numpy.ndarray or scipy.sparse.csr_matrix
        ``V_K`` (dense if ``values`` is dense).
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must lie in (0, 1], got {alpha}")
    if iterations < 0:
        raise ValueError(f"iterations must be non-negative, got {iterations}")
    _check_shapes(values, operator)
    current = values
    for _ in range(iterations):
        current = (1.0 - alpha) * (operator @ current) + alpha * values
    return _same_kind(current, values)


def heat_diffusion(
    values: Matrix, operator: sparse.spmatrix, *, t: float = 5.0, iterations: int = 6
) -> Matrix:
    """Heat-kernel diffusion (GenoHoption-h): the series of eq. 11 truncated after ``K`` hops.

    Computes ``sum_{k=0..K} theta_k A^k V`` with ``theta_k = e^{-t} t^k / k!`` by the recursion
    of eq. 10 (``V_k = t A V_{k-1} / k``), then divides by ``sum_{k=0..K} theta_k``. The full
    series' coefficients sum to 1; the truncated ones sum to less (0.76 for ``t = 5``,
    ``K = 6``), so without the renormalisation the diffused weights would shrink by a factor
    that depends on ``t`` and ``K``. With the renormalisation a row-stochastic ``V`` stays
    row-stochastic (the ``e^{-t}`` factor cancels out).

    Parameters
    ----------
    values
        ``V``, G x G (or G x d) dense or sparse.
    operator
        ``A`` from :func:`diffusion_operator`.
    t
        Diffusion time, positive.
    iterations
        ``K``, the highest power of ``A`` (0 returns ``V``).

    Returns
    -------
    numpy.ndarray or scipy.sparse.csr_matrix
        The renormalised truncated series (dense if ``values`` is dense).
    """
    if not t > 0:
        raise ValueError(f"t must be positive, got {t}")
    if iterations < 0:
        raise ValueError(f"iterations must be non-negative, got {iterations}")
    _check_shapes(values, operator)
    term = values
    total = values
    coefficient_sum = 1.0  # sum of t^k / k!; e^{-t} cancels in the renormalisation
    for k in range(1, iterations + 1):
        term = (t / k) * (operator @ term)
        total = total + term
        coefficient_sum += t**k / math.factorial(k)
    return _same_kind(total * (1.0 / coefficient_sum), values)


def diffuse(
    values: Matrix,
    prior: Matrix,
    *,
    method: str,
    alpha: float = 0.25,
    t: float = 5.0,
    iterations: int = 6,
) -> Matrix:
    """Diffuse ``values`` over ``prior`` with ``method`` ``"ppr"`` or ``"heat"``.

    ``prior`` is turned into the operator of :func:`diffusion_operator` first.
    """
    operator = diffusion_operator(prior)
    if method == "ppr":
        return ppr_diffusion(values, operator, alpha=alpha, iterations=iterations)
    if method == "heat":
        return heat_diffusion(values, operator, t=t, iterations=iterations)
    raise ValueError(f"unknown diffusion method {method!r} (expected 'ppr' or 'heat')")


def ppi_prior(
    edges: pd.DataFrame, gene_symbols: Sequence[str], *, min_confidence: float = 0.0
) -> sparse.csr_matrix:
    """Binary undirected prior graph over the universe from a PPI edge list.

    Parameters
    ----------
    edges
        Columns ``gene_a``, ``gene_b`` (symbols) and ``confidence``, e.g. from
        :func:`geneattn.resources.load_ppi`. Duplicated pairs and either direction count once.
    gene_symbols
        Symbols of the universe, in order; ``""`` (unknown) never matches. A symbol listed for
        several genes links all of them.
    min_confidence
        Edges with a lower confidence are left out.

    Returns
    -------
    scipy.sparse.csr_matrix
        G x G, 1.0 where the PPI links two universe genes, symmetric, no diagonal.
    """
    symbols = np.asarray(gene_symbols, dtype=str)
    n = len(symbols)
    index: dict[str, list[int]] = {}
    for i, s in enumerate(symbols.tolist()):
        if s:
            index.setdefault(s, []).append(i)
    kept = edges[edges["confidence"].to_numpy(dtype=np.float64) >= min_confidence]
    rows: list[int] = []
    cols: list[int] = []
    for a, b in zip(kept["gene_a"].tolist(), kept["gene_b"].tolist(), strict=True):
        ia, ib = index.get(a), index.get(b)
        if ia is None or ib is None:
            continue
        for i in ia:
            for j in ib:
                rows.append(i)
                cols.append(j)
    return _binary_undirected(np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64), n)


def log_normalise(counts: Matrix, *, n_counts: np.ndarray | None = None) -> sparse.csr_matrix:
    """``log1p(counts / n_counts * 1e4)`` per cell (scanpy's ``normalize_total`` + ``log1p``).

    Parameters
    ----------
    counts
        Cells x genes raw counts.
    n_counts
        Total counts per cell (defaults to the row sums); cells with 0 stay 0.
    """
    x = sparse.csr_matrix(counts, dtype=np.float64, copy=True)
    totals = np.asarray(x.sum(axis=1)).ravel() if n_counts is None else np.asarray(n_counts)
    scale = np.zeros(x.shape[0])
    np.divide(1e4, totals, out=scale, where=totals > 0)
    x = sparse.csr_matrix(sparse.diags(scale) @ x)
    x.data = np.log1p(x.data)
    return x


def coexpression_prior(
    expression: Matrix, *, n_neighbors: int = 20, threshold: float = 0.4
) -> sparse.csr_matrix:
    """Binary undirected co-expression graph (GenoHoption's Seq2Graph, seed 001 III-C).

    Each gene is linked to the (at most) ``n_neighbors`` genes of highest Pearson correlation
    with it across cells, among those correlated above ``threshold``; the graph is then made
    undirected (an edge if either gene picked the other). Ties are broken by gene index.

    Parameters
    ----------
    expression
        Cells x G log-normalised expression (:func:`log_normalise`), columns in the order of
        the universe.
    n_neighbors
        ``H``, neighbours per gene.
    threshold
        Minimum correlation (strictly above).

    Returns
    -------
    scipy.sparse.csr_matrix
        G x G, symmetric, binary, no diagonal. Genes constant across cells get no edges.
    """
    if n_neighbors < 1:
        raise ValueError(f"n_neighbors must be at least 1, got {n_neighbors}")
    corr = pearson_correlation(expression)
    n = corr.shape[0]
    np.fill_diagonal(corr, -np.inf)
    corr[~(corr > threshold)] = -np.inf
    h = min(n_neighbors, max(n - 1, 1))
    # order each row by correlation descending, then column index ascending (stable sort)
    order = np.argsort(-corr, axis=1, kind="stable")[:, :h]
    picked = np.take_along_axis(corr, order, axis=1)
    ok = np.isfinite(picked)
    rows = np.repeat(np.arange(n), h).reshape(n, h)[ok]
    return _binary_undirected(rows.astype(np.int64), order[ok].astype(np.int64), n)


def coexpression_prior_from_h5ad(
    path: str | Path,
    gene_ids: Sequence[str],
    gene_symbols: Sequence[str],
    *,
    n_neighbors: int = 20,
    threshold: float = 0.4,
) -> sparse.csr_matrix:
    """:func:`coexpression_prior_from_anndata` of an ``.h5ad`` (e.g. ``qc.h5ad``).

    Raises
    ------
    InputError
        If the file cannot be read, or as :func:`coexpression_prior_from_anndata`.
    """
    from geneattn.io.readers import read_stage_h5ad

    return coexpression_prior_from_anndata(
        read_stage_h5ad(path),
        gene_ids,
        gene_symbols,
        n_neighbors=n_neighbors,
        threshold=threshold,
        source=path,
    )


def coexpression_prior_from_anndata(
    adata: AnnData,
    gene_ids: Sequence[str],
    gene_symbols: Sequence[str],
    *,
    n_neighbors: int = 20,
    threshold: float = 0.4,
    source: str | Path | None = None,
) -> sparse.csr_matrix:
    """:func:`coexpression_prior` from the raw counts of a study.

    All cells are used (the study's co-expression, as GenoHoption builds its graph from the
    training set). Counts are log-normalised with ``obs["n_counts"]`` when present (the QC
    stage's totals over all genes), else with the row sums. Universe genes are found by
    Ensembl ID in ``var["gene_ids"]`` (or the var names), then by symbol in the var names;
    genes not found get no co-expression edges.

    Raises
    ------
    InputError
        If there are fewer than 2 cells, or none of the genes (naming ``source``).
    """
    from geneattn.errors import InputError

    var_names = adata.var_names.astype(str).tolist()
    var_ids = adata.var["gene_ids"].astype(str).tolist() if "gene_ids" in adata.var else var_names
    by_id = {g: j for j, g in reversed(list(enumerate(var_ids)))}
    by_name = {g: j for j, g in reversed(list(enumerate(var_names)))}
    columns = []
    for gid, sym in zip(gene_ids, gene_symbols, strict=True):
        j = by_id.get(gid, by_name.get(gid))
        if j is None and sym:
            j = by_name.get(sym)
        columns.append(-1 if j is None else j)
    columns_arr = np.asarray(columns, dtype=np.int64)
    found = columns_arr >= 0
    if not found.any():
        raise InputError("none of the network's genes is in the file", source)
    if adata.n_obs < 2:
        raise InputError("the co-expression prior needs at least 2 cells", source)
    if not found.all():
        log.warning(
            "%s: %d of %d genes not found; they get no co-expression edges",
            source,
            int((~found).sum()),
            len(found),
        )
    n_counts = adata.obs["n_counts"].to_numpy(dtype=np.float64) if "n_counts" in adata.obs else None
    counts = sparse.csr_matrix(adata.X)
    if counts.data.size and (not np.all(np.isfinite(counts.data)) or np.any(counts.data < 0)):
        raise InputError("counts must be finite and non-negative", source)
    expression = log_normalise(counts, n_counts=n_counts)[:, columns_arr[found]]
    sub = coexpression_prior(expression, n_neighbors=n_neighbors, threshold=threshold)
    index = np.flatnonzero(found)
    coo = sub.tocoo()
    return _binary_undirected(index[coo.row], index[coo.col], len(found))


PriorKind = Literal["ppi", "coexpression", "union"]


def network_prior(
    kind: PriorKind,
    *,
    gene_ids: Sequence[str],
    gene_symbols: Sequence[str],
    ppi: pd.DataFrame | None = None,
    study: AnnData | None = None,
    min_confidence: float = 0.0,
    coexpression_neighbors: int = 20,
    coexpression_threshold: float = 0.4,
    study_source: str | Path | None = None,
) -> tuple[sparse.csr_matrix, dict[str, object]]:
    """The prior gene graph of the network stage's diffusion, and what to record of it.

    Parameters
    ----------
    kind
        ``"ppi"`` (:func:`ppi_prior`), ``"coexpression"``
        (:func:`coexpression_prior_from_anndata`) or ``"union"`` of both.
    gene_ids, gene_symbols
        The network's genes, in order.
    ppi
        The PPI edge list (:func:`geneattn.resources.load.load_ppi`), for ppi and union.
    study
        The study's QC'd counts, for coexpression and union.
    min_confidence
        PPI edges below this confidence are left out.
    coexpression_neighbors, coexpression_threshold
        ``H`` and the correlation threshold of the co-expression graph.
    study_source
        File of ``study``, named in errors.

    Returns
    -------
    tuple
        The binary undirected G x G prior, and the network params recording it (``prior``,
        ``prior_edges`` and the options of the kind).

    Raises
    ------
    InputError
        An unknown kind, or a kind without the input it needs.
    """
    from geneattn.errors import InputError

    if kind not in ("ppi", "coexpression", "union"):
        raise InputError(f"prior must be ppi, coexpression or union, got {kind!r}")
    priors = []
    if kind in ("ppi", "union"):
        if ppi is None:
            raise InputError(f"the {kind} prior needs the PPI edge list")
        priors.append(ppi_prior(ppi, gene_symbols, min_confidence=min_confidence))
    if kind in ("coexpression", "union"):
        if study is None:
            raise InputError(f"the {kind} prior needs the study's counts")
        priors.append(
            coexpression_prior_from_anndata(
                study,
                gene_ids,
                gene_symbols,
                n_neighbors=coexpression_neighbors,
                threshold=coexpression_threshold,
                source=study_source,
            )
        )
    prior = union_prior(*priors)
    if prior.nnz == 0:
        log.warning("the %s prior has no edge among the network's genes", kind)
    params: dict[str, object] = {"prior": kind, "prior_edges": int(prior.nnz // 2)}
    if kind in ("coexpression", "union"):
        params.update(
            coexpression_neighbors=coexpression_neighbors,
            coexpression_threshold=coexpression_threshold,
        )
    if kind in ("ppi", "union"):
        params.update(min_confidence=min_confidence)
    return prior, params


def pearson_correlation(expression: Matrix) -> np.ndarray:
    """Gene x gene Pearson correlation across cells (dense G x G; 0 for constant genes)."""
    x = sparse.csr_matrix(expression, dtype=np.float64)
    n_cells = x.shape[0]
    if n_cells < 2:
        raise ValueError("the co-expression prior needs at least 2 cells")
    mean = np.asarray(x.mean(axis=0)).ravel()
    second = np.asarray((x.T @ x).todense()) / n_cells
    return correlation_from_moments(mean, second, n_cells)


def correlation_from_moments(mean: np.ndarray, second: np.ndarray, n_cells: int) -> np.ndarray:
    """Pearson correlation from the genes' means ``E[x]`` and second moments ``E[x x^T]``
    over ``n_cells`` cells (0 for constant genes), as :func:`pearson_correlation` uses."""
    if n_cells < 2:
        raise ValueError("the co-expression prior needs at least 2 cells")
    cov = second - np.outer(mean, mean)
    var = np.diagonal(cov)
    # a constant gene's variance is round-off of E[x^2] - E[x]^2: treat it as 0
    varies = var > 1e-10 * np.diagonal(second)
    scale = np.zeros(len(var))
    scale[varies] = 1.0 / np.sqrt(var[varies])
    corr = cov * scale[:, None] * scale[None, :]
    return np.clip(corr, -1.0, 1.0)


def union_prior(*priors: Matrix) -> sparse.csr_matrix:
    """Binary union of prior graphs of the same shape (an edge if any has one)."""
    if not priors:
        raise ValueError("union_prior needs at least one graph")
    total = sparse.csr_matrix(priors[0], dtype=np.float64) != 0
    for p in priors[1:]:
        if p.shape != total.shape:
            raise ValueError(f"prior shapes differ: {p.shape} vs {total.shape}")
        total = total + (sparse.csr_matrix(p) != 0)
    coo = sparse.coo_matrix(total)
    return _binary_undirected(coo.row.astype(np.int64), coo.col.astype(np.int64), total.shape[0])


def _binary_undirected(rows: np.ndarray, cols: np.ndarray, n: int) -> sparse.csr_matrix:
    keep = rows != cols
    rows, cols = rows[keep], cols[keep]
    data = np.ones(2 * len(rows))
    m = sparse.csr_matrix(
        (data, (np.concatenate([rows, cols]), np.concatenate([cols, rows]))), shape=(n, n)
    )
    m.data[:] = 1.0  # duplicates were summed
    m.sort_indices()
    return m


def _check_shapes(values: Matrix, operator: sparse.spmatrix) -> None:
    if operator.shape[0] != operator.shape[1] or operator.shape[1] != values.shape[0]:
        raise ValueError(
            f"operator of shape {operator.shape} does not fit values of shape {values.shape}"
        )


def _same_kind(result: Matrix, like: Matrix) -> Matrix:
    if sparse.issparse(like):
        return sparse.csr_matrix(result)
    return np.asarray(result)

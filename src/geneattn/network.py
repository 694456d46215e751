"""Gene networks from attention sums: mean attention per gene pair, then a sparse weighted graph.

:func:`build_network` turns one condition's :class:`~geneattn.attention_sums.AttentionSums`
into a :class:`GeneNetwork` in these steps:

1. mean attention ``V[i, j] = sums[i, j] / counts[i, j]`` for gene pairs present together in at
   least ``min_cells`` cells (other pairs are undefined and weigh 0); the diagonal (a gene's
   attention to itself) is removed;
2. optionally, GenoHoption diffusion of ``V`` over a prior gene graph
   (:mod:`geneattn.diffusion`), after which the diagonal is removed again;
3. optionally, symmetrisation ``(W + W^T) / 2`` (the network is then undirected);
4. sparsification to the ``top_k`` strongest edges of every gene: an edge is kept when it is
   among the ``top_k`` edges of either endpoint (edges incident to a gene are its out- and
   in-edges when the network is directed). Ties are broken by (source, target) gene index, so
   the result does not depend on the order of computation.

The network file (:func:`save_network`) is an uncompressed ``.npz`` that
:func:`scipy.sparse.load_npz` reads as the CSR adjacency (``data``, ``indices``, ``indptr``,
``format``, ``shape``), with the gene annotation and the mean-attention matrix (``mean_*``,
CSR with an explicit entry for every defined pair) alongside; the modules stage compares the
mean attention of two conditions over the same gene pairs.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
from scipy import sparse

from geneattn.attention_sums import AttentionSums
from geneattn.errors import InputError
from geneattn.io.atomic import atomic_path
from geneattn.io.npz import read_npz_arrays

if TYPE_CHECKING:
    import networkx as nx
    import pandas as pd

logger = logging.getLogger(__name__)

__all__ = [
    "GeneNetwork",
    "build_network",
    "edge_table",
    "gene_labels",
    "load_network",
    "mean_attention",
    "network_graph",
    "save_edge_list",
    "save_graphml",
    "save_network",
    "symmetrize",
    "top_k_edges",
    "write_graphml",
    "write_network",
    "write_table",
]

#: ``printf`` format of floats in every table this package writes.
FLOAT_FORMAT = "%.6g"

_NETWORK_KEYS = (
    "data",
    "indices",
    "indptr",
    "format",
    "shape",
    "gene_ids",
    "gene_symbols",
    "incoming",
    "gene_cells",
    "n_cells",
    "condition",
    "directed",
    "mean_data",
    "mean_indices",
    "mean_indptr",
    "params",
)

#: Rows per block when thresholds are computed on a dense matrix (bounds the memory used).
_BLOCK_ROWS = 512


@dataclass(frozen=True)
class GeneNetwork:
    """A gene network of one condition.

    Attributes
    ----------
    gene_ids
        Ensembl IDs (str, G).
    gene_symbols
        Symbols (str, G), ``""`` where unknown.
    adjacency
        The sparsified network, CSR float64 G x G with positive weights and no diagonal;
        ``adjacency[i, j]`` is the weight of the edge from ``i`` (query) to ``j`` (key). It is
        symmetric when ``directed`` is false.
    mean_attention
        Mean attention of every defined gene pair (co-present in at least ``min_cells`` cells,
        off-diagonal), CSR with an explicit entry per defined pair, before diffusion,
        symmetrisation and sparsification.
    incoming
        Total incoming attention per gene (summed over cells).
    gene_cells
        Number of cells in which each gene is present.
    n_cells
        Number of cells of the condition.
    condition
        The condition label.
    directed
        Whether ``adjacency`` is directed.
    params
        The parameters the network was built with (JSON-serialisable).
    prior
        The prior gene graph the mean attention was diffused over (CSR G x G), or None
        without diffusion; :func:`geneattn.modules.pooled_network` diffuses the pooled
        attention over it, so the modules see the diffusion too.
    """

    gene_ids: np.ndarray
    gene_symbols: np.ndarray
    adjacency: sparse.csr_matrix
    mean_attention: sparse.csr_matrix
    incoming: np.ndarray
    gene_cells: np.ndarray
    n_cells: int
    condition: str
    directed: bool
    params: dict[str, Any] = field(default_factory=dict)
    prior: sparse.csr_matrix | None = None

    @property
    def n_genes(self) -> int:
        """Number of genes (nodes)."""
        return len(self.gene_ids)

    @property
    def incoming_per_cell(self) -> np.ndarray:
        """Mean incoming attention per cell in which the gene is present (0 if never)."""
        out = np.zeros(self.n_genes)
        present = self.gene_cells > 0
        out[present] = self.incoming[present] / self.gene_cells[present]
        return out


def mean_attention(data: AttentionSums, *, min_cells: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Mean attention per ordered gene pair, and which pairs are defined.

    Parameters
    ----------
    data
        Attention sums of one condition.
    min_cells
        Pairs present together in fewer cells are undefined (at least 1).

    Returns
    -------
    mean
        Dense G x G float64: ``sums / counts`` on defined pairs, 0 elsewhere and on the diagonal.
    defined
        Dense G x G bool: pairs co-present in at least ``min_cells`` cells, diagonal excluded.
    """
    if min_cells < 1:
        raise ValueError(f"min_cells must be at least 1, got {min_cells}")
    defined = data.counts >= min_cells
    np.fill_diagonal(defined, False)
    mean = np.zeros(data.sums.shape, dtype=np.float64)
    np.divide(data.sums, data.counts, out=mean, where=defined)
    return mean, defined


def symmetrize(matrix: np.ndarray | sparse.spmatrix) -> np.ndarray | sparse.csr_matrix:
    """Return ``(matrix + matrix.T) / 2`` (dense stays dense, sparse becomes CSR)."""
    if sparse.issparse(matrix):
        m = sparse.csr_matrix(matrix)
        return ((m + m.T) * 0.5).tocsr()
    m = np.asarray(matrix)
    return (m + m.T) * 0.5


def top_k_edges(
    matrix: np.ndarray | sparse.spmatrix, k: int, *, directed: bool
) -> sparse.csr_matrix:
    """Keep the edges that are among the ``k`` strongest of either endpoint.

    Parameters
    ----------
    matrix
        G x G non-negative weights (dense or sparse). The diagonal and zero entries are not
        edges. With ``directed=False`` it must be symmetric and every undirected edge
        ``{i, j}`` is counted once per endpoint.
    k
        Edges kept per gene (at least 1).
    directed
        Whether ``matrix[i, j]`` and ``matrix[j, i]`` are distinct edges. A directed edge
        ``i -> j`` is incident to both ``i`` and ``j``.

    Returns
    -------
    scipy.sparse.csr_matrix
        G x G float64 with the kept edges (symmetric when ``directed`` is false).

    Notes
    -----
    Edges are ordered by decreasing weight, then by source index, then by target index (for an
    undirected edge, source < target); a gene keeps the first ``k`` edges incident to it in that
    order, so ties are broken the same way on every run.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    n = matrix.shape[0]
    if matrix.shape != (n, n):
        raise ValueError(f"expected a square matrix, got shape {matrix.shape}")
    if not directed and not _is_symmetric(matrix):
        raise ValueError("an undirected network needs a symmetric matrix; symmetrize it first")
    rows, cols, weights = _candidate_edges(matrix, k, directed=directed)
    if not directed:
        upper = rows < cols
        rows, cols, weights = rows[upper], cols[upper], weights[upper]
    n_edges = len(weights)
    # global order of edges: weight descending, then source, then target
    order = np.lexsort((cols, rows, -weights))
    rank = np.empty(n_edges, dtype=np.int64)
    rank[order] = np.arange(n_edges)
    # each edge is incident to its two endpoints; keep it if it ranks < k at either
    inc_gene = np.concatenate([rows, cols])
    inc_edge = np.concatenate([np.arange(n_edges), np.arange(n_edges)])
    by_gene = np.lexsort((rank[inc_edge], inc_gene))
    genes_sorted = inc_gene[by_gene]
    position = np.arange(len(by_gene)) - np.searchsorted(genes_sorted, genes_sorted, side="left")
    keep = np.zeros(n_edges, dtype=bool)
    keep[inc_edge[by_gene][position < k]] = True
    rows, cols, weights = rows[keep], cols[keep], weights[keep]
    if not directed:
        rows, cols = np.concatenate([rows, cols]), np.concatenate([cols, rows])
        weights = np.concatenate([weights, weights])
    out = sparse.csr_matrix((weights, (rows, cols)), shape=(n, n), dtype=np.float64)
    out.sort_indices()
    return out


def build_network(
    data: AttentionSums,
    *,
    min_cells: int = 3,
    top_k: int = 10,
    symmetric: bool = False,
    diffusion: str = "none",
    prior: sparse.spmatrix | None = None,
    alpha: float = 0.25,
    t: float = 5.0,
    iterations: int = 6,
    params: dict[str, Any] | None = None,
) -> GeneNetwork:
    """Build the sparse gene network of one condition.

    Parameters
    ----------
    data
        Attention sums of the condition (e.g. from
        :func:`~geneattn.attention_sums.gather_attention_sums`).
    min_cells
        Gene pairs co-present in fewer cells are dropped.
    top_k
        Edges kept per gene (see :func:`top_k_edges`).
    symmetric
        Symmetrise the weights (``(W + W^T) / 2``) and return an undirected network.
    diffusion
        ``"none"``, ``"ppr"`` or ``"heat"``: GenoHoption diffusion of the mean attention over
        ``prior`` (see :func:`geneattn.diffusion.diffuse`).
    prior
        G x G prior gene graph in the order of ``data.gene_ids`` (needed unless
        ``diffusion="none"``).
    alpha, t, iterations
        Diffusion parameters (PPR teleport probability, heat-kernel time, number of steps).
    params
        Extra entries recorded in :attr:`GeneNetwork.params`.

    Returns
    -------
    GeneNetwork
        The network; its ``mean_attention`` holds the mean attention of every defined pair.
    """
    logger.info(
        "%s: mean attention over %d cells, %d genes", data.condition, data.n_cells, data.n_genes
    )
    mean, defined = mean_attention(data, min_cells=min_cells)
    mean_csr = _defined_csr(mean, defined)
    weights = mean
    if diffusion != "none":
        from geneattn.diffusion import diffuse

        if prior is None:
            raise ValueError(f"diffusion {diffusion!r} needs a prior gene graph")
        logger.info(
            "%s: %s diffusion over the prior graph (%d edges), %d iterations",
            data.condition,
            diffusion,
            prior.nnz // 2,
            iterations,
        )
        weights = np.asarray(
            diffuse(mean, prior, method=diffusion, alpha=alpha, t=t, iterations=iterations)
        )
        np.fill_diagonal(weights, 0.0)
    if symmetric:
        weights = symmetrize(weights)
    logger.info("%s: keeping the %d strongest edges of each gene", data.condition, top_k)
    adjacency = top_k_edges(weights, top_k, directed=not symmetric)
    recorded = {
        "min_cells": int(min_cells),
        "top_k": int(top_k),
        "symmetric": bool(symmetric),
        "diffusion": diffusion,
    }
    if diffusion == "ppr":
        recorded.update(alpha=float(alpha), iterations=int(iterations))
    elif diffusion == "heat":
        recorded.update(t=float(t), iterations=int(iterations))
    recorded.update(params or {})
    return GeneNetwork(
        gene_ids=data.gene_ids,
        gene_symbols=data.gene_symbols,
        adjacency=adjacency,
        mean_attention=mean_csr,
        incoming=data.incoming,
        gene_cells=data.gene_cells,
        n_cells=data.n_cells,
        condition=data.condition,
        directed=not symmetric,
        params=recorded,
        prior=None if diffusion == "none" else sparse.csr_matrix(prior, dtype=np.float64),
    )


def save_network(path: str | Path, network: GeneNetwork) -> None:
    """Write a network to ``path`` atomically (uncompressed ``.npz``).

    ``scipy.sparse.load_npz(path)`` returns the adjacency; :func:`load_network` returns the
    whole :class:`GeneNetwork`.
    """
    with atomic_path(path) as tmp:
        write_network(tmp, network)


def load_network(path: str | Path) -> GeneNetwork:
    """Read a network written by :func:`save_network`.

    Raises
    ------
    InputError
        If the file is missing, unreadable, or not a consistent network file.
    """
    path = Path(path)
    arrays = read_npz_arrays(path, _NETWORK_KEYS, "a geneattn network file")
    try:
        n = len(arrays["gene_ids"])
        if tuple(arrays["shape"].tolist()) != (n, n) or arrays["format"].item() != b"csr":
            raise ValueError("adjacency shape or format does not match the genes")
        adjacency = sparse.csr_matrix(
            (arrays["data"], arrays["indices"], arrays["indptr"]), shape=(n, n)
        )
        mean = sparse.csr_matrix(
            (arrays["mean_data"], arrays["mean_indices"], arrays["mean_indptr"]), shape=(n, n)
        )
        adjacency.check_format(full_check=True)
        mean.check_format(full_check=True)
        network = GeneNetwork(
            gene_ids=arrays["gene_ids"].astype(str),
            gene_symbols=arrays["gene_symbols"].astype(str),
            adjacency=adjacency,
            mean_attention=mean,
            incoming=arrays["incoming"].astype(np.float64),
            gene_cells=arrays["gene_cells"].astype(np.int64),
            n_cells=int(arrays["n_cells"]),
            condition=str(arrays["condition"]),
            directed=bool(arrays["directed"]),
            params=json.loads(str(arrays["params"])),
            prior=_read_prior(path, n),
        )
    except (ValueError, TypeError, IndexError, KeyError) as err:
        raise InputError(f"inconsistent network file ({err})", path) from None
    if network.gene_symbols.shape != (n,) or network.incoming.shape != (n,):
        raise InputError("gene annotation arrays do not match the number of genes", path)
    if len(set(network.gene_ids.tolist())) != n:
        raise InputError("duplicated gene IDs", path)
    if not np.all(np.isfinite(adjacency.data)) or not np.all(np.isfinite(mean.data)):
        raise InputError("NaN or infinite weights", path)
    return network


def gene_labels(gene_ids: np.ndarray, gene_symbols: np.ndarray) -> np.ndarray:
    """Display names: the symbol, or the Ensembl ID where the symbol is unknown."""
    symbols = np.asarray(gene_symbols, dtype=str)
    return np.where(symbols == "", np.asarray(gene_ids, dtype=str), symbols)


def edge_table(network: GeneNetwork) -> pd.DataFrame:
    """Edges of the network, strongest first.

    Returns
    -------
    pandas.DataFrame
        Columns ``source``, ``target`` (symbols, or IDs when unknown), ``weight``,
        ``source_id``, ``target_id`` (Ensembl IDs). An undirected network lists each edge once,
        with ``source`` the gene of lower index. Rows are sorted by decreasing weight, then by
        source and target index.
    """
    import pandas as pd

    coo = network.adjacency.tocoo()
    rows, cols, weights = coo.row, coo.col, coo.data
    if not network.directed:
        upper = rows < cols
        rows, cols, weights = rows[upper], cols[upper], weights[upper]
    order = np.lexsort((cols, rows, -weights))
    rows, cols, weights = rows[order], cols[order], weights[order]
    labels = gene_labels(network.gene_ids, network.gene_symbols)
    return pd.DataFrame(
        {
            "source": labels[rows],
            "target": labels[cols],
            "weight": weights,
            "source_id": network.gene_ids[rows],
            "target_id": network.gene_ids[cols],
        }
    )


def save_edge_list(path: str | Path, network: GeneNetwork) -> None:
    """Write :func:`edge_table` as a TSV to ``path`` atomically (floats as ``%.6g``)."""
    with atomic_path(path) as tmp:
        write_table(tmp, edge_table(network))


def save_table(path: str | Path, table: pd.DataFrame) -> None:
    """:func:`write_table` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        write_table(tmp, table)


def write_table(path: str | Path, table: pd.DataFrame) -> None:
    """Write a table as TSV with fixed float formatting (``NA`` for missing values)."""
    table.to_csv(
        path, sep="\t", index=False, float_format=FLOAT_FORMAT, na_rep="NA", lineterminator="\n"
    )


def network_graph(
    network: GeneNetwork, node_attributes: dict[str, np.ndarray] | None = None
) -> nx.Graph:
    """The network as a networkx graph (``DiGraph`` when directed) for GraphML export.

    Nodes are Ensembl IDs with attributes ``label`` (symbol or ID), ``symbol``, ``gene_id``,
    ``incoming_attention`` (mean incoming attention per cell in which the gene is present),
    ``n_cells_present`` and any ``node_attributes`` (arrays of length G of str, int or float;
    a NaN float is left out for that node). Edges carry ``weight``. Values are plain Python
    ``str``/``int``/``float`` so that Cytoscape reads every attribute.
    """
    import networkx as nx

    graph = nx.DiGraph() if network.directed else nx.Graph()
    labels = gene_labels(network.gene_ids, network.gene_symbols)
    columns: dict[str, np.ndarray] = {
        "label": labels,
        "symbol": network.gene_symbols,
        "gene_id": network.gene_ids,
        "incoming_attention": network.incoming_per_cell,
        "n_cells_present": network.gene_cells,
    }
    columns.update(node_attributes or {})
    for name, values in columns.items():
        if len(values) != network.n_genes:
            raise ValueError(f"node attribute {name!r} has {len(values)} values")
    for i, gene in enumerate(network.gene_ids.tolist()):
        attrs = {}
        for name, values in columns.items():
            value = _plain(values[i])
            if isinstance(value, float) and not np.isfinite(value):
                continue
            attrs[name] = value
        graph.add_node(gene, **attrs)
    table = edge_table(network)
    for source, target, weight in zip(
        table["source_id"].tolist(),
        table["target_id"].tolist(),
        table["weight"].tolist(),
        strict=True,
    ):
        graph.add_edge(source, target, weight=float(weight))
    return graph


def write_graphml(path: str | Path, graph: nx.Graph) -> None:
    """Write a graph as GraphML (UTF-8) to ``path``."""
    import networkx as nx

    nx.write_graphml(graph, path, encoding="utf-8", prettyprint=True)


def save_graphml(path: str | Path, graph: nx.Graph) -> None:
    """Write a graph as GraphML to ``path`` atomically."""
    with atomic_path(path) as tmp:
        write_graphml(tmp, graph)


def _plain(value: Any) -> str | int | float | bool:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"unsupported GraphML attribute value {value!r}")


def write_network(path: str | Path | BinaryIO, network: GeneNetwork) -> None:
    """Write a network ``.npz`` (uncompressed, byte-deterministic) to a path or binary file.

    Not atomic: :func:`save_network` is the atomic variant.
    """
    if isinstance(path, str | Path):
        with open(path, "wb") as fh:
            write_network(fh, network)
        return
    adjacency = sparse.csr_matrix(network.adjacency, dtype=np.float64)
    adjacency.sort_indices()
    mean = sparse.csr_matrix(network.mean_attention, dtype=np.float64)
    mean.sort_indices()
    n = network.n_genes
    np.savez(
        path,
        data=adjacency.data,
        indices=adjacency.indices.astype(np.int32),
        indptr=adjacency.indptr.astype(np.int64),
        format=np.bytes_(b"csr"),
        shape=np.array([n, n], dtype=np.int64),
        gene_ids=np.asarray(network.gene_ids, dtype=str),
        gene_symbols=np.asarray(network.gene_symbols, dtype=str),
        incoming=np.asarray(network.incoming, dtype=np.float64),
        gene_cells=np.asarray(network.gene_cells, dtype=np.int64),
        n_cells=np.int64(network.n_cells),
        condition=np.str_(network.condition),
        directed=np.bool_(network.directed),
        mean_data=mean.data,
        mean_indices=mean.indices.astype(np.int32),
        mean_indptr=mean.indptr.astype(np.int64),
        params=np.str_(json.dumps(network.params, sort_keys=True)),
        **_prior_arrays(network.prior),
    )


def _prior_arrays(prior: sparse.spmatrix | None) -> dict[str, np.ndarray]:
    """The prior graph as ``prior_*`` CSR arrays (none without a prior)."""
    if prior is None:
        return {}
    prior = sparse.csr_matrix(prior, dtype=np.float64)
    prior.sort_indices()
    return {
        "prior_data": prior.data,
        "prior_indices": prior.indices.astype(np.int32),
        "prior_indptr": prior.indptr.astype(np.int64),
    }


def _read_prior(path: Path, n: int) -> sparse.csr_matrix | None:
    """The ``prior_*`` arrays of a network file as CSR, or None when it has none."""
    with np.load(path, allow_pickle=False) as z:
        if "prior_data" not in z.files:
            return None
        prior = sparse.csr_matrix(
            (z["prior_data"], z["prior_indices"], z["prior_indptr"]), shape=(n, n)
        )
    prior.check_format(full_check=True)
    return prior


def _defined_csr(mean: np.ndarray, defined: np.ndarray) -> sparse.csr_matrix:
    """CSR with an explicit entry (possibly 0) for every defined pair, in row-major order."""
    n = mean.shape[0]
    rows, cols = np.nonzero(defined)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    return sparse.csr_matrix(
        (mean[rows, cols], cols.astype(np.int32), indptr), shape=(n, n), dtype=np.float64
    )


def _is_symmetric(matrix: np.ndarray | sparse.spmatrix) -> bool:
    if sparse.issparse(matrix):
        m = sparse.csr_matrix(matrix)
        return (m != m.T).nnz == 0
    m = np.asarray(matrix)
    return bool(np.array_equal(m, m.T))


def _candidate_edges(
    matrix: np.ndarray | sparse.spmatrix, k: int, *, directed: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positive off-diagonal entries that can be in the top ``k`` of one of their endpoints.

    For a sparse matrix these are all positive off-diagonal entries. For a dense matrix, each
    gene's ``k``-th largest incident weight is its threshold, and an entry is a candidate if it
    reaches the threshold of either endpoint: every gene's top ``k`` (ties included) is then
    among the candidates, and the exact selection in :func:`top_k_edges` gives the same result
    as on all entries.
    """
    if sparse.issparse(matrix):
        coo = sparse.coo_matrix(matrix)
        keep = (coo.row != coo.col) & (coo.data > 0)
        if np.any(coo.data < 0) or not np.all(np.isfinite(coo.data)):
            raise ValueError("edge weights must be finite and non-negative")
        return (
            coo.row[keep].astype(np.int64),
            coo.col[keep].astype(np.int64),
            coo.data[keep].astype(np.float64),
        )
    m = np.asarray(matrix, dtype=np.float64)
    if np.any(m < 0) or not np.all(np.isfinite(m)):
        raise ValueError("edge weights must be finite and non-negative")
    n = m.shape[0]
    threshold = np.empty(n)
    for start in range(0, n, _BLOCK_ROWS):
        stop = min(start + _BLOCK_ROWS, n)
        block = m[start:stop].copy()
        block[np.arange(stop - start), np.arange(start, stop)] = 0.0
        if directed:
            col_block = m[:, start:stop].T.copy()
            col_block[np.arange(stop - start), np.arange(start, stop)] = 0.0
            block = np.concatenate([block, col_block], axis=1)
        kk = min(k, block.shape[1])
        threshold[start:stop] = np.partition(block, block.shape[1] - kk, axis=1)[:, -kk]
    # a gene with fewer than k positive edges keeps all of them (threshold 0 means "any > 0")
    candidate = (m >= threshold[:, None]) | (m >= threshold[None, :])
    candidate &= m > 0
    np.fill_diagonal(candidate, False)
    rows, cols = np.nonzero(candidate)
    return rows.astype(np.int64), cols.astype(np.int64), m[rows, cols]

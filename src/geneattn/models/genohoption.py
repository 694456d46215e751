"""GenoHoption's graph-sparse attention (seed 001) inside the encoder: configuration and prior.

GenoHoption replaces each layer's dense softmax attention by attention along the edges of a
gene network among the cell's own tokens (Seq2Graph), followed by ``K`` steps of graph
diffusion of the values, personalised PageRank (``V_k = (1 - alpha) A V_(k-1) + alpha V``,
eq. 8) or the heat kernel (``e^(-t) sum_(k<=K) t^k / k! A^k V``, eqs. 10 and 11). The
arithmetic is in Rust (:mod:`geneattn._kernels`: ``genohoption_attention``, ``seq2graph``,
the ``mha_genohoption_*`` study-model kernels and the ``genohoption=`` argument of the
``bert_*`` checkpoint kernels); this module holds what feeds it:

* :class:`GenoHoptionConfig`: the workflow's ``attention.mode: genohoption`` options;
* :class:`TokenGraph`: the prior over token ids (a CSR pattern, row ``t`` listing the tokens
  ``t`` attends to) with the diffusion, passed to the kernels by
  :meth:`TokenGraph.kernel_arg`;
* the priors: the PPI (:func:`ppi_token_graph`), GenoHoption's co-expression graph of section
  III-C, built once per study (:func:`coexpression_token_graph`: each gene linked to its top
  ``H`` genes by Pearson correlation above a threshold, computed block by block so the
  ``G x G`` correlation is never held), or their union.

Per cell the kernels restrict the prior to the cell's tokens and add a self-loop on every
position (as the authors' ``dgl.add_self_loop``): a token without prior neighbours, e.g. a gene
the prior does not know or a special token, only attends to itself and keeps its value (PPR),
or its value times ``sum_k theta_k`` (heat).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from geneattn.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

    from geneattn.tokenize import TokenizedCells

__all__ = [
    "DIFFUSIONS",
    "GRAPHS",
    "GenoHoptionConfig",
    "TokenGraph",
    "build_token_graph",
    "coexpression_gene_graph",
    "coexpression_token_graph",
    "edges_per_cell",
    "load_token_graph",
    "ppi_token_graph",
    "save_token_graph",
    "token_graph",
]

log = logging.getLogger(__name__)

#: The prior graphs Seq2Graph can use.
GRAPHS = ("ppi", "coexpression", "union")

#: The diffusions.
DIFFUSIONS = ("ppr", "heat")


@dataclasses.dataclass(frozen=True)
class GenoHoptionConfig:
    """GenoHoption's options (defaults: the seed's Table IV and the authors' code).

    Attributes
    ----------
    graph
        Prior of Seq2Graph: ``"ppi"``, ``"coexpression"`` or ``"union"``.
    diffusion
        ``"ppr"`` (GenoHoption-p) or ``"heat"`` (GenoHoption-h).
    alpha
        PPR teleport probability, in ``(0, 1]``.
    t
        Heat diffusion time, ``> 0``.
    iterations
        ``K``, diffusion steps per layer.
    coexpression_top
        ``H``: co-expression neighbours kept per gene.
    coexpression_min
        Pearson correlation a co-expression edge must exceed.
    """

    graph: str = "ppi"
    diffusion: str = "ppr"
    alpha: float = 0.25
    t: float = 5.0
    iterations: int = 6
    coexpression_top: int = 20
    coexpression_min: float = 0.4

    def __post_init__(self) -> None:
        if self.graph not in GRAPHS:
            raise InputError(f"graph must be one of {', '.join(GRAPHS)}, got {self.graph!r}")
        if self.diffusion not in DIFFUSIONS:
            raise InputError(f"diffusion must be 'ppr' or 'heat', got {self.diffusion!r}")
        if not 0.0 < float(self.alpha) <= 1.0:
            raise InputError(f"alpha must lie in (0, 1], got {self.alpha}")
        if not (np.isfinite(self.t) and float(self.t) > 0.0):
            raise InputError(f"t must be finite and > 0, got {self.t}")
        if isinstance(self.iterations, bool) or not 0 <= int(self.iterations) <= 1000:
            raise InputError(f"iterations must be an integer in 0..1000, got {self.iterations}")
        if isinstance(self.coexpression_top, bool) or int(self.coexpression_top) < 1:
            raise InputError(f"coexpression_top must be >= 1, got {self.coexpression_top}")
        if not -1.0 <= float(self.coexpression_min) < 1.0:
            raise InputError(f"coexpression_min must lie in [-1, 1), got {self.coexpression_min}")

    def params(self) -> dict:
        """The options as a JSON-serialisable dict (the keys of :meth:`from_params`)."""
        return {
            "graph": self.graph,
            "diffusion": self.diffusion,
            "alpha": float(self.alpha),
            "t": float(self.t),
            "iterations": int(self.iterations),
            "coexpression_top": int(self.coexpression_top),
            "coexpression_min": float(self.coexpression_min),
        }

    @classmethod
    def from_params(cls, params: Mapping[str, object]) -> GenoHoptionConfig:
        """The config of a :meth:`params` dict (unknown keys are refused)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - fields)
        if unknown:
            raise InputError(f"unknown GenoHoption option(s): {', '.join(unknown)}")
        return cls(**params)  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True)
class TokenGraph:
    """A prior over token ids and the diffusion: what the kernels' ``genohoption`` takes.

    Attributes
    ----------
    indptr, indices
        int64 CSR pattern over ``n_tokens`` token ids: ``indices[indptr[t]:indptr[t + 1]]``
        are the tokens ``t`` attends to (sorted, no repeats, no diagonal).
    config
        The options it was built with.
    vocabulary
        Gene id of every token id (to move the graph onto another dictionary by gene), or
        None.
    """

    indptr: np.ndarray
    indices: np.ndarray
    config: GenoHoptionConfig
    vocabulary: np.ndarray | None = None

    def __post_init__(self) -> None:
        indptr = np.ascontiguousarray(self.indptr, dtype=np.int64)
        indices = np.ascontiguousarray(self.indices, dtype=np.int64)
        if indptr.ndim != 1 or indptr.size < 1 or indptr[0] != 0 or indices.ndim != 1:
            raise InputError("a token graph needs a 1-d indptr starting at 0 and 1-d indices")
        if np.any(np.diff(indptr) < 0) or indptr[-1] != indices.size:
            raise InputError("token graph indptr must be non-decreasing and end at len(indices)")
        n = indptr.size - 1
        if indices.size and (indices.min() < 0 or indices.max() >= n):
            raise InputError(f"token graph indices must lie in 0..{n - 1}")
        object.__setattr__(self, "indptr", indptr)
        object.__setattr__(self, "indices", indices)
        if self.vocabulary is not None:
            vocabulary = np.asarray(self.vocabulary).astype(str)
            if vocabulary.shape != (n,):
                raise InputError(f"the vocabulary must have one gene per token ({n})")
            object.__setattr__(self, "vocabulary", vocabulary)

    @property
    def n_tokens(self) -> int:
        """Number of token ids (rows)."""
        return self.indptr.size - 1

    @property
    def n_edges(self) -> int:
        """Number of directed token pairs."""
        return int(self.indices.size)

    def kernel_arg(self) -> dict:
        """The ``genohoption`` argument of the kernels."""
        c = self.config
        return {
            "indptr": self.indptr,
            "indices": self.indices,
            "diffusion": c.diffusion,
            "alpha": float(c.alpha),
            "t": float(c.t),
            "iterations": int(c.iterations),
        }

    def matrix(self) -> sp.csr_matrix:
        """The pattern as a binary ``n_tokens x n_tokens`` CSR matrix."""
        n = self.n_tokens
        return sp.csr_matrix((np.ones(self.indices.size), self.indices, self.indptr), shape=(n, n))

    def remap(self, ids: np.ndarray, n_tokens: int) -> TokenGraph:
        """The graph over another vocabulary: token ``t`` becomes ``ids[t]`` (-1: dropped).

        Parameters
        ----------
        ids
            int, one entry per token id of this graph: its id in the other vocabulary.
        n_tokens
            Size of the other vocabulary.

        Returns
        -------
        TokenGraph
            Without a vocabulary.
        """
        ids = np.asarray(ids, dtype=np.int64)
        if ids.shape != (self.n_tokens,):
            raise InputError(
                f"ids must have one entry per token ({self.n_tokens}), got {ids.shape}"
            )
        if ids.size and ids.max() >= n_tokens:
            raise InputError(f"ids must lie below n_tokens ({n_tokens})")
        coo = self.matrix().tocoo()
        r, c = ids[coo.row], ids[coo.col]
        keep = (r >= 0) & (c >= 0)
        return _from_pairs(r[keep], c[keep], n_tokens, self.config)


def _from_pairs(
    rows: np.ndarray, cols: np.ndarray, n: int, config: GenoHoptionConfig
) -> TokenGraph:
    """A token graph of directed pairs (repeats and the diagonal dropped)."""
    keep = rows != cols
    m = sp.csr_matrix((np.ones(int(keep.sum())), (rows[keep], cols[keep])), shape=(n, n))
    m.sum_duplicates()
    m.sort_indices()
    return TokenGraph(m.indptr.astype(np.int64), m.indices.astype(np.int64), config)


def _undirected(m: sp.spmatrix) -> sp.csr_matrix:
    """Binary symmetric pattern of ``m`` without its diagonal."""
    coo = sp.coo_matrix(m)
    keep = (coo.row != coo.col) & (coo.data != 0)
    r, c = coo.row[keep], coo.col[keep]
    n = m.shape[0]
    out = sp.csr_matrix(
        (np.ones(2 * r.size), (np.concatenate([r, c]), np.concatenate([c, r]))), shape=(n, n)
    )
    out.data[:] = 1.0
    out.sort_indices()
    return out


def ppi_token_graph(edges: pd.DataFrame, token_symbols: Sequence[str]) -> sp.csr_matrix:
    """The PPI over token ids: ``n_tokens x n_tokens``, binary, symmetric, no diagonal.

    Parameters
    ----------
    edges
        The PPI edge list (:func:`geneattn.resources.load.load_ppi`).
    token_symbols
        Gene symbol of every token id (``""``: none, e.g. special tokens).
    """
    from geneattn.diffusion import ppi_prior

    return ppi_prior(edges, token_symbols)


def coexpression_gene_graph(
    expression: sp.spmatrix | np.ndarray, *, top: int = 20, min_corr: float = 0.4, block: int = 512
) -> sp.csr_matrix:
    """GenoHoption's co-expression graph (seed 001, III-C) over the columns of ``expression``.

    Each gene is linked to (at most) ``top`` genes of highest Pearson correlation with it
    across cells among those correlated above ``min_corr`` (ties by column index); the graph
    is then made undirected. The same graph as :func:`geneattn.diffusion.coexpression_prior`,
    computed ``block`` genes at a time (memory ``O(block x G)`` instead of ``O(G^2)``).

    Parameters
    ----------
    expression
        Cells x G log-normalised expression.
    top
        ``H``.
    min_corr
        Threshold (strictly above).
    block
        Genes per block.

    Returns
    -------
    scipy.sparse.csr_matrix
        G x G, binary, symmetric, no diagonal; constant genes get no edges.
    """
    x = sp.csr_matrix(expression, dtype=np.float64)
    n_cells, g = x.shape
    if n_cells < 2:
        raise InputError("the co-expression graph needs at least 2 cells")
    mean = np.asarray(x.mean(axis=0)).ravel()
    second_diag = np.asarray(x.multiply(x).mean(axis=0)).ravel()
    var = second_diag - mean**2
    varies = var > 1e-10 * second_diag
    scale = np.zeros(g)
    scale[varies] = 1.0 / np.sqrt(var[varies])
    xt = x.T.tocsr()
    rows, cols = [], []
    for b0 in range(0, g, block):
        b1 = min(b0 + block, g)
        second = np.asarray((xt[b0:b1] @ x).todense()) / n_cells
        corr = (second - np.outer(mean[b0:b1], mean)) * scale[b0:b1, None] * scale[None, :]
        np.clip(corr, -1.0, 1.0, out=corr)
        corr[np.arange(b1 - b0), np.arange(b0, b1)] = -np.inf
        r, c = np.nonzero(corr > min_corr)
        v = corr[r, c]
        order = np.lexsort((c, -v, r))  # by row, correlation descending, column
        r, c = r[order], c[order]
        starts = np.searchsorted(r, r, side="left")
        keep = np.arange(r.size) - starts < top
        rows.append(r[keep] + b0)
        cols.append(c[keep])
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    return _undirected(sp.csr_matrix((np.ones(r.size), (r, c)), shape=(g, g)))


def coexpression_token_graph(
    counts: sp.spmatrix | np.ndarray,
    gene_tokens: np.ndarray,
    n_tokens: int,
    *,
    n_counts: np.ndarray | None = None,
    top: int = 20,
    min_corr: float = 0.4,
) -> sp.csr_matrix:
    """The co-expression graph of a study's counts over token ids.

    Counts of columns with the same token are added; expression is ``log1p(x / n_counts *
    1e4)`` (:func:`geneattn.diffusion.log_normalise`), then :func:`coexpression_gene_graph`.

    Parameters
    ----------
    counts
        Cells x genes raw counts.
    gene_tokens
        Token id of each column (-1: none).
    n_tokens
        Vocabulary size.
    n_counts
        Total counts per cell (default: row sums).
    top, min_corr
        ``H`` and the threshold.

    Returns
    -------
    scipy.sparse.csr_matrix
        ``n_tokens x n_tokens``, binary, symmetric, no diagonal.
    """
    from geneattn.diffusion import log_normalise

    gene_tokens = np.asarray(gene_tokens, dtype=np.int64)
    x = sp.csr_matrix(counts, dtype=np.float64)
    if gene_tokens.shape != (x.shape[1],):
        raise InputError(f"gene_tokens must have one entry per column ({x.shape[1]})")
    if gene_tokens.size and gene_tokens.max() >= n_tokens:
        raise InputError(f"gene_tokens must lie below n_tokens ({n_tokens})")
    has = np.flatnonzero(gene_tokens >= 0)
    used, compact = np.unique(gene_tokens[has], return_inverse=True)
    merge = sp.csr_matrix(
        (np.ones(has.size), (has, compact)), shape=(x.shape[1], used.size), dtype=np.float64
    )
    totals = np.asarray(x.sum(axis=1)).ravel() if n_counts is None else np.asarray(n_counts)
    expression = log_normalise(x @ merge, n_counts=totals)
    sub = coexpression_gene_graph(expression, top=top, min_corr=min_corr).tocoo()
    out = sp.csr_matrix(
        (sub.data, (used[sub.row], used[sub.col])), shape=(n_tokens, n_tokens), dtype=np.float64
    )
    out.sort_indices()
    return out


def token_graph(
    config: GenoHoptionConfig,
    n_tokens: int,
    *,
    ppi: sp.spmatrix | None = None,
    coexpression: sp.spmatrix | None = None,
    vocabulary: np.ndarray | None = None,
) -> TokenGraph:
    """The prior of ``config.graph`` from the PPI and/or co-expression token graphs.

    Parameters
    ----------
    config
        The options.
    n_tokens
        Vocabulary size (rows of the graphs).
    ppi, coexpression
        ``n_tokens x n_tokens`` graphs (:func:`ppi_token_graph`,
        :func:`coexpression_token_graph`); the ones ``config.graph`` needs must be given.
    vocabulary
        Gene id of every token id, kept with the graph.
    """
    parts: list[sp.spmatrix] = []
    if config.graph in ("ppi", "union"):
        if ppi is None:
            raise InputError(f"graph {config.graph!r} needs the PPI prior")
        parts.append(ppi)
    if config.graph in ("coexpression", "union"):
        if coexpression is None:
            raise InputError(f"graph {config.graph!r} needs the co-expression graph")
        parts.append(coexpression)
    total = sp.csr_matrix((n_tokens, n_tokens))
    for p in parts:
        if p.shape != (n_tokens, n_tokens):
            raise InputError(f"a prior has shape {p.shape}, expected ({n_tokens}, {n_tokens})")
        total = total + (sp.csr_matrix(p) != 0)
    coo = sp.coo_matrix(total)
    graph = _from_pairs(coo.row.astype(np.int64), coo.col.astype(np.int64), n_tokens, config)
    return dataclasses.replace(graph, vocabulary=vocabulary)


def build_token_graph(
    config: GenoHoptionConfig,
    vocabulary: np.ndarray,
    *,
    symbols: Sequence[str] | None = None,
    ppi_edges: pd.DataFrame | None = None,
    counts: sp.spmatrix | np.ndarray | None = None,
    gene_tokens: np.ndarray | None = None,
    n_counts: np.ndarray | None = None,
) -> TokenGraph:
    """The prior ``config.graph`` asks for, over a token vocabulary, built once per study.

    Parameters
    ----------
    config
        The options.
    vocabulary
        Gene id of every token id.
    symbols
        Gene symbol of every token id (the PPI names genes by symbol).
    ppi_edges
        The PPI edge list (``ppi`` and ``union``).
    counts, gene_tokens, n_counts
        The study's raw counts (cells x genes), each column's token id and each cell's total
        counts (``coexpression`` and ``union``).

    Returns
    -------
    TokenGraph
        The prior with the diffusion options and the vocabulary.
    """
    n = len(vocabulary)
    ppi = coexpression = None
    if config.graph in ("ppi", "union"):
        if ppi_edges is None or symbols is None:
            raise InputError(f"graph {config.graph!r} needs the PPI edge list and gene symbols")
        ppi = ppi_token_graph(ppi_edges, symbols)
    if config.graph in ("coexpression", "union"):
        if counts is None or gene_tokens is None:
            raise InputError(f"graph {config.graph!r} needs the study's counts")
        coexpression = coexpression_token_graph(
            counts,
            gene_tokens,
            n,
            n_counts=n_counts,
            top=config.coexpression_top,
            min_corr=config.coexpression_min,
        )
    graph = token_graph(config, n, ppi=ppi, coexpression=coexpression, vocabulary=vocabulary)
    log.info(
        "GenoHoption prior %s: %d token pairs over %d tokens (%d with neighbours)",
        config.graph,
        graph.n_edges,
        n,
        int(np.count_nonzero(np.diff(graph.indptr))),
    )
    return graph


def save_token_graph(path: str | Path, graph: TokenGraph) -> None:
    """Write a token graph to ``.npz`` atomically (byte-deterministic)."""
    import json

    from geneattn.io.atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            indptr=graph.indptr,
            indices=graph.indices,
            vocabulary=np.zeros(0, dtype=str) if graph.vocabulary is None else graph.vocabulary,
            config=np.str_(json.dumps(graph.config.params(), sort_keys=True)),
        )


def load_token_graph(path: str | Path) -> TokenGraph:
    """Read a token graph written by :func:`save_token_graph`."""
    import json

    from geneattn.io.npz import read_npz_arrays

    names = ("indptr", "indices", "vocabulary", "config")
    arrays = read_npz_arrays(Path(path), names, "a token graph")
    try:
        config = GenoHoptionConfig.from_params(json.loads(str(arrays["config"])))
        vocabulary = arrays["vocabulary"] if arrays["vocabulary"].size else None
        return TokenGraph(arrays["indptr"], arrays["indices"], config, vocabulary)
    except (ValueError, TypeError, InputError) as err:
        raise InputError(f"not a token graph ({err})", path) from None


def edges_per_cell(cells: TokenizedCells, graph: TokenGraph, *, n_threads: int = 1) -> np.ndarray:
    """Edges of each cell's Seq2Graph (self-loops included), int64 ``(n_cells,)``."""
    from geneattn import _kernels

    tokens = np.ascontiguousarray(cells.tokens)
    if tokens.dtype not in (np.int32, np.int64):
        tokens = tokens.astype(np.int64)
    return _kernels.seq2graph_edges(
        tokens,
        np.ascontiguousarray(cells.offsets, dtype=np.int64),
        graph.indptr,
        graph.indices,
        n_threads=n_threads,
    )

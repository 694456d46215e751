"""The prior gene graph of the scKGBERT K-encoder, and its neighbourhood embeddings.

A prior graph is a symmetric gene x gene matrix of confidences in ``[0, 1]`` (STRING-like
protein-protein interactions). :class:`~geneattn.ScKGBERTInterface` keeps it in
``_kg_adjacency``: a dense ``(n_genes, n_genes)`` array for the seed's random graph of small
vocabularies, or a :class:`scipy.sparse.csr_matrix` for a real prior
(:func:`load_prior_graph`), which holds a 20,000-gene vocabulary with 500,000 edges in a few
megabytes.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from geneattn.errors import InputError

#: Vocabularies up to this size keep the seed's random graph as a dense array (the seed's
#: contract); larger ones get the same graph as a CSR matrix.
DENSE_LIMIT = 4096


def random_prior_graph(rng: np.random.Generator, n_genes: int) -> np.ndarray | sp.csr_matrix:
    """Draw the seed's random knowledge graph (seed 000, section 6.2).

    ``min(5 * n_genes, n_genes * (n_genes - 1) // 2)`` draws of a pair ``i, j`` (each
    ``rng.integers(0, n_genes)``); when ``i != j`` a confidence ``rng.uniform(0.15, 1.0)`` is
    drawn and set on both ``(i, j)`` and ``(j, i)``, a later draw of the same pair
    overwriting an earlier one.

    Parameters
    ----------
    rng
        The generator, advanced by exactly the draws above.
    n_genes
        Vocabulary size.

    Returns
    -------
    np.ndarray | scipy.sparse.csr_matrix
        float64 ``(n_genes, n_genes)``: dense up to :data:`DENSE_LIMIT` genes, CSR above.
    """
    n_edges = min(n_genes * 5, n_genes * (n_genes - 1) // 2)
    edges: dict[tuple[int, int], float] = {}
    for _ in range(n_edges):
        i = int(rng.integers(0, n_genes))
        j = int(rng.integers(0, n_genes))
        if i != j:
            edges[(i, j) if i < j else (j, i)] = float(rng.uniform(0.15, 1.0))
    if edges:
        pairs = np.array(list(edges), dtype=np.int64)
        conf = np.array(list(edges.values()), dtype=np.float64)
    else:
        pairs = np.empty((0, 2), dtype=np.int64)
        conf = np.empty(0, dtype=np.float64)
    rows = np.concatenate([pairs[:, 0], pairs[:, 1]])
    cols = np.concatenate([pairs[:, 1], pairs[:, 0]])
    vals = np.concatenate([conf, conf])
    if n_genes <= DENSE_LIMIT:
        dense = np.zeros((n_genes, n_genes), dtype=np.float64)
        dense[rows, cols] = vals
        return dense
    return sp.csr_matrix((vals, (rows, cols)), shape=(n_genes, n_genes))


def load_prior_graph(
    path: str | os.PathLike[str],
    genes: Sequence[str],
    *,
    min_confidence: float = 0.0,
) -> sp.csr_matrix:
    """Read a gene-gene confidence table into a symmetric CSR matrix over ``genes``.

    The file is tab-separated with the two gene names and a confidence in its first three
    columns (``gene_a gene_b confidence``, as ``resources/ppi/h_sapiens.tsv``); a first line
    whose third field is not a number is taken as a header. Pairs naming a gene outside
    ``genes``, self-pairs and confidences ``<= min_confidence`` are left out; a pair listed
    more than once (in either order) keeps its largest confidence.

    Parameters
    ----------
    path
        The table.
    genes
        The vocabulary: row/column ``g`` of the result is ``genes[g]``. Must be unique.
    min_confidence
        Edges at or below this confidence are dropped.

    Returns
    -------
    scipy.sparse.csr_matrix
        float64 ``(len(genes), len(genes))``, symmetric, sorted indices, no explicit zeros.

    Raises
    ------
    InputError
        Missing file, a row with fewer than three columns, a confidence that is not a finite
        number, or duplicated names in ``genes``.
    """
    index: dict[str, int] = {}
    for g, name in enumerate(genes):
        if name in index:
            raise InputError(f"genes: {name!r} appears more than once")
        index[name] = g
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    try:
        fh = open(path, encoding="utf-8", newline="")
    except OSError as err:
        raise InputError(f"cannot read the prior graph ({err.strerror})", path) from err
    with fh:
        for lineno, rec in enumerate(csv.reader(fh, delimiter="\t"), start=1):
            if not rec or (len(rec) == 1 and not rec[0].strip()):
                continue
            if len(rec) < 3:
                raise InputError(f"line {lineno}: expected gene_a, gene_b, confidence", path)
            try:
                conf = float(rec[2])
            except ValueError:
                if lineno == 1:
                    continue  # header
                raise InputError(
                    f"line {lineno}: confidence {rec[2]!r} is not a number", path
                ) from None
            if not np.isfinite(conf):
                raise InputError(f"line {lineno}: confidence {rec[2]!r} is not finite", path)
            i, j = index.get(rec[0]), index.get(rec[1])
            if i is None or j is None or i == j or conf <= min_confidence:
                continue
            rows.append(i)
            cols.append(j)
            vals.append(conf)
    r = np.array(rows + cols, dtype=np.int64)
    c = np.array(cols + rows, dtype=np.int64)
    v = np.array(vals + vals, dtype=np.float64)
    # keep the largest confidence of each (row, col): sort by (row, col, conf), take the last
    order = np.lexsort((v, c, r))
    r, c, v = r[order], c[order], v[order]
    last = np.ones(r.size, dtype=bool)
    if r.size:
        last[:-1] = (r[1:] != r[:-1]) | (c[1:] != c[:-1])
    n = len(index)
    graph = sp.csr_matrix((v[last], (r[last], c[last])), shape=(n, n))
    graph.sort_indices()
    return graph


def _graph_rows(adjacency: np.ndarray | sp.spmatrix | sp.sparray, genes: np.ndarray | None):
    """The rows ``genes`` (all rows when None) of a dense or sparse graph, as CSR arrays."""
    if sp.issparse(adjacency):
        a = sp.csr_matrix(adjacency)
        sub = a if genes is None else a[genes]
    else:
        dense = np.asarray(adjacency, dtype=np.float64)
        if dense.ndim != 2 or dense.shape[0] != dense.shape[1]:
            raise ValueError(f"the prior graph must be square, got shape {dense.shape}")
        sub = sp.csr_matrix(dense if genes is None else dense[genes])
    sub = sp.csr_matrix(sub, dtype=np.float64)
    sub.sum_duplicates()
    return (
        np.ascontiguousarray(sub.indptr, dtype=np.int64),
        np.ascontiguousarray(sub.indices, dtype=np.int32),
        np.ascontiguousarray(sub.data, dtype=np.float64),
        sub.shape,
    )


def neighbour_embeddings(
    adjacency: np.ndarray | sp.spmatrix | sp.sparray,
    embeddings: np.ndarray,
    genes: np.ndarray | None = None,
    *,
    n_threads: int = 1,
) -> np.ndarray:
    """Confidence-weighted mean of each gene's neighbour embeddings (the K-encoder input).

    ``h_g = sum_j w_j e_j`` over the genes ``j`` with ``adjacency[g, j] > 0``, with
    ``w_j = adjacency[g, j] / (sum of those confidences + 1e-30)``; a gene without such a
    neighbour keeps its own embedding ``e_g``. Computed by the Rust kernel.

    Parameters
    ----------
    adjacency
        Dense or scipy-sparse ``(n_genes, n_genes)`` confidences.
    embeddings
        ``(n_genes, d)`` gene embeddings.
    genes
        The genes (rows) wanted, in order; None for all of them (the whole table).
    n_threads
        Rayon threads.

    Returns
    -------
    np.ndarray
        float64 ``(len(genes), d)`` (``(n_genes, d)`` when ``genes`` is None).
    """
    from geneattn import _kernels

    emb = np.ascontiguousarray(embeddings, dtype=np.float64)
    sel = None if genes is None else np.asarray(genes, dtype=np.int64)
    indptr, indices, data, shape = _graph_rows(adjacency, sel)
    if shape[1] != emb.shape[0]:
        raise ValueError(
            f"the prior graph has {shape[1]} columns but there are {emb.shape[0]} embeddings"
        )
    return _kernels.neighbour_embeddings(
        indptr, indices, data, emb, row_genes=sel, n_threads=n_threads
    )

"""scKGBERT interface: S- and K-encoders with Gaussian attention, fusion, gene importance.

Seed 000, sections 1.2 and 6.2 (Li et al. 2025, Genome Biology 26:402). The attention and
the prior-graph aggregation run in the Rust kernels of :mod:`geneattn._kernels`. The
interface is weight-agnostic: every method reads ``_gene_embeddings``, ``_kg_adjacency``,
``_w_q``, ``_w_k`` and ``_w_v`` when it is called, so trained weights or a real prior graph
can be assigned after construction (``_kg_adjacency`` may be dense or scipy-sparse).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from geneattn.encoding import rank_value_encode
from geneattn.models.geneformer import _as, _compute_dtype, _f64, _token_array, rank_tokens_batch
from geneattn.models.knowledge import load_prior_graph, neighbour_embeddings, random_prior_graph


@dataclass
class ScKGBERTInterface:
    """Knowledge-enhanced dual encoder with Gaussian attention.

    Parameters
    ----------
    d_model
        Embedding width.
    n_genes
        Gene vocabulary size.
    sigma
        Bandwidth of the Gaussian attention.
    seed
        Seed of the weight initialisation.

    Notes
    -----
    ``__post_init__`` draws from ``np.random.default_rng(seed)`` in this order:
    ``_gene_embeddings ~ N(0, 0.02) (n_genes, d)``, the random prior graph
    (:func:`geneattn.models.knowledge.random_prior_graph`; dense up to 4096 genes, CSR above),
    ``_w_q``, ``_w_k``, ``_w_v ~ N(0, 0.02) (d, d)`` and ``_cls_embedding ~ N(0, 0.02) (d,)``.

    A real prior replaces the random graph: :meth:`with_prior` reads a gene-gene TSV, or
    assign any dense or scipy-sparse ``(n_genes, n_genes)`` matrix to ``_kg_adjacency``.

    ``n_threads`` (not a dataclass field; default 1) is the number of rayon threads the
    kernels use; set it on the instance. Results do not depend on it.
    """

    d_model: int = 64
    n_genes: int = 2000
    sigma: float = 1.0
    seed: int = 42

    def __post_init__(self) -> None:
        """Draw the weights and the random prior graph from ``seed``."""
        rng = np.random.default_rng(self.seed)
        d = self.d_model
        self._gene_embeddings = rng.normal(0.0, 0.02, (self.n_genes, d))
        self._kg_adjacency: np.ndarray | sp.csr_matrix = random_prior_graph(rng, self.n_genes)
        self._w_q = rng.normal(0.0, 0.02, (d, d))
        self._w_k = rng.normal(0.0, 0.02, (d, d))
        self._w_v = rng.normal(0.0, 0.02, (d, d))
        self._cls_embedding = rng.normal(0.0, 0.02, d)
        self.n_threads = 1

    @classmethod
    def with_prior(
        cls,
        prior: str | os.PathLike[str] | np.ndarray | sp.spmatrix | sp.sparray,
        genes: Sequence[str],
        *,
        d_model: int = 64,
        sigma: float = 1.0,
        seed: int = 42,
        min_confidence: float = 0.0,
    ) -> ScKGBERTInterface:
        """A model over the vocabulary ``genes`` whose K-encoder uses a real prior graph.

        The weights are those of ``cls(d_model, len(genes), sigma, seed)``; only
        ``_kg_adjacency`` is replaced, by the sparse graph of
        :func:`geneattn.models.knowledge.load_prior_graph` when ``prior`` is a path, or by
        ``prior`` itself when it is a matrix.

        Parameters
        ----------
        prior
            TSV path (``gene_a gene_b confidence``, e.g. ``resources/ppi/h_sapiens.tsv``)
            or a ``(len(genes), len(genes))`` matrix.
        genes
            Gene symbols; token ``g`` is ``genes[g]``.
        d_model, sigma, seed
            As for the constructor.
        min_confidence
            Edges at or below this confidence are dropped (paths only).

        Returns
        -------
        ScKGBERTInterface
        """
        model = cls(d_model=d_model, n_genes=len(genes), sigma=sigma, seed=seed)
        if isinstance(prior, str | os.PathLike):
            model._kg_adjacency = load_prior_graph(prior, genes, min_confidence=min_confidence)
        else:
            shape = prior.shape
            if shape != (len(genes), len(genes)):
                raise ValueError(f"prior must be {len(genes)} x {len(genes)}, got {shape}")
            model._kg_adjacency = prior
        return model

    def _tokens(self, expression: np.ndarray) -> np.ndarray:
        ranked = rank_value_encode(expression)
        return ranked[ranked < self.n_genes]

    def gaussian_attention(
        self,
        queries: np.ndarray,
        keys: np.ndarray,
        values: np.ndarray,
    ) -> np.ndarray:
        """Gaussian attention with bandwidth ``self.sigma`` (Rust kernel).

        Parameters
        ----------
        queries
            ``(n, d)``.
        keys
            ``(m, d)``.
        values
            ``(m, dv)``.

        Returns
        -------
        np.ndarray
            ``(n, dv)``: ``softmax_j(-|q_i - k_j|^2 / (2 sigma^2)) @ values``.
        """
        from geneattn import _kernels

        return _kernels.gaussian_attention(
            _f64(queries), _f64(keys), _f64(values), self.sigma, n_threads=self.n_threads
        )

    def _attend_pool(self, tokens: np.ndarray) -> np.ndarray:
        q, k, v = tokens @ self._w_q, tokens @ self._w_k, tokens @ self._w_v
        return self.gaussian_attention(q, k, v).mean(axis=0)

    def encode_expression(self, expression: np.ndarray) -> np.ndarray:
        """S-encoder cell embedding.

        Tokens ``e_i / (i + 1)`` of the ranked vocabulary genes, Gaussian self-attention,
        mean over tokens.

        Returns
        -------
        np.ndarray
            ``(d_model,)``; zeros when no vocabulary gene is expressed.
        """
        valid = self._tokens(expression)
        if valid.size == 0:
            return np.zeros(self.d_model)
        scale = 1.0 / (np.arange(valid.size, dtype=np.float64) + 1.0)
        return self._attend_pool(self._gene_embeddings[valid] * scale[:, np.newaxis])

    def encode_with_knowledge(self, expression: np.ndarray) -> np.ndarray:
        """Fused embedding ``(z_S + z_K) / 2``.

        The K-encoder attends over each expressed gene's confidence-weighted mean neighbour
        embedding in ``_kg_adjacency`` (its own embedding when it has no neighbour).

        Returns
        -------
        np.ndarray
            ``(d_model,)``; the S-encoder embedding (zeros) when no vocabulary gene is
            expressed.
        """
        s_emb = self.encode_expression(expression)
        valid = self._tokens(expression)
        if valid.size == 0:
            return s_emb
        h = neighbour_embeddings(
            self._kg_adjacency, self._gene_embeddings, valid, n_threads=self.n_threads
        )
        return (s_emb + self._attend_pool(h)) / 2.0

    def predict_cell_type(
        self,
        expression: np.ndarray,
        prototypes: np.ndarray,
        labels: list[str],
    ) -> str:
        """Label of the prototype nearest (L2) to the cell's fused embedding.

        Parameters
        ----------
        expression
            ``(n_genes,)`` expression of the query cell.
        prototypes
            ``(n_types, d_model)`` mean embeddings per cell type.
        labels
            Cell type names, in the order of ``prototypes``.

        Returns
        -------
        str
        """
        emb = self.encode_with_knowledge(expression)
        dists = np.linalg.norm(np.asarray(prototypes) - emb, axis=-1)
        return labels[int(np.argmin(dists))]

    def gene_importance(self, expression: np.ndarray) -> np.ndarray:
        """Column sums of the Gaussian weights between the expressed genes.

        Queries and keys are the *unscaled* token embeddings projected by ``_w_q`` and
        ``_w_k``.

        Returns
        -------
        np.ndarray
            ``(n_genes,)``; 0 for genes that are not expressed.
        """
        from geneattn import _kernels

        valid = self._tokens(expression)
        importance = np.zeros(self.n_genes)
        if valid.size == 0:
            return importance
        tokens = self._gene_embeddings[valid]
        w = _kernels.gaussian_weights(
            _f64(tokens @ self._w_q), _f64(tokens @ self._w_k), self.sigma, n_threads=self.n_threads
        )
        importance[valid] = w.sum(axis=0)
        return importance

    def tokenise_batch(
        self, matrix: np.ndarray | sp.spmatrix | sp.sparray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Ranked vocabulary genes of every row of a cell x gene matrix, as ragged arrays.

        Returns
        -------
        tuple[np.ndarray, np.ndarray]
            int64 ``tokens`` and ``offsets`` (``n_cells + 1``); row ``c`` is what the
            single-cell methods rank.
        """
        return rank_tokens_batch(matrix, self.n_genes)

    def encode_batch(
        self,
        tokens: np.ndarray,
        offsets: np.ndarray,
        *,
        knowledge: bool = True,
        n_threads: int | None = None,
        precision: str = "float64",
    ) -> np.ndarray:
        """Embed many cells in one kernel call per encoder.

        Parameters
        ----------
        tokens
            int32 or int64 ranked gene ids ``< n_genes`` of all cells, concatenated.
        offsets
            int64, ``n_cells + 1``: cell ``c`` holds ``tokens[offsets[c]:offsets[c + 1]]``.
        knowledge
            True for :meth:`encode_with_knowledge`, False for :meth:`encode_expression`.
        n_threads
            Rayon threads; None uses ``self.n_threads``.
        precision
            ``"float64"`` (default): equal to looping the single-cell method up to float64
            round-off. ``"float32"``: the attention runs in float32, about twice as fast,
            with errors of order 1e-6 relative to the embedding's scale (not the seed's
            numerics; for throughput-bound pipelines).

        Returns
        -------
        np.ndarray
            float64 ``(n_cells, d_model)``; zero rows for cells without tokens.
        """
        from geneattn import _kernels

        dtype = _compute_dtype(precision)
        threads = self.n_threads if n_threads is None else n_threads
        toks = _token_array(tokens)
        offs = np.ascontiguousarray(offsets, dtype=np.int64)
        emb = _f64(self._gene_embeddings)
        w = tuple(_as(a, dtype) for a in (self._w_q, self._w_k, self._w_v))
        z_s = _kernels.gaussian_encode_cells(
            toks, offs, _as(emb, dtype), *w, self.sigma, rank_scale=True, n_threads=threads
        )
        if not knowledge:
            return _as(z_s, np.float64)
        table = neighbour_embeddings(self._kg_adjacency, emb, n_threads=threads)
        z_k = _kernels.gaussian_encode_cells(
            toks, offs, _as(table, dtype), *w, self.sigma, rank_scale=False, n_threads=threads
        )
        return (_as(z_s, np.float64) + _as(z_k, np.float64)) / 2.0

    def encode_matrix(
        self,
        matrix: np.ndarray | sp.spmatrix | sp.sparray,
        *,
        knowledge: bool = True,
        n_threads: int | None = None,
        precision: str = "float64",
    ) -> np.ndarray:
        """:meth:`encode_batch` of every row of a cell x gene matrix, ``(n_cells, d_model)``."""
        tokens, offsets = self.tokenise_batch(matrix)
        return self.encode_batch(
            tokens, offsets, knowledge=knowledge, n_threads=n_threads, precision=precision
        )

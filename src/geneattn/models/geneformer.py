"""Geneformer interface: rank-value tokens, multi-head attention, masked gene prediction.

Seed 000, sections 1.3 and 6.3 (Theodoris et al. 2023, Nature 619). The attention runs in
the Rust kernels of :mod:`geneattn._kernels`; everything else is numpy. The interface is
weight-agnostic: every method reads ``_gene_embeddings``, ``_w_q``, ``_w_k``, ``_w_v``,
``_w_o`` and ``_mlm_head`` when it is called, so trained weights can be assigned after
construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from geneattn.encoding import rank_value_encode

_EPS = 1e-10


def _as(a: np.ndarray, dtype: type[np.floating]) -> np.ndarray:
    """``a`` as a C-contiguous array of ``dtype``, copied only when it must be."""
    return np.ascontiguousarray(a, dtype=dtype)


def _f64(a: np.ndarray) -> np.ndarray:
    return _as(a, np.float64)


def _compute_dtype(precision: str) -> type[np.floating]:
    """The kernel dtype of a batch method's ``precision`` argument."""
    dtypes = {"float64": np.float64, "float32": np.float32}
    if precision not in dtypes:
        raise ValueError(f"precision must be 'float64' or 'float32', got {precision!r}")
    return dtypes[precision]


def rank_tokens_batch(
    matrix: np.ndarray | sp.spmatrix | sp.sparray,
    n_genes: int,
    global_medians: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rank-value tokens of every row (cell) of a cell x gene matrix, as ragged arrays.

    Row ``c`` gives exactly ``rank_value_encode(matrix[c], global_medians)`` restricted to
    genes ``< n_genes``: expressed genes (value ``> 0``) by descending weighted value, ties
    by ascending gene index.

    Parameters
    ----------
    matrix
        ``(n_cells, n_columns)`` dense array or scipy sparse matrix.
    n_genes
        Vocabulary size; columns at or past it are dropped after ranking.
    global_medians
        Corpus median per column, or None for uniform weighting.

    Returns
    -------
    tuple[np.ndarray, np.ndarray]
        ``tokens`` (int64) and ``offsets`` (int64, ``n_cells + 1``): cell ``c`` holds
        ``tokens[offsets[c]:offsets[c + 1]]``.
    """
    med = None if global_medians is None else np.asarray(global_medians, dtype=np.float64)
    per_cell: list[np.ndarray] = []
    if sp.issparse(matrix):
        x = sp.csr_matrix(matrix, dtype=np.float64, copy=True)
        x.sum_duplicates()
        x.sort_indices()
        for c in range(x.shape[0]):
            lo, hi = x.indptr[c], x.indptr[c + 1]
            idx, val = x.indices[lo:hi], x.data[lo:hi]
            keep = val > 0
            idx, val = idx[keep].astype(np.int64), val[keep]
            weighted = val if med is None else val * (1.0 / (med[idx] + _EPS))
            ranked = idx[np.argsort(-weighted, kind="stable")]
            per_cell.append(ranked[ranked < n_genes])
    else:
        dense = np.asarray(matrix, dtype=np.float64)
        if dense.ndim != 2:
            raise ValueError(f"matrix must be 2-D (cells x genes), got shape {dense.shape}")
        for row in dense:
            ranked = rank_value_encode(row, med)
            per_cell.append(ranked[ranked < n_genes])
    offsets = np.zeros(len(per_cell) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([t.size for t in per_cell])
    tokens = np.concatenate(per_cell) if per_cell else np.empty(0, dtype=np.int64)
    return tokens.astype(np.int64), offsets


@dataclass
class GeneformerInterface:
    """Rank-value tokenisation, multi-head self-attention and masked gene prediction.

    Parameters
    ----------
    d_model
        Embedding width.
    n_genes
        Gene vocabulary size.
    n_heads
        Attention heads; head ``h`` uses columns ``h*dh..(h+1)*dh`` of the single ``d x d``
        projections, ``dh = d_model // n_heads``.
    mask_ratio
        Fraction of tokens masked by :meth:`mask_tokens` (at least one).
    seed
        Seed of the weight initialisation.

    Notes
    -----
    ``__post_init__`` draws from ``np.random.default_rng(seed)``, in this order and all
    ``N(0, 0.02)``: ``_gene_embeddings (n_genes, d)``, ``_w_q``, ``_w_k``, ``_w_v``, ``_w_o``
    ``(d, d)`` and ``_mlm_head (n_genes, d)``.

    ``n_threads`` (not a dataclass field; default 1) is the number of rayon threads the
    kernels use; set it on the instance. Results do not depend on it.
    """

    d_model: int = 256
    n_genes: int = 2000
    n_heads: int = 4
    mask_ratio: float = 0.15
    seed: int = 42

    def __post_init__(self) -> None:
        """Draw the weights from ``seed`` (see the class notes for the order)."""
        rng = np.random.default_rng(self.seed)
        d = self.d_model
        self._gene_embeddings = rng.normal(0.0, 0.02, (self.n_genes, d))
        self._w_q = rng.normal(0.0, 0.02, (d, d))
        self._w_k = rng.normal(0.0, 0.02, (d, d))
        self._w_v = rng.normal(0.0, 0.02, (d, d))
        self._w_o = rng.normal(0.0, 0.02, (d, d))
        self._mlm_head = rng.normal(0.0, 0.02, (self.n_genes, d))
        self.n_threads = 1

    def tokenise(
        self,
        expression: np.ndarray,
        global_medians: np.ndarray | None = None,
    ) -> np.ndarray:
        """Rank-value tokens of one cell, restricted to the vocabulary.

        Parameters
        ----------
        expression
            ``(n_genes,)`` raw counts or normalised expression.
        global_medians
            Corpus median per gene, or None for uniform weighting.

        Returns
        -------
        np.ndarray
            int64 gene ids ``< n_genes``, highest weighted expression first.
        """
        ranked = rank_value_encode(expression, global_medians)
        return ranked[ranked < self.n_genes]

    def mask_tokens(
        self,
        token_ids: np.ndarray,
        rng_seed: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mask ``max(1, floor(mask_ratio * n))`` random positions.

        Positions come from ``np.random.default_rng(rng_seed or self.seed).choice(n, size,
        replace=False)``.

        Parameters
        ----------
        token_ids
            ``(n,)`` token ids, ``n >= 1``.
        rng_seed
            Seed of the mask; None uses ``self.seed``.

        Returns
        -------
        tuple[np.ndarray, np.ndarray]
            The ids with ``-1`` at masked positions, and the boolean mask.

        Raises
        ------
        ValueError
            Empty ``token_ids``, or more positions to mask than tokens.
        """
        ids = np.asarray(token_ids)
        n = ids.size
        if n == 0:
            raise ValueError("cannot mask an empty token sequence")
        rng = np.random.default_rng(rng_seed if rng_seed is not None else self.seed)
        n_mask = max(1, int(n * self.mask_ratio))
        if n_mask > n:
            raise ValueError(f"mask_ratio {self.mask_ratio} asks for {n_mask} of {n} tokens")
        mask = np.zeros(n, dtype=bool)
        mask[rng.choice(n, size=n_mask, replace=False)] = True
        masked = ids.astype(np.int64, copy=True)
        masked[mask] = -1
        return masked, mask

    def _heads(self, x: np.ndarray) -> np.ndarray:
        """Concatenated heads before ``W_O`` (Rust kernel)."""
        from geneattn import _kernels

        return _kernels.multi_head_attention(
            _f64(x),
            _f64(self._w_q),
            _f64(self._w_k),
            _f64(self._w_v),
            self.n_heads,
            n_threads=self.n_threads,
        )

    def multi_head_attention(self, x: np.ndarray) -> np.ndarray:
        """Multi-head self-attention ``[head_1; ...; head_H] W_O``.

        Parameters
        ----------
        x
            ``(seq_len, d)`` token representations.

        Returns
        -------
        np.ndarray
            ``(seq_len, d)`` attended representations.
        """
        return self._heads(x) @ self._w_o

    def encode_cell(
        self,
        expression: np.ndarray,
        global_medians: np.ndarray | None = None,
    ) -> np.ndarray:
        """Mean over tokens of the attended representations.

        Returns
        -------
        np.ndarray
            ``(d_model,)``; zeros when no vocabulary gene is expressed.
        """
        tokens = self.tokenise(expression, global_medians)
        if tokens.size == 0:
            return np.zeros(self.d_model)
        return self.multi_head_attention(self._gene_embeddings[tokens]).mean(axis=0)

    def predict_masked_genes(
        self,
        expression: np.ndarray,
        global_medians: np.ndarray | None = None,
        rng_seed: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mask tokens, attend over the rest, and predict the masked genes.

        Masked positions get zero vectors; the attended representation at each masked
        position goes through the MLM head (``logits = h @ _mlm_head.T``) and the prediction
        is the argmax.

        Returns
        -------
        tuple[np.ndarray, np.ndarray, np.ndarray]
            The boolean mask ``(n,)``, the true int64 ids and the predicted int64 ids at the
            masked positions; three empty arrays when fewer than 2 tokens.
        """
        tokens = self.tokenise(expression, global_medians)
        if tokens.size < 2:
            return (
                np.array([], dtype=bool),
                np.array([], dtype=np.int64),
                np.array([], dtype=np.int64),
            )
        masked, mask = self.mask_tokens(tokens, rng_seed)
        x = np.zeros((tokens.size, self.d_model))
        keep = masked >= 0
        x[keep] = self._gene_embeddings[masked[keep]]
        logits = self.multi_head_attention(x)[mask] @ self._mlm_head.T
        return mask, tokens[mask], np.argmax(logits, axis=-1).astype(np.int64)

    def gene_network_attention(
        self,
        expression: np.ndarray,
        global_medians: np.ndarray | None = None,
    ) -> np.ndarray:
        """Head-averaged attention weights between the cell's tokens.

        Returns
        -------
        np.ndarray
            ``(n, n)``, rows summing to 1; ``np.array([[]])`` when fewer than 2 tokens.
        """
        from geneattn import _kernels

        tokens = self.tokenise(expression, global_medians)
        if tokens.size < 2:
            return np.array([[]])
        return _kernels.multi_head_weights(
            _f64(self._gene_embeddings[tokens]),
            _f64(self._w_q),
            _f64(self._w_k),
            self.n_heads,
            n_threads=self.n_threads,
        )

    def tokenise_batch(
        self,
        matrix: np.ndarray | sp.spmatrix | sp.sparray,
        global_medians: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`tokenise` of every row of a cell x gene matrix, as ragged arrays.

        Returns
        -------
        tuple[np.ndarray, np.ndarray]
            int64 ``tokens`` and ``offsets`` (``n_cells + 1``).
        """
        return rank_tokens_batch(matrix, self.n_genes, global_medians)

    def encode_batch(
        self,
        tokens: np.ndarray,
        offsets: np.ndarray,
        *,
        n_threads: int | None = None,
        precision: str = "float64",
    ) -> np.ndarray:
        """:meth:`encode_cell` of many cells in one kernel call.

        Parameters
        ----------
        tokens
            int32 or int64 token ids ``< n_genes`` of all cells, concatenated.
        offsets
            int64, ``n_cells + 1``: cell ``c`` holds ``tokens[offsets[c]:offsets[c + 1]]``.
        n_threads
            Rayon threads; None uses ``self.n_threads``.
        precision
            ``"float64"`` (default) or ``"float32"`` attention; see
            :meth:`ScKGBERTInterface.encode_batch`.

        Returns
        -------
        np.ndarray
            float64 ``(n_cells, d_model)``; zero rows for cells without tokens. With
            float64, equal to looping :meth:`encode_cell` up to float round-off (mean
            pooling is applied before ``W_O``, which is linear).
        """
        from geneattn import _kernels

        dtype = _compute_dtype(precision)
        pooled = _kernels.mha_encode_cells(
            _token_array(tokens),
            np.ascontiguousarray(offsets, dtype=np.int64),
            *(_as(a, dtype) for a in (self._gene_embeddings, self._w_q, self._w_k, self._w_v)),
            self.n_heads,
            n_threads=self.n_threads if n_threads is None else n_threads,
        )
        return _f64(pooled) @ self._w_o

    def encode_matrix(
        self,
        matrix: np.ndarray | sp.spmatrix | sp.sparray,
        global_medians: np.ndarray | None = None,
        *,
        n_threads: int | None = None,
        precision: str = "float64",
    ) -> np.ndarray:
        """:meth:`encode_cell` of every row of a cell x gene matrix, ``(n_cells, d_model)``."""
        tokens, offsets = self.tokenise_batch(matrix, global_medians)
        return self.encode_batch(tokens, offsets, n_threads=n_threads, precision=precision)


def _token_array(tokens: np.ndarray) -> np.ndarray:
    """Token ids as a contiguous int32/int64 array (other integer types become int64)."""
    t = np.asarray(tokens)
    if t.dtype not in (np.int32, np.int64):
        t = t.astype(np.int64)
    return np.ascontiguousarray(t)

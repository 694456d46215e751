"""Plain-numpy references of the attention kernels and the seed-000 encoders.

These follow the formulas of seed 000 line by line, vectorised with numpy and nothing else.
The tests compare the Rust kernels and the interfaces with them, and ``geneattn bench
kernels`` times them as the baseline. The model-level functions read a model's weight
attributes at call time, so they follow any weights assigned to it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from geneattn.encoding import rank_value_encode

if TYPE_CHECKING:
    from geneattn.models.geneformer import GeneformerInterface
    from geneattn.models.sckgbert import ScKGBERTInterface

_TINY = 1e-30


def squared_distances(q: np.ndarray, k: np.ndarray, *, exact: bool = False) -> np.ndarray:
    """``|q_i - k_j|^2`` for all pairs.

    With ``exact`` the differences are formed explicitly (``n x m x d`` memory, no
    cancellation); otherwise ``|q|^2 + |k|^2 - 2 q.k`` clamped at 0, as the seed's
    ``gaussian_attention``.
    """
    if exact:
        diff = q[:, np.newaxis, :] - k[np.newaxis, :, :]
        return np.einsum("ijk,ijk->ij", diff, diff)
    d2 = (q**2).sum(axis=-1, keepdims=True) + (k**2).sum(axis=-1, keepdims=True).T - 2.0 * q @ k.T
    return np.maximum(d2, 0.0)


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    """Max-subtracted softmax of each row with ``1e-30`` added to the denominator."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    w = np.exp(shifted)
    w /= w.sum(axis=-1, keepdims=True) + _TINY
    return w


def gaussian_weights(
    q: np.ndarray, k: np.ndarray, sigma: float, *, exact: bool = False
) -> np.ndarray:
    """Gaussian attention weights ``softmax_j(-|q_i - k_j|^2 / (2 sigma^2))``, ``(n, m)``."""
    return softmax_rows(-squared_distances(q, k, exact=exact) / (2.0 * sigma**2))


def gaussian_attention(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, sigma: float, *, exact: bool = False
) -> np.ndarray:
    """Gaussian attention output ``weights @ v``, ``(n, dv)``."""
    return gaussian_weights(q, k, sigma, exact=exact) @ v


def multi_head_attention(
    x: np.ndarray,
    w_q: np.ndarray,
    w_k: np.ndarray,
    w_v: np.ndarray,
    n_heads: int,
    value_weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Multi-head scaled dot-product self-attention, before ``W_O``.

    ``value_weights`` (one per row of ``x``) scales each token's value, as the study
    model's ``value_rank="log"`` does with ``ln((n + 1) / (i + 1))``.

    Returns
    -------
    tuple[np.ndarray, np.ndarray]
        The concatenated heads ``(n, d)`` (columns past ``n_heads * (d // n_heads)`` zero)
        and the head-averaged weights ``(n, n)``.
    """
    n, d = x.shape
    dh = d // n_heads
    q, k, v = x @ w_q, x @ w_k, x @ w_v
    if value_weights is not None:
        v = v * np.asarray(value_weights, dtype=v.dtype)[:, None]
    out = np.zeros((n, d), dtype=np.result_type(x, w_v))
    avg = np.zeros((n, n), dtype=out.dtype)
    for h in range(n_heads):
        cols = slice(h * dh, (h + 1) * dh)
        w = softmax_rows(q[:, cols] @ k[:, cols].T / math.sqrt(dh))
        out[:, cols] = w @ v[:, cols]
        avg += w
    return out, avg / n_heads


def neighbour_embeddings(
    adjacency: np.ndarray | sp.spmatrix | sp.sparray, embeddings: np.ndarray, genes: np.ndarray
) -> np.ndarray:
    """K-encoder inputs: the confidence-weighted mean of each gene's neighbour embeddings.

    Positive entries only, weights ``c / (sum c + 1e-30)``; a gene without a positive entry
    keeps its own embedding.
    """
    genes = np.asarray(genes, dtype=np.int64)
    if sp.issparse(adjacency):
        rows = sp.csr_matrix(adjacency, dtype=np.float64)[genes]
        rows.data = np.where(rows.data > 0, rows.data, 0.0)
        rows.eliminate_zeros()
        totals = np.asarray(rows.sum(axis=1)).ravel()
        has = np.diff(rows.indptr) > 0
        scaled = sp.diags(1.0 / (totals + _TINY)) @ rows
        h = np.asarray(scaled @ embeddings)
    else:
        rows = np.asarray(adjacency, dtype=np.float64)[genes]
        rows = np.where(rows > 0, rows, 0.0)
        has = (rows > 0).any(axis=1)
        h = (rows / (rows.sum(axis=1, keepdims=True) + _TINY)) @ embeddings
    h[~has] = embeddings[genes[~has]]
    return h


def _sckgbert_tokens(model: ScKGBERTInterface, expression: np.ndarray) -> np.ndarray:
    ranked = rank_value_encode(expression)
    return ranked[ranked < model.n_genes]


def _gaussian_pool(model: ScKGBERTInterface, tokens: np.ndarray) -> np.ndarray:
    q, k, v = tokens @ model._w_q, tokens @ model._w_k, tokens @ model._w_v
    return gaussian_attention(q, k, v, model.sigma).mean(axis=0)


def encode_expression(model: ScKGBERTInterface, expression: np.ndarray) -> np.ndarray:
    """S-encoder cell embedding (seed 000, 6.2 ``encode_expression``)."""
    valid = _sckgbert_tokens(model, expression)
    if valid.size == 0:
        return np.zeros(model.d_model)
    scale = 1.0 / (np.arange(valid.size, dtype=np.float64) + 1.0)
    return _gaussian_pool(model, model._gene_embeddings[valid] * scale[:, np.newaxis])


def encode_with_knowledge(model: ScKGBERTInterface, expression: np.ndarray) -> np.ndarray:
    """Fused S + K cell embedding (seed 000, 6.2 ``encode_with_knowledge``)."""
    s_emb = encode_expression(model, expression)
    valid = _sckgbert_tokens(model, expression)
    if valid.size == 0:
        return s_emb
    h = neighbour_embeddings(model._kg_adjacency, model._gene_embeddings, valid)
    return (s_emb + _gaussian_pool(model, h)) / 2.0


def gene_importance(model: ScKGBERTInterface, expression: np.ndarray) -> np.ndarray:
    """Column sums of the Gaussian weights over unscaled tokens (seed 000, 6.2)."""
    valid = _sckgbert_tokens(model, expression)
    importance = np.zeros(model.n_genes)
    if valid.size == 0:
        return importance
    tokens = model._gene_embeddings[valid]
    w = gaussian_weights(tokens @ model._w_q, tokens @ model._w_k, model.sigma, exact=True)
    importance[valid] = w.sum(axis=0)
    return importance


def mha_output(model: GeneformerInterface, x: np.ndarray) -> np.ndarray:
    """``MultiHead(x)`` including ``W_O`` (seed 000, 6.3 ``multi_head_attention``)."""
    concat, _ = multi_head_attention(x, model._w_q, model._w_k, model._w_v, model.n_heads)
    return concat @ model._w_o


def _geneformer_tokens(
    model: GeneformerInterface, expression: np.ndarray, medians: np.ndarray | None
) -> np.ndarray:
    ranked = rank_value_encode(expression, medians)
    return ranked[ranked < model.n_genes]


def encode_cell(
    model: GeneformerInterface, expression: np.ndarray, global_medians: np.ndarray | None = None
) -> np.ndarray:
    """Mean-pooled Geneformer cell embedding (seed 000, 6.3 ``encode_cell``)."""
    tokens = _geneformer_tokens(model, expression, global_medians)
    if tokens.size == 0:
        return np.zeros(model.d_model)
    return mha_output(model, model._gene_embeddings[tokens]).mean(axis=0)


def predict_masked_genes(
    model: GeneformerInterface,
    expression: np.ndarray,
    global_medians: np.ndarray | None = None,
    rng_seed: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MLM prediction at masked positions (seed 000, 6.3 ``predict_masked_genes``)."""
    tokens = _geneformer_tokens(model, expression, global_medians)
    if tokens.size < 2:
        return np.array([], dtype=bool), np.array([], dtype=np.int64), np.array([], dtype=np.int64)
    n = tokens.size
    rng = np.random.default_rng(rng_seed if rng_seed is not None else model.seed)
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, size=max(1, int(n * model.mask_ratio)), replace=False)] = True
    x = np.zeros((n, model.d_model))
    x[~mask] = model._gene_embeddings[tokens[~mask]]
    logits = mha_output(model, x)[mask] @ model._mlm_head.T
    return mask, tokens[mask], np.argmax(logits, axis=-1).astype(np.int64)


def gene_network_attention(
    model: GeneformerInterface, expression: np.ndarray, global_medians: np.ndarray | None = None
) -> np.ndarray:
    """Head-averaged attention weights (seed 000, 6.3 ``gene_network_attention``)."""
    tokens = _geneformer_tokens(model, expression, global_medians)
    if tokens.size < 2:
        return np.array([[]])
    x = model._gene_embeddings[tokens]
    _, avg = multi_head_attention(x, model._w_q, model._w_k, model._w_v, model.n_heads)
    return avg

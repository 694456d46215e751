"""Plain-numpy reference of the BERT encoder forward pass (one cell, no padding).

This is Hugging Face's ``BertModel`` forward pass written out with numpy, line by line:
the tests compare the Rust encoder (:func:`geneattn._kernels.bert_forward`) with it, and
``geneattn bench checkpoint`` times it as the baseline. It reads the same
:class:`~geneattn.models.bert_weights.BertWeights` as the kernel. :func:`add_attention` is the
matching reference of the fused aggregation (:func:`geneattn._kernels.bert_aggregate_cells`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import scipy.special

if TYPE_CHECKING:
    from geneattn.models.bert_weights import BertConfig, BertWeights


def activation(name: str, x: np.ndarray) -> np.ndarray:
    """The feed-forward activation ``name`` (a config's ``hidden_act``) of ``x``."""
    if name == "relu":
        return np.maximum(x, 0)
    if name == "gelu":
        return 0.5 * x * (1.0 + scipy.special.erf(x / math.sqrt(2.0)))
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        c = math.sqrt(2.0 / math.pi)
        return 0.5 * x * (1.0 + np.tanh(c * (x + 0.044715 * x**3)))
    if name in ("silu", "swish"):
        return x * scipy.special.expit(x)
    raise ValueError(f"unsupported hidden_act {name!r}")


def layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm over the last axis with the biased variance."""
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def softmax(x: np.ndarray) -> np.ndarray:
    """Max-subtracted softmax over the last axis."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def forward(
    ids: np.ndarray,
    weights: BertWeights,
    config: BertConfig,
    *,
    n_layers: int | None = None,
    dtype: type[np.floating] = np.float64,
    attentions: bool = True,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Hidden states and attention weights of one token sequence.

    Parameters
    ----------
    ids
        ``(n,)`` input ids, ``n <= max_position_embeddings``.
    weights
        The model's weights.
    config
        The model's configuration.
    n_layers
        Run only the first ``n_layers`` layers (None: all).
    dtype
        Arithmetic dtype (the weights are cast to it).
    attentions
        Keep the attention weights (else an empty list is returned for them).

    Returns
    -------
    tuple[list[np.ndarray], list[np.ndarray]]
        ``hidden_states``: ``n_layers + 1`` arrays ``(n, d)`` (0 = embedding output), and
        per layer the attention per head, ``(n_heads, n, n)``.
    """
    ids = np.asarray(ids, dtype=np.int64)
    n, d, h = ids.size, config.hidden_size, config.num_attention_heads
    dh = d // h
    eps = config.layer_norm_eps

    def f(a: np.ndarray) -> np.ndarray:
        return np.asarray(a, dtype=dtype)

    layers = weights.layers if n_layers is None else weights.layers[:n_layers]
    if n == 0:
        empty = np.zeros((0, d), dtype=dtype)
        return [empty] * (len(layers) + 1), [np.zeros((h, 0, 0), dtype)] * len(layers) * attentions
    x = f(weights.word[ids]) + f(weights.position[:n]) + f(weights.token_type)
    x = layer_norm(x, f(weights.emb_ln_w), f(weights.emb_ln_b), eps)
    hidden, atts = [x], []
    for lw in layers:
        qkv = x @ f(lw.qkv_w).T + f(lw.qkv_b)
        q, k, v = (qkv[:, j * d : (j + 1) * d].reshape(n, h, dh).swapaxes(0, 1) for j in range(3))
        probs = softmax(q @ k.transpose(0, 2, 1) / dtype(math.sqrt(dh)))
        ctx = (probs @ v).transpose(1, 0, 2).reshape(n, d)
        x = layer_norm(x + ctx @ f(lw.attn_out_w).T + f(lw.attn_out_b), *_ln(lw, "attn", f), eps)
        inter = activation(config.hidden_act, x @ f(lw.inter_w).T + f(lw.inter_b))
        x = layer_norm(x + inter @ f(lw.out_w).T + f(lw.out_b), *_ln(lw, "out", f), eps)
        hidden.append(x)
        if attentions:
            atts.append(probs)
    return hidden, atts


def _ln(lw: object, which: str, f) -> tuple[np.ndarray, np.ndarray]:
    return f(getattr(lw, f"{which}_ln_w")), f(getattr(lw, f"{which}_ln_b"))


def mean_pool(hidden: np.ndarray, skip_first: int = 0, skip_last: int = 0) -> np.ndarray:
    """Mean over the rows ``skip_first .. n - skip_last`` (zeros when there are none)."""
    rows = hidden[skip_first : hidden.shape[0] - skip_last]
    return rows.mean(axis=0) if rows.shape[0] else np.zeros(hidden.shape[1], hidden.dtype)


def add_attention(
    sums: np.ndarray, incoming: np.ndarray, attention: np.ndarray, genes: np.ndarray
) -> None:
    """Add one cell's attention to gene x gene sums, in place, by the definition.

    Parameters
    ----------
    sums, incoming
        float64 ``(G, G)`` and ``(G,)`` running sums.
    attention
        ``(n, n)`` attention of the cell (rows are queries).
    genes
        ``(n,)`` universe index of each position, -1 outside the universe.

    Notes
    -----
    ``sums[u_i, u_j] += attention[i, j]`` for positions ``i``, ``j`` of universe genes and
    ``incoming[u_j] += sum_i attention[i, j]`` over all query rows; repeated genes add up.
    """
    keep = np.flatnonzero(genes >= 0)
    u = genes[keep]
    np.add.at(sums, (u[:, None], u[None, :]), attention[np.ix_(keep, keep)])
    np.add.at(incoming, u, attention[:, keep].sum(axis=0, dtype=np.float64))

"""Plain-numpy reference of GenoHoption (seed 001): one cell, dense matrices, float64.

These follow the seed's equations with dense ``n x n`` matrices and nothing else, so the tests
can compare the Rust kernels (:func:`geneattn._kernels.genohoption_attention` and the
aggregation and encoder kernels) with them:

* Seq2Graph (:func:`seq2graph`): position ``i`` attends to ``j`` when the prior links token
  ``t_i`` to ``t_j`` (``t_i != t_j``; the prior's diagonal is ignored), and every position to
  itself (the authors' ``dgl.add_self_loop``);
* the sparse attention of eq. 4 (:func:`edge_softmax`): a softmax of ``q_i . k_j / sqrt(dh)``
  over the neighbours of ``i``; a row without neighbours is a self-loop (the node keeps its
  value);
* the diffusion matrix of eq. 5 with the coefficients of eqs. 6 and 7, truncated as the
  iterations of eqs. 8 and 10 leave it after ``K`` steps (eqs. 9 and 11), as a sum of matrix
  powers (:func:`diffusion_matrix`), never by iterating.

:func:`gn_attn_port` is a separate, literal port of the authors' ``GenoHoption/gn_attn.py``
(DGL): their edge list, edge softmax by destination node and their two loops, in their
order and with their coefficients, for the test that pins the kernels to the published
code.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from geneattn.testing.bert_reference import _ln, activation, layer_norm

if TYPE_CHECKING:
    from geneattn.models.bert_weights import BertConfig, BertWeights

__all__ = [
    "add_attention",
    "bert_forward",
    "coefficients",
    "diffusion_matrix",
    "edge_softmax",
    "genohoption_attention",
    "gn_attn_port",
    "module_sums",
    "seq2graph",
]


def seq2graph(tokens: np.ndarray, prior: sp.spmatrix) -> np.ndarray:
    """Dense adjacency among the positions of one cell.

    Parameters
    ----------
    tokens
        ``(n,)`` token ids of the cell.
    prior
        Token x token graph (CSR; only its pattern counts): row ``t`` lists the tokens ``t``
        attends to.

    Returns
    -------
    np.ndarray
        ``(n, n)`` bool: ``adj[i, j]`` when ``i`` attends to ``j``.
    """
    t = np.asarray(tokens, dtype=np.int64)
    p = sp.csr_matrix(prior)
    pattern = sp.csr_matrix((np.ones(p.indices.size), p.indices, p.indptr), shape=p.shape)
    adj = np.asarray(pattern[t][:, t].todense()) != 0
    adj &= t[:, None] != t[None, :]
    adj[np.diag_indices(t.size)] = True
    return adj


def edge_softmax(q: np.ndarray, k: np.ndarray, adj: np.ndarray) -> np.ndarray:
    """The sparse attention of eq. 4 for one head, as a dense matrix.

    Parameters
    ----------
    q, k
        ``(n, dh)`` queries and keys of the head.
    adj
        ``(n, n)`` bool adjacency; an empty row is taken as a self-loop.

    Returns
    -------
    np.ndarray
        ``(n, n)``: ``A[i, j] = softmax_j(q_i . k_j / sqrt(dh))`` over the neighbours ``j``.
    """
    dh = q.shape[1]
    adj = adj.copy()
    empty = ~adj.any(axis=1)
    adj[empty, np.flatnonzero(empty)] = True
    scores = np.where(adj, q @ k.T / math.sqrt(dh), -np.inf)
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def coefficients(diffusion: str, *, alpha: float, t: float, iterations: int) -> np.ndarray:
    """``theta_0 .. theta_K`` of the diffusion matrix ``K`` iterations compute.

    PPR (eqs. 6, 9): ``alpha (1 - alpha)^k`` for ``k < K`` and ``(1 - alpha)^K`` for ``k = K``;
    heat (eqs. 7, 11): ``e^(-t) t^k / k!`` for ``k <= K``.
    """
    k = np.arange(iterations + 1)
    if diffusion == "ppr":
        theta = alpha * (1.0 - alpha) ** k
        theta[-1] = (1.0 - alpha) ** iterations
        return theta
    if diffusion == "heat":
        return np.array([math.exp(-t) * t**j / math.factorial(j) for j in k])
    raise ValueError(f"diffusion must be 'ppr' or 'heat', got {diffusion!r}")


def diffusion_matrix(
    a: np.ndarray, diffusion: str, *, alpha: float = 0.25, t: float = 5.0, iterations: int = 6
) -> np.ndarray:
    """``sum_k theta_k A^k`` (eq. 5, truncated as eqs. 9 and 11) by matrix powers."""
    theta = coefficients(diffusion, alpha=alpha, t=t, iterations=iterations)
    out = np.zeros_like(a)
    power = np.eye(a.shape[0])
    for k, th in enumerate(theta):
        if k:
            power = power @ a
        out += th * power
    return out


def genohoption_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    adj: np.ndarray,
    n_heads: int,
    *,
    diffusion: str = "ppr",
    alpha: float = 0.25,
    t: float = 5.0,
    iterations: int = 6,
) -> tuple[np.ndarray, np.ndarray]:
    """GenoHoption attention of one cell.

    Parameters
    ----------
    q, k, v
        ``(n, d)`` projections; head ``h`` uses columns ``h * dh .. (h + 1) * dh`` with
        ``dh = d // n_heads``.
    adj
        ``(n, n)`` bool adjacency (e.g. :func:`seq2graph`).
    n_heads
        Number of heads.
    diffusion, alpha, t, iterations
        The diffusion and its parameters.

    Returns
    -------
    tuple[np.ndarray, np.ndarray]
        The heads' outputs side by side ``(n, d)`` (columns past ``n_heads * dh`` zero) and
        the diffusion matrices ``(n_heads, n, n)``.
    """
    n, d = q.shape
    dh = d // n_heads
    out = np.zeros((n, d))
    mats = np.zeros((n_heads, n, n))
    for h in range(n_heads):
        cols = slice(h * dh, (h + 1) * dh)
        a = edge_softmax(q[:, cols], k[:, cols], adj)
        mats[h] = diffusion_matrix(a, diffusion, alpha=alpha, t=t, iterations=iterations)
        out[:, cols] = mats[h] @ v[:, cols]
    return out, mats


def add_attention(
    sums: np.ndarray, incoming: np.ndarray, attention: np.ndarray, genes: np.ndarray
) -> None:
    """Add one cell's (effective) attention to gene x gene sums, in place, by the definition.

    ``sums[u_i, u_j] += attention[i, j]`` for positions ``i``, ``j`` of universe genes
    (``genes[i] >= 0``), ``incoming[u_j] += sum_i attention[i, j]`` over all positions.
    """
    keep = np.flatnonzero(genes >= 0)
    u = genes[keep]
    np.add.at(sums, (u[:, None], u[None, :]), attention[np.ix_(keep, keep)])
    np.add.at(incoming, u, attention[:, keep].sum(axis=0))


def module_sums(
    attention: np.ndarray, genes: np.ndarray, modules: np.ndarray, n_modules: int
) -> tuple[np.ndarray, np.ndarray]:
    """One cell's within-module attention and ordered pairs of distinct module genes.

    Parameters
    ----------
    attention
        ``(n, n)`` attention of the cell.
    genes
        ``(n,)`` universe index of each position (-1 outside).
    modules
        Module of each universe gene (-1: none).
    n_modules
        Number of modules.
    """
    sums = np.zeros(n_modules)
    pairs = np.zeros(n_modules, dtype=np.int64)
    mod = np.full(genes.shape, -1, dtype=np.int64)
    inside = genes >= 0
    mod[inside] = modules[genes[inside]]
    for m in range(n_modules):
        pos = np.flatnonzero(mod == m)
        same = (genes[pos][:, None] != genes[pos][None, :]).astype(float)
        sums[m] = (attention[np.ix_(pos, pos)] * same).sum()
        distinct = np.unique(genes[pos]).size
        pairs[m] = distinct * (distinct - 1)
    return sums, pairs


def bert_forward(
    ids: np.ndarray,
    weights: BertWeights,
    config: BertConfig,
    adj: np.ndarray,
    *,
    diffusion: str = "ppr",
    alpha: float = 0.25,
    t: float = 5.0,
    iterations: int = 6,
    n_layers: int | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A BERT encoder (:func:`geneattn.testing.bert_reference.forward`) with GenoHoption
    attention in every layer, float64.

    Returns
    -------
    tuple[list[np.ndarray], list[np.ndarray]]
        Hidden states ``0 .. n_layers`` (``(n, d)``) and per layer the diffusion matrices
        ``(n_heads, n, n)``.
    """
    ids = np.asarray(ids, dtype=np.int64)
    n, d, h = ids.size, config.hidden_size, config.num_attention_heads
    eps = config.layer_norm_eps

    def f(a: np.ndarray) -> np.ndarray:
        return np.asarray(a, dtype=np.float64)

    layers = weights.layers if n_layers is None else weights.layers[:n_layers]
    x = f(weights.word[ids]) + f(weights.position[:n]) + f(weights.token_type)
    x = layer_norm(x, f(weights.emb_ln_w), f(weights.emb_ln_b), eps)
    hidden, mats = [x], []
    for lw in layers:
        qkv = x @ f(lw.qkv_w).T + f(lw.qkv_b)
        q, k, v = (qkv[:, j * d : (j + 1) * d] for j in range(3))
        ctx, m = genohoption_attention(
            q, k, v, adj, h, diffusion=diffusion, alpha=alpha, t=t, iterations=iterations
        )
        x = layer_norm(x + ctx @ f(lw.attn_out_w).T + f(lw.attn_out_b), *_ln(lw, "attn", f), eps)
        inter = activation(config.hidden_act, x @ f(lw.inter_w).T + f(lw.inter_b))
        x = layer_norm(x + inter @ f(lw.out_w).T + f(lw.out_b), *_ln(lw, "out", f), eps)
        hidden.append(x)
        mats.append(m)
    return hidden, mats


def gn_attn_port(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    src: np.ndarray,
    dst: np.ndarray,
    n_heads: int,
    *,
    diffusion_mode: int,
    alpha: float,
    temperature: float,
    iter_num: int,
) -> np.ndarray:
    """A numpy port of ``gn_self_attn.forward`` of the authors' ``GenoHoption/gn_attn.py``.

    One graph without padding, dropout off (evaluation). Their steps, in their order:
    queries divided by ``sqrt(head_dim)``; per edge ``u -> v`` the score ``k_u . q_v``
    (``fn.u_dot_v('k', 'q')``); ``edge_softmax`` over the edges into each node; then

    * ``diffusion_mode = 1`` (heat): ``h = e^(-t) v``, ``gather = h``, and for
      ``k in range(1, iter_num)``: ``h <- A h`` (``update_all(u_mul_e, sum)``),
      ``c *= t / k``, ``gather += c h``;
    * ``diffusion_mode = 0`` (PPR): ``h = v``, and ``iter_num`` times: ``h <- A h``, then
      ``h <- (1 - alpha) h + alpha v``.

    Parameters
    ----------
    q, k, v
        ``(n, d)`` projections (the three parts of their ``Wqkv`` output).
    src, dst
        Their DGL edge list (``dst`` attends to ``src``).
    n_heads
        Number of heads.
    diffusion_mode, alpha, temperature, iter_num
        Their configuration fields of the same names (``temperature`` is ``t``).

    Returns
    -------
    np.ndarray
        ``(n, d)``, the heads side by side (their ``attn_output``).
    """
    n, d = q.shape
    dh = d // n_heads
    q = q / math.sqrt(dh)
    qh, kh, vh = (x.reshape(n, n_heads, dh) for x in (q, k, v))
    score = np.einsum("ehd,ehd->eh", kh[src], qh[dst])
    # edge_softmax: normalise over the edges into each destination node
    top = np.full((n, n_heads), -np.inf)
    np.maximum.at(top, dst, score)
    e = np.exp(score - top[dst])
    total = np.zeros((n, n_heads))
    np.add.at(total, dst, e)
    a = e / total[dst]

    def update_all(h: np.ndarray) -> np.ndarray:
        out = np.zeros_like(h)
        np.add.at(out, dst, h[src] * a[:, :, None])
        return out

    if diffusion_mode:
        h = math.exp(-temperature) * vh
        gather = h
        t_power_k_fact = 1.0
        for step in range(1, iter_num):
            h = update_all(h)
            t_power_k_fact *= temperature / step
            gather = gather + t_power_k_fact * h
        h = gather
    else:
        h = vh
        for _ in range(iter_num):
            h = update_all(h)
            h = (1.0 - alpha) * h + alpha * vh
    return h.reshape(n, d)

"""Type stub of the compiled extension ``geneattn._kernels`` (Rust, pyo3).

Every function reads its numpy arguments in place: they must be C-contiguous and of the
stated dtype, or a ``TypeError``/``ValueError`` names the argument. Float arguments of one
call share a dtype, float32 or float64 (taken from the first of them), and results come in
that dtype. The GIL is released while a kernel runs, on a rayon pool of exactly
``n_threads`` threads; results do not depend on ``n_threads``.
"""

from __future__ import annotations

from typing import Literal, TypedDict, overload

import numpy as np

__version__: str

class GenoHoptionArg(TypedDict):
    """The ``genohoption`` argument: GenoHoption's prior and diffusion (seed 001).

    ``indptr`` (int64, ``n_tokens + 1``) and ``indices`` (int64): the prior over token ids
    as a CSR pattern, row ``t`` listing the tokens ``t`` attends to, one row per row of the
    token table (word embeddings). ``diffusion``: ``"ppr"`` (``V_k = (1 - alpha) A V_(k-1)
    + alpha V``) or ``"heat"`` (``e^(-t) sum_(k<=K) t^k / k! A^k V``); ``iterations`` is
    ``K``.
    """

    indptr: np.ndarray
    indices: np.ndarray
    diffusion: Literal["ppr", "heat"]
    alpha: float
    t: float
    iterations: int

def rank_encode_csr(
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    gene_token: np.ndarray,
    gene_median: np.ndarray,
    n_counts: np.ndarray,
    target_sum: float,
    max_len: int,
    n_threads: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Geneformer rank-value encoding of a cell x gene CSR matrix.

    ``indptr`` int64, ``indices`` int32, ``data`` float32/float64, ``gene_token`` int32
    (negative drops the column), ``gene_median`` float64, ``n_counts`` float64 per cell.
    Returns ``(tokens int32, offsets int64)``.
    """

@overload
def gaussian_attention(
    queries: np.ndarray,
    keys: np.ndarray,
    values: np.ndarray,
    sigma: float,
    *,
    return_weights: Literal[False] = ...,
    n_threads: int = ...,
) -> np.ndarray: ...
@overload
def gaussian_attention(
    queries: np.ndarray,
    keys: np.ndarray,
    values: np.ndarray,
    sigma: float,
    *,
    return_weights: Literal[True],
    n_threads: int = ...,
) -> tuple[np.ndarray, np.ndarray]: ...
def gaussian_weights(
    queries: np.ndarray, keys: np.ndarray, sigma: float, *, n_threads: int = ...
) -> np.ndarray:
    """Gaussian attention weights ``softmax_j(-|q_i - k_j|^2 / (2 sigma^2))``, ``(n, m)``."""

@overload
def multi_head_attention(
    x: np.ndarray,
    w_q: np.ndarray,
    w_k: np.ndarray,
    w_v: np.ndarray,
    n_heads: int,
    *,
    return_weights: Literal[False] = ...,
    n_threads: int = ...,
) -> np.ndarray: ...
@overload
def multi_head_attention(
    x: np.ndarray,
    w_q: np.ndarray,
    w_k: np.ndarray,
    w_v: np.ndarray,
    n_heads: int,
    *,
    return_weights: Literal[True],
    n_threads: int = ...,
) -> tuple[np.ndarray, np.ndarray]: ...
def multi_head_weights(
    x: np.ndarray, w_q: np.ndarray, w_k: np.ndarray, n_heads: int, *, n_threads: int = ...
) -> np.ndarray:
    """Head-averaged multi-head attention weights, ``(n, n)``, rows summing to 1."""

def gaussian_encode_cells(
    tokens: np.ndarray,
    offsets: np.ndarray,
    table: np.ndarray,
    w_q: np.ndarray,
    w_k: np.ndarray,
    w_v: np.ndarray,
    sigma: float,
    *,
    rank_scale: bool,
    n_threads: int = ...,
) -> np.ndarray:
    """Mean-pooled Gaussian self-attention of many cells, ``(n_cells, w_v.shape[1])``.

    ``tokens`` int32/int64 rows of ``table``, ``offsets`` int64 (``n_cells + 1``); token
    ``i`` of a cell is scaled by ``1 / (i + 1)`` when ``rank_scale``. Cells without tokens
    give zero rows.
    """

def mha_encode_cells(
    tokens: np.ndarray,
    offsets: np.ndarray,
    table: np.ndarray,
    w_q: np.ndarray,
    w_k: np.ndarray,
    w_v: np.ndarray,
    n_heads: int,
    *,
    rank_values: bool = ...,
    n_threads: int = ...,
) -> np.ndarray:
    """Mean-pooled concatenated heads (before ``W_O``) of many cells, ``(n_cells, d)``.

    With ``rank_values`` the value of the token at position ``i`` of a cell of ``n`` tokens
    is scaled by ``ln((n + 1) / (i + 1))`` (the attention weights are not).
    """

def neighbour_embeddings(
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    embeddings: np.ndarray,
    *,
    row_genes: np.ndarray | None = ...,
    n_threads: int = ...,
) -> np.ndarray:
    """Confidence-weighted mean neighbour embedding of each row of a gene x gene CSR graph.

    ``indptr`` int64, ``indices`` int32, ``data`` of the embeddings' dtype; positive entries
    only; a row without one keeps ``embeddings[row_genes[r]]`` (``embeddings[r]`` without
    ``row_genes``). Returns ``(n_rows, d)``.
    """

def mha_aggregate_cells(
    tokens: np.ndarray,
    offsets: np.ndarray,
    table: np.ndarray,
    w_q: np.ndarray,
    w_k: np.ndarray,
    n_heads: int,
    universe: np.ndarray,
    n_universe: int,
    *,
    n_threads: int = ...,
    sums: np.ndarray | None = ...,
    incoming: np.ndarray | None = ...,
) -> tuple[np.ndarray, np.ndarray]:
    """Head-averaged multi-head attention of many cells, summed into gene x gene arrays.

    ``universe`` int64 (one entry per row of ``table``): the universe index of each token
    in ``0 .. n_universe - 1``, or -1. Over cells, ``sums[u_i, u_j] += A[i, j]`` for pairs of
    universe tokens and ``incoming[u_j] += sum_i A[i, j]`` over all query rows. Returns
    ``(sums (G, G), incoming (G,))`` float64; given ``sums`` and ``incoming`` (writeable,
    float64, C-contiguous) are added into in place and returned. Bit-identical for any
    ``n_threads``, and adding cells in several calls equals one call.
    """

def mha_edit_effects(
    tokens: np.ndarray,
    offsets: np.ndarray,
    table: np.ndarray,
    w_q: np.ndarray,
    w_k: np.ndarray,
    w_v: np.ndarray,
    n_heads: int,
    edit_cell: np.ndarray,
    edit_remove: np.ndarray,
    edit_add: np.ndarray,
    edit_exclude: np.ndarray,
    *,
    rank_values: bool = ...,
    edit_move: np.ndarray | None = ...,
    n_threads: int = ...,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean-pooled concatenated heads (before ``W_O``) of each in-silico edit of a cell.

    With ``rank_values`` values are scaled by their rank weight (see ``mha_encode_cells``),
    an added key takes the first position's weight and ``edit_move`` (int64 per edit, -1:
    none) gives the key at ``edit_exclude`` the weight of its new position; the other
    tokens keep their original weights.

    ``table`` and projections float32 or float64 (the result has the table's dtype),
    ``tokens`` int32 or int64, ``offsets`` and edit arrays int64. Edits
    are sorted by ``edit_cell``; ``edit_remove`` and ``edit_exclude`` are positions in the
    cell or -1, ``edit_add`` a token id or -1. Returns ``(original, perturbed)``, each
    ``(n_edits, d)``: the original pools every row but ``exclude``, the perturbed every
    remaining row but ``exclude`` (never the added token's). One forward pass per cell, then
    ``O(n d)`` per edit; equal to recomputing the edited sequence up to round-off.
    """

def bert_forward(
    tokens: np.ndarray,
    offsets: np.ndarray,
    embeddings: list[np.ndarray],
    layers: list[list[np.ndarray]],
    n_heads: int,
    activation: str,
    layer_norm_eps: float,
    *,
    hidden_layers: list[int] = ...,
    pool_layer: int | None = ...,
    pool: Literal["mean", "first"] = ...,
    skip_first: int = ...,
    skip_last: int = ...,
    attention_layers: list[int] = ...,
    per_head: bool = ...,
    n_threads: int = ...,
    genohoption: GenoHoptionArg | None = ...,
) -> dict[str, object]:
    """BERT encoder (Hugging Face ``BertModel``) of many cells, float32, without padding.

    ``tokens`` int32/int64 input ids, ``offsets`` int64 (``n_cells + 1``). ``embeddings``:
    word ``(V, d)``, position ``(P, d)``, token type row 0 ``(d,)``, LayerNorm weight and
    bias; each of ``layers``: stacked query/key/value weight ``(3d, d)`` and bias, attention
    output weight ``(d, d)`` and bias, its LayerNorm weight and bias, intermediate weight
    ``(I, d)`` and bias, output weight ``(d, I)`` and bias, its LayerNorm weight and bias
    (``nn.Linear`` layout, all float32). Returns ``{"hidden": [(n_tokens, d)] per
    hidden_layers entry (0 = embedding output), "pooled": (n_cells, d) or None (mean over
    tokens skip_first .. n - skip_last, or the first token), "attention": [flat array] per
    attention_layers entry (cell c's (n_heads, n, n) or head-averaged (n, n) block at
    attention_offsets[c]:attention_offsets[c + 1]), "attention_offsets": int64}``.
    Bit-identical for any ``n_threads`` and any batching of the cells. Layers whose
    attention is not returned use the fused attention of :func:`flash_attention`; a layer in
    ``attention_layers`` computes its softmax matrices exactly. With ``genohoption`` every
    layer attends GenoHoption's way (Seq2Graph over the prior, edge softmax, diffusion) and
    the attention returned is each head's diffusion matrix.
    """

def linear(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None = ..., *, n_threads: int = ...
) -> np.ndarray:
    """``x @ w.T + b`` with the encoder's packed GEMM, float32.

    ``x`` ``(m, k)``, ``w`` ``(n, k)`` (``nn.Linear`` layout), ``b`` ``(n,)`` or None; returns
    ``(m, n)``. Bit-identical for any ``n_threads``.
    """

def flash_attention(
    queries: np.ndarray,
    keys: np.ndarray,
    values: np.ndarray,
    n_heads: int,
    *,
    scale: float | None = ...,
    n_threads: int = ...,
) -> np.ndarray:
    """Multi-head softmax attention with the encoder's fused kernel, float32.

    Head ``h`` (columns ``h * dh .. (h + 1) * dh``, ``dh = d / n_heads``) of row ``i`` is
    ``sum_j softmax_j(scale * q_ih . k_jh) v_jh``, computed tile by tile with an online
    softmax (no ``(n, m)`` matrix). ``queries`` ``(n, d)``, ``keys`` and ``values``
    ``(m, d)``; ``scale`` defaults to ``1 / sqrt(dh)``. Returns ``(n, d)``; rows without
    keys are zero. Bit-identical for any ``n_threads``.
    """

def mha_module_cells(
    tokens: np.ndarray,
    offsets: np.ndarray,
    table: np.ndarray,
    w_q: np.ndarray,
    w_k: np.ndarray,
    n_heads: int,
    universe: np.ndarray,
    modules: np.ndarray,
    n_modules: int,
    *,
    n_threads: int = ...,
) -> tuple[np.ndarray, np.ndarray]:
    """Within-module head-averaged attention of every cell.

    ``universe`` int64 (one entry per row of ``table``): the universe index of each token in
    ``0 .. len(modules) - 1``, or -1; ``modules`` int64: the module of each universe gene in
    ``0 .. n_modules - 1``, or -1. Returns ``(sums, pairs)``, ``(n_cells, n_modules)``
    float64 and int64: ``sums[c, k]`` is ``A[i, j]`` summed over positions ``i``, ``j`` of
    cell ``c`` holding distinct genes of module ``k``, ``pairs[c, k]`` the number of ordered
    pairs of distinct module-``k`` genes in the cell. Bit-identical for any ``n_threads``.
    """

def bert_aggregate_cells(
    tokens: np.ndarray,
    offsets: np.ndarray,
    embeddings: list[np.ndarray],
    layers: list[list[np.ndarray]],
    n_heads: int,
    activation: str,
    layer_norm_eps: float,
    layer: int,
    universe: np.ndarray,
    n_universe: int,
    *,
    heads: list[int] | None = ...,
    n_threads: int = ...,
    sums: np.ndarray | None = ...,
    incoming: np.ndarray | None = ...,
    genohoption: GenoHoptionArg | None = ...,
) -> tuple[np.ndarray, np.ndarray]:
    """One layer's attention of a BERT checkpoint, summed into gene x gene arrays.

    Parameters
    ----------
    tokens, offsets
        int32/int64 input ids and int64 offsets (``n_cells + 1``): cell ``c`` is
        ``tokens[offsets[c]:offsets[c + 1]]``, at most as long as the position table.
    embeddings, layers, n_heads, activation, layer_norm_eps
        The checkpoint, as :func:`bert_forward` takes it (float32 arrays).
    layer
        0-based encoder layer whose attention is aggregated; only the layers up to it are
        run, and of it only the query and key projections.
    universe
        int64, one entry per row of the word embeddings: the universe index of each token
        id in ``0 .. n_universe - 1``, or -1.
    n_universe
        Number of universe genes ``G``.
    heads
        Distinct heads averaged, 0-based; None for all of them.
    n_threads
        Rayon threads, one cell per thread.
    sums, incoming
        Running float64 ``(G, G)`` and ``(G,)`` arrays (writeable, C-contiguous) to add
        into in place, both or neither.
    genohoption
        GenoHoption in every layer (see :data:`GenoHoptionArg`); ``A`` is then the layer's
        effective multi-hop attention, each head's diffusion matrix.

    Returns
    -------
    tuple[np.ndarray, np.ndarray]
        ``(sums, incoming)`` float64, as :func:`mha_aggregate_cells` with ``A`` the softmax
        attention of ``layer`` averaged over ``heads``: ``sums[u_i, u_j] += A[i, j]`` for
        pairs of universe tokens, ``incoming[u_j] += sum_i A[i, j]`` over all query rows.
        Bit-identical for any ``n_threads`` and any split of the cells into calls.

    Raises
    ------
    ValueError
        A layer or head out of range, repeated or no heads, a universe of the wrong length
        or with entries outside ``-1 .. n_universe - 1``, sums of the wrong shape, or bad
        weights, tokens or offsets.
    TypeError
        An argument of the wrong dtype.
    """

def bert_module_cells(
    tokens: np.ndarray,
    offsets: np.ndarray,
    embeddings: list[np.ndarray],
    layers: list[list[np.ndarray]],
    n_heads: int,
    activation: str,
    layer_norm_eps: float,
    layer: int,
    universe: np.ndarray,
    modules: np.ndarray,
    n_modules: int,
    *,
    heads: list[int] | None = ...,
    n_threads: int = ...,
    genohoption: GenoHoptionArg | None = ...,
) -> tuple[np.ndarray, np.ndarray]:
    """Within-module attention of every cell, from one layer of a BERT checkpoint.

    Parameters
    ----------
    tokens, offsets, embeddings, layers, n_heads, activation, layer_norm_eps, layer, heads
        As :func:`bert_aggregate_cells`.
    universe
        int64, one entry per row of the word embeddings: the universe index of each token
        id in ``0 .. len(modules) - 1``, or -1.
    modules
        int64, the module of each universe gene in ``0 .. n_modules - 1``, or -1.
    n_modules
        Number of modules.
    n_threads
        Rayon threads, one cell per thread.
    genohoption
        As :func:`bert_aggregate_cells`.

    Returns
    -------
    tuple[np.ndarray, np.ndarray]
        ``(sums, pairs)``, ``(n_cells, n_modules)`` float64 and int64, as
        :func:`mha_module_cells` with the checkpoint's attention: ``sums[c, k]`` is
        ``A[i, j]`` summed over positions ``i``, ``j`` of cell ``c`` holding distinct genes
        of module ``k``, ``pairs[c, k]`` the number of ordered pairs of distinct module-``k``
        genes in the cell. Bit-identical for any ``n_threads``.

    Raises
    ------
    ValueError
        As :func:`bert_aggregate_cells`, and for modules of the wrong length or with
        entries outside ``-1 .. n_modules - 1``.
    TypeError
        An argument of the wrong dtype.
    """

@overload
def genohoption_attention(
    queries: np.ndarray,
    keys: np.ndarray,
    values: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    n_heads: int,
    *,
    diffusion: Literal["ppr", "heat"] = ...,
    alpha: float = ...,
    t: float = ...,
    iterations: int = ...,
    return_weights: Literal[False] = ...,
    n_threads: int = ...,
) -> np.ndarray: ...
@overload
def genohoption_attention(
    queries: np.ndarray,
    keys: np.ndarray,
    values: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    n_heads: int,
    *,
    diffusion: Literal["ppr", "heat"] = ...,
    alpha: float = ...,
    t: float = ...,
    iterations: int = ...,
    return_weights: Literal[True],
    n_threads: int = ...,
) -> tuple[np.ndarray, np.ndarray]: ...
def seq2graph(
    tokens: np.ndarray, prior_indptr: np.ndarray, prior_indices: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Seq2Graph of one cell: ``(indptr, indices)`` int64 among its positions.

    The prior over token ids (int64 CSR pattern, row ``t`` the tokens ``t`` attends to)
    restricted to the cell's int32/int64 ``tokens``, with a self-loop on every position; the
    prior's diagonal is ignored. Row ``i`` lists the positions ``i`` attends to, ascending.
    """

def seq2graph_edges(
    tokens: np.ndarray,
    offsets: np.ndarray,
    prior_indptr: np.ndarray,
    prior_indices: np.ndarray,
    *,
    n_threads: int = ...,
) -> np.ndarray:
    """Edges of each cell's Seq2Graph (self-loops included), int64 ``(n_cells,)``."""

def mha_genohoption_encode_cells(
    tokens: np.ndarray,
    offsets: np.ndarray,
    table: np.ndarray,
    w_q: np.ndarray,
    w_k: np.ndarray,
    w_v: np.ndarray,
    n_heads: int,
    genohoption: GenoHoptionArg,
    *,
    rank_values: bool = ...,
    n_threads: int = ...,
) -> np.ndarray:
    """:func:`mha_encode_cells` with GenoHoption attention: per cell, Seq2Graph over the
    prior, edge softmax and diffusion per head, mean over positions of the concatenated
    heads (before ``W_O``), values rank-scaled with ``rank_values`` as there. ``(n_cells,
    d)``; zero rows for cells without tokens."""

def mha_genohoption_aggregate_cells(
    tokens: np.ndarray,
    offsets: np.ndarray,
    table: np.ndarray,
    w_q: np.ndarray,
    w_k: np.ndarray,
    n_heads: int,
    universe: np.ndarray,
    n_universe: int,
    genohoption: GenoHoptionArg,
    *,
    n_threads: int = ...,
    sums: np.ndarray | None = ...,
    incoming: np.ndarray | None = ...,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`mha_aggregate_cells` with GenoHoption's effective multi-hop attention: ``A``
    replaced by each head's diffusion matrix ``M``, averaged over heads
    (``sums[u_i, u_j] += M[i, j]``, ``incoming[u_j] += sum_i M[i, j]``). Bit-identical for
    any ``n_threads`` and any split of the cells into calls."""

def mha_genohoption_module_cells(
    tokens: np.ndarray,
    offsets: np.ndarray,
    table: np.ndarray,
    w_q: np.ndarray,
    w_k: np.ndarray,
    n_heads: int,
    universe: np.ndarray,
    modules: np.ndarray,
    n_modules: int,
    genohoption: GenoHoptionArg,
    *,
    n_threads: int = ...,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`mha_module_cells` with GenoHoption's effective multi-hop attention (as
    :func:`mha_genohoption_aggregate_cells`): ``(sums, pairs)``, ``(n_cells, n_modules)``."""

def mha_genohoption_edit_effects(
    tokens: np.ndarray,
    offsets: np.ndarray,
    table: np.ndarray,
    w_q: np.ndarray,
    w_k: np.ndarray,
    w_v: np.ndarray,
    n_heads: int,
    edit_cell: np.ndarray,
    edit_remove: np.ndarray,
    edit_add: np.ndarray,
    edit_exclude: np.ndarray,
    genohoption: GenoHoptionArg,
    *,
    rank_values: bool = ...,
    edit_move: np.ndarray | None = ...,
    n_threads: int = ...,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`mha_edit_effects` with GenoHoption attention: ``(original, perturbed)``,
    ``(n_edits, d)`` each, before ``W_O``. An edit that removes or adds a key (or, with
    ``rank_values``, moves one: ``edit_move``) re-runs the cell's GenoHoption attention over
    the edited tokens (the added token last; ``O(E K d)`` per edit); one that does none of
    these leaves the embedding unchanged."""

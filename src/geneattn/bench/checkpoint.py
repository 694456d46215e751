"""``geneattn bench checkpoint``: the BERT encoder of pretrained checkpoints, cells per second.

A random model of Geneformer V1's size (6 layers x 256 hidden x 4 heads, feed-forward 512,
ReLU, 25,426 tokens, 2,048 positions) encodes a few cells of 2,048 tokens each (random
distinct gene ids): every layer runs and the last one is mean-pooled, as
:meth:`~geneattn.models.bert.BertEncoder.encode_batch` with ``emb_layer=0`` does. The
same cells go through

- the numpy reference forward pass (:func:`geneattn.testing.bert_reference.forward`, float32, one
  cell at a time, numpy's BLAS limited to ``--threads`` with :mod:`threadpoolctl`), and
- PyTorch on the CPU (``transformers.BertModel`` with the same weights, eager attention,
  ``torch.set_num_threads(--threads)``, one cell at a time, no padding) when ``torch`` and
  ``transformers`` can be imported; the project's venv has neither, so that row is skipped
  and the notes say why.

A second row times the fused aggregation of the last layer's attention over a gene
universe (:meth:`~geneattn.models.bert.BertEncoder.attention_sums`: the sums of the
workflow's attention stage, no per-cell matrix in Python, the last layer's feed-forward not
run) against :meth:`~geneattn.models.bert.BertEncoder.iter_attention` with each cell's
``n x n`` matrix added into the same sums with numpy
(:func:`geneattn.testing.bert_reference.add_attention`). The universe is
:data:`UNIVERSE_GENES` random genes of the cells (the workflow's default size).

Results are checked against the reference before anything is timed. Ours and each
reference run in alternating rounds (at most three) so that load from other processes on a
shared machine falls on both alike; medians are reported. The note gives the encoder's
GFLOP/s next to numpy's float32 matmul rate measured in the same run with the same threads.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from geneattn.bench import Row, Timing
from geneattn.bench.kernels import SETTLE_S, _check, _numpy_matmul_gflops
from geneattn.models.bert import BertEncoder
from geneattn.models.bert_weights import BertConfig, BertWeights
from geneattn.testing import bert_reference

NAME = "checkpoint"
HELP = "BERT encoder of a Geneformer V1-size checkpoint against numpy (and PyTorch if present)"

#: Geneformer V1's shape.
V1 = {
    "vocab_size": 25_426,
    "hidden_size": 256,
    "num_hidden_layers": 6,
    "num_attention_heads": 4,
    "intermediate_size": 512,
    "max_position_embeddings": 2048,
    "hidden_act": "relu",
}


#: Genes of the aggregation row's universe (the workflow's default ``universe_max_genes``).
UNIVERSE_GENES = 2000


def encoder_flops(config: BertConfig, n: int) -> float:
    """Matmul floating-point operations of one cell of ``n`` tokens through every layer."""
    d, i = config.hidden_size, config.intermediate_size
    per_layer = 2 * n * d * 3 * d + 2 * 2 * n * n * d + 2 * n * d * d + 2 * 2 * n * d * i
    return float(config.num_hidden_layers * per_layer)


def _cells(n_cells: int, n: int, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    genes = np.arange(2, vocab)
    ids = np.concatenate([rng.choice(genes, n, replace=False) for _ in range(n_cells)])
    return ids.astype(np.int32), np.arange(n_cells + 1, dtype=np.int64) * n


def _universe(ids: np.ndarray, vocab: int) -> tuple[np.ndarray, int]:
    """Universe index of every token id: :data:`UNIVERSE_GENES` random genes of the cells."""
    members = np.random.default_rng(1).permutation(np.unique(ids))[:UNIVERSE_GENES]
    universe = np.full(vocab, -1, dtype=np.int64)
    universe[members] = np.arange(members.size)
    return universe, members.size


def _streamed_sums(
    model: BertEncoder,
    ids: np.ndarray,
    offsets: np.ndarray,
    universe: np.ndarray,
    g: int,
    threads: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The last layer's attention from :meth:`iter_attention`, added up with numpy."""
    sums, incoming = np.zeros((g, g)), np.zeros(g)
    for c, a in model.iter_attention(ids, offsets, layer=-1, n_threads=threads):
        genes = universe[ids[offsets[c] : offsets[c + 1]]]
        bert_reference.add_attention(sums, incoming, a, genes)
    return sums, incoming


def _torch_encoder(model: BertEncoder, threads: int):
    """A function running ``transformers.BertModel`` on one cell, or the reason there is none."""
    try:
        import torch
        import transformers
    except ImportError as err:
        return None, f"{err.name} cannot be imported here (the project venv has no PyTorch)"
    c = model.config
    config = transformers.BertConfig(**{k: getattr(c, k) for k in V1}, type_vocab_size=1)
    config._attn_implementation = "eager"
    bert = transformers.BertModel(config, add_pooling_layer=False).eval()
    w = model.weights
    d = c.hidden_size
    state = {
        "embeddings.word_embeddings.weight": w.word,
        "embeddings.position_embeddings.weight": w.position,
        "embeddings.token_type_embeddings.weight": w.token_type[None, :],
        "embeddings.LayerNorm.weight": w.emb_ln_w,
        "embeddings.LayerNorm.bias": w.emb_ln_b,
    }
    for i, lw in enumerate(w.layers):
        p = f"encoder.layer.{i}."
        for j, name in enumerate(("query", "key", "value")):
            state[f"{p}attention.self.{name}.weight"] = lw.qkv_w[j * d : (j + 1) * d]
            state[f"{p}attention.self.{name}.bias"] = lw.qkv_b[j * d : (j + 1) * d]
        state |= {
            f"{p}attention.output.dense.weight": lw.attn_out_w,
            f"{p}attention.output.dense.bias": lw.attn_out_b,
            f"{p}attention.output.LayerNorm.weight": lw.attn_ln_w,
            f"{p}attention.output.LayerNorm.bias": lw.attn_ln_b,
            f"{p}intermediate.dense.weight": lw.inter_w,
            f"{p}intermediate.dense.bias": lw.inter_b,
            f"{p}output.dense.weight": lw.out_w,
            f"{p}output.dense.bias": lw.out_b,
            f"{p}output.LayerNorm.weight": lw.out_ln_w,
            f"{p}output.LayerNorm.bias": lw.out_ln_b,
        }
    bert.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=False)
    torch.set_num_threads(threads)

    def encode(ids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for c in range(offsets.size - 1):
                x = torch.from_numpy(ids[offsets[c] : offsets[c + 1]].astype(np.int64))[None]
                out.append(bert(input_ids=x).last_hidden_state[0].mean(dim=0).numpy())
        return np.stack(out)

    return encode, f"torch {torch.__version__}, transformers {transformers.__version__}"


def _rounds(fns: list, rounds: int) -> list[Timing]:
    """Each function once per round, in turn, after a pause; the first call is a warm-up."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for t, fn in zip(times, fns, strict=True):
            time.sleep(SETTLE_S)
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
    return [Timing(tuple(t)) for t in times]


def run(args: argparse.Namespace) -> list[Row]:
    """Time the encoder against the numpy reference (and PyTorch when it is installed)."""
    config = BertConfig(**V1)
    model = BertEncoder(config, BertWeights.random(config, seed=0), version="V1")
    n_cells, n = (2, 512) if args.quick else (4, 2048)
    ids, offsets = _cells(n_cells, n, config.vocab_size)
    threads = args.threads

    def ours() -> np.ndarray:
        return model.encode_batch(ids, offsets, emb_layer=0, n_threads=threads)

    def reference() -> np.ndarray:
        with threadpool_limits(limits=threads, user_api="blas"):
            return np.stack(
                [
                    bert_reference.mean_pool(
                        bert_reference.forward(
                            ids[offsets[c] : offsets[c + 1]],
                            model.weights,
                            config,
                            dtype=np.float32,
                            attentions=False,
                        )[0][-1]
                    )
                    for c in range(n_cells)
                ]
            )

    exact = bert_reference.mean_pool(
        bert_reference.forward(ids[: offsets[1]], model.weights, config, attentions=False)[0][-1]
    )
    err = _check(ours()[0], exact, 1e-4, "checkpoint encoder")
    universe, g = _universe(ids, config.vocab_size)

    def fused() -> tuple[np.ndarray, np.ndarray]:
        return model.attention_sums(ids, offsets, universe, g, n_threads=threads)

    def streamed() -> tuple[np.ndarray, np.ndarray]:
        with threadpool_limits(limits=threads, user_api="blas"):
            return _streamed_sums(model, ids, offsets, universe, g, threads)

    agg_err = max(
        _check(a, b, 1e-5, "fused attention sums") for a, b in zip(fused(), streamed(), strict=True)
    )
    per_cell = np.mean(
        [(universe[ids[offsets[c] : offsets[c + 1]]] >= 0).sum() for c in range(n_cells)]
    )
    torch_fn, torch_note = _torch_encoder(model, threads)
    fns = [ours, reference, fused, streamed]
    if torch_fn is not None:
        _check(torch_fn(ids, offsets)[0], exact, 1e-4, "PyTorch BertModel")
        fns.append(lambda: torch_fn(ids, offsets))
    timings = _rounds(fns, rounds=max(1, min(args.repeats, 3)))
    with threadpool_limits(limits=threads, user_api="blas"):
        matmul = _numpy_matmul_gflops(args.repeats)
    t_ours = timings[0].median
    flops = encoder_flops(config, n) * n_cells
    label = (
        f"Geneformer V1-size encoder (6 x 256, 4 heads, FFN 512, random weights), "
        f"{n_cells} cells x {n} tokens, float32, all layers + mean pooling"
    )
    common = (
        f"{threads} threads each; ours {n_cells / t_ours:.2f} cells/s, "
        f"{flops / t_ours / 1e9:.0f} GFLOP/s ({flops / n_cells / 1e9:.1f} GFLOP of matmul "
        f"work per cell), numpy float32 2048^3 matmul on this machine {matmul:.0f} GFLOP/s"
    )
    rows = [
        Row(
            NAME,
            label,
            t_ours,
            "numpy reference forward pass",
            timings[1].median,
            target=2.0,
            extra=(
                f"{common}; numpy {n_cells / timings[1].median:.2f} cells/s (BLAS limited to "
                f"{threads}); max error vs float64 {err:.1e}"
                + ("" if torch_fn else f"; PyTorch row skipped: {torch_note}")
            ),
        ),
        Row(
            NAME,
            f"  same cells: last layer's attention summed over {g:,} universe genes (fused)",
            timings[2].median,
            "iter_attention + numpy np.add.at",
            timings[3].median,
            target=None,
            extra=(
                f"{threads} threads each; {per_cell:.0f} universe genes per cell on average; "
                f"float64 sums, largest difference {agg_err:.1e} of the largest sum"
            ),
        ),
    ]
    if torch_fn is not None:
        rows.append(
            Row(
                NAME,
                "  same cells",
                t_ours,
                "PyTorch BertModel (CPU)",
                timings[4].median,
                target=None,
                extra=f"{torch_note}; {n_cells / timings[4].median:.2f} cells/s",
            )
        )
    return rows

"""``geneattn bench genohoption``: GenoHoption's graph-sparse attention against dense attention.

The same cells go through the same Rust kernels twice, once with dense softmax attention
(the reference column) and once in GenoHoption mode (ours: Seq2Graph over the real PPI
prior, edge softmax, 6 PPR steps, the seed's defaults), so the ratio is what the attention
mode alone changes:

* a Geneformer V1-size encoder (6 layers x 256 hidden x 4 heads, FFN 512, random weights,
  25,426 tokens, 2,048 positions; :data:`geneattn.bench.checkpoint.V1`) on the real demo
  cells that fill the 2,048 positions, every layer + mean pooling, then the last layer's
  attention summed over a 2,000-gene universe (the workflow's attention stage; GenoHoption's
  sums are of the effective multi-hop attention);
* the study model (``d_model`` 64, 4 heads) on every demo cell: embeddings, attention sums
  over the 2,000 most variable-by-frequency genes, and in-silico deletion of 20 genes.

Edges per cell are those of the real PPI (the pinned scNET ``h_sapiens`` edge list) among the
cell's genes, self-loops included; the rows' notes give them, with the peak memory of each
mode's encoder call measured in a fresh process (``VmHWM`` minus the resident size before
the call). Before anything is timed, GenoHoption's encoder is checked against the dense
numpy reference of the seed's equations (:mod:`geneattn.testing.genohoption`) on the first
256 tokens of a cell. Ours and the reference alternate in rounds (at most three); medians.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

import numpy as np

from geneattn.bench import Row
from geneattn.bench.checkpoint import V1, _rounds, _timed
from geneattn.bench.kernels import _check

NAME = "genohoption"
HELP = "GenoHoption (PPI prior, PPR) against dense attention on the same demo cells and kernels"

#: Universe size of the attention sums (the workflow's default ``universe_max_genes``).
UNIVERSE_GENES = 2000

#: Genes deleted in the perturbation row.
N_PERTURBED = 20

#: Child process of the memory measurement: one encoder call in one mode.
_CHILD = """
import json, sys
import numpy as np
from geneattn.bench.genohoption import _v1_model
d, mode, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
z = np.load(f"{d}/inputs.npz")
model = _v1_model()
if mode == "genohoption":
    model.genohoption = {"indptr": z["indptr"], "indices": z["indices"], "diffusion": "ppr",
                         "alpha": 0.25, "t": 5.0, "iterations": 6}
def vm(key):
    line = next(s for s in open("/proc/self/status") if s.startswith(key))
    return int(line.split()[1])
base = vm("VmRSS:")
model.encode_batch(z["ids"], z["offsets"], emb_layer=0, n_threads=threads)
print(json.dumps({"base_kib": base, "peak_kib": vm("VmHWM:")}))
"""


def _v1_model():
    """The random Geneformer V1-size encoder (seed 0)."""
    from geneattn.models.bert import BertEncoder
    from geneattn.models.bert_weights import BertConfig, BertWeights

    config = BertConfig(**V1)
    return BertEncoder(config, BertWeights.random(config, seed=0), version="V1")


def demo_inputs():
    """Every demo cell tokenized (V1 dictionary), the study model, the PPI prior over the
    token ids, or None when the resources are missing."""
    from geneattn.bench.demo_study import RESOURCES, load_demo_study
    from geneattn.models.genohoption import GenoHoptionConfig, build_token_graph
    from geneattn.resources.load import load_ppi
    from geneattn.universe import symbols_for

    demo = load_demo_study(also_needed=("ppi/h_sapiens.tsv",))
    if demo is None:
        return None
    cells, model, names, var_names = demo.cells, demo.model, demo.names, demo.var_names
    vocabulary = np.asarray(cells.vocabulary).astype(str)
    graph = build_token_graph(
        GenoHoptionConfig(),
        vocabulary,
        symbols=symbols_for(vocabulary, names, preferred=set(var_names.astype(str))),
        ppi_edges=load_ppi(RESOURCES / "ppi/h_sapiens.tsv"),
    )
    return cells, model, graph


def _peak_memory(ids, offsets, graph, threads: int) -> dict[str, float]:
    """MiB added by one encoder call in each mode, each in a fresh process."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="geneattn-bench-") as tmp:
        np.savez(
            f"{tmp}/inputs.npz", ids=ids, offsets=offsets, indptr=graph.indptr,
            indices=graph.indices,
        )  # fmt: skip
        for mode in ("dense", "genohoption"):
            cmd = [sys.executable, "-c", _CHILD, tmp, mode, str(threads)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode:
                raise RuntimeError(f"memory child failed: {done.stderr.strip()}")
            r = json.loads(done.stdout)
            out[mode] = (r["peak_kib"] - r["base_kib"]) / 1024
    return out


def _check_encoder(model, graph, ids: np.ndarray) -> float:
    """GenoHoption's encoder on the first 256 tokens of a cell against the numpy reference."""
    from geneattn.testing import genohoption as ref

    cut = ids[:256].astype(np.int64)
    model.genohoption = graph.kernel_arg()
    got = model.encode_batch(cut, np.array([0, cut.size]), emb_layer=0)[0]
    adj = ref.seq2graph(cut, graph.matrix())
    hidden, _ = ref.bert_forward(cut, model.weights, model.config, adj)
    return _check(got, hidden[-1].mean(axis=0), 1e-4, "GenoHoption encoder")


def _universe(cells, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """The :data:`UNIVERSE_GENES` most frequent genes (token ids) and their index array."""
    counts = np.bincount(cells.tokens, minlength=vocab)
    members = np.argsort(-counts, kind="stable")[:UNIVERSE_GENES]
    members = members[counts[members] > 0]
    index = np.full(vocab, -1, dtype=np.int64)
    index[members] = np.arange(members.size)
    return members, index


def _encoder_rows(args, cells, graph, threads: int) -> list[Row]:
    from geneattn import _kernels
    from geneattn.tokenize import subset_cells

    model = _v1_model()
    lengths = cells.lengths
    n_cells, n = (2, 512) if args.quick else (4, 2048)
    order = np.argsort(-lengths, kind="stable")[:n_cells]
    chosen = subset_cells(cells, order)
    keep = np.minimum(chosen.lengths, n)
    ids = np.concatenate([chosen.cell(c)[: keep[c]] for c in range(n_cells)]).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(keep)]).astype(np.int64)
    err = _check_encoder(model, graph, ids)
    edges = _kernels.seq2graph_edges(ids, offsets, graph.indptr, graph.indices)
    members, index = _universe(chosen, model.config.vocab_size)
    g = members.size
    arg = graph.kernel_arg()

    def run(mode, what):
        def call():
            model.genohoption = arg if mode == "genohoption" else None
            if what == "encode":
                return model.encode_batch(ids, offsets, emb_layer=0, n_threads=threads)
            return model.attention_sums(ids, offsets, index, g, n_threads=threads)

        return call

    fns = [run(m, w) for w in ("encode", "sums") for m in ("genohoption", "dense")]
    timings = _rounds([_timed(f) for f in fns], rounds=max(1, min(args.repeats, 3)))
    memory = _peak_memory(ids, offsets, graph, threads)
    per_cell = np.mean(
        [(index[ids[offsets[c] : offsets[c + 1]]] >= 0).sum() for c in range(n_cells)]
    )
    degree = edges / keep
    label = (
        f"V1-size encoder (6 x 256, 4 heads, random weights), {n_cells} demo cells x "
        f"{int(keep.min())}-{int(keep.max())} tokens, all layers + mean pooling"
    )
    return [
        Row(
            NAME,
            label,
            timings[0].median,
            "dense attention (same kernel)",
            timings[1].median,
            extra=(
                f"{threads} threads; PPI edges per cell (self-loops included) "
                f"{int(edges.min()):,}-{int(edges.max()):,}, "
                f"mean {degree.mean():.1f} per token, vs {int(keep.max()) ** 2:,} dense pairs; "
                f"peak memory of one call: GenoHoption {memory['genohoption']:.0f} MiB, "
                f"dense {memory['dense']:.0f} MiB; GenoHoption vs numpy reference on 256 "
                f"tokens: max error {err:.1e}"
            ),
        ),
        Row(
            NAME,
            f"  same cells: last layer's attention summed over {g:,} genes",
            timings[2].median,
            "dense attention (same kernel)",
            timings[3].median,
            extra=(
                f"{threads} threads; {per_cell:.0f} universe genes per cell; GenoHoption sums "
                f"its effective multi-hop attention (the diffusion matrix, O(E K m) per head)"
            ),
        ),
    ]


def _study_rows(args, cells, model, graph, threads: int) -> list[Row]:
    from geneattn.edits import plan_edits
    from geneattn.models.genohoption import edges_per_cell
    from geneattn.models.study import with_genohoption

    gh = with_genohoption(model, graph)
    vocab = model.gene_embeddings.shape[0]
    members, _ = _universe(cells, vocab)
    g = members.size
    frequent = np.argsort(-np.bincount(cells.tokens, minlength=vocab), kind="stable")
    plan = plan_edits(cells, frequent[: 5 if args.quick else N_PERTURBED].tolist(), "delete")

    def embed(m):
        return lambda: m.embed(cells, n_threads=threads)

    def sums(m):
        def call():
            s, inc = np.zeros((g, g)), np.zeros(g)
            m.add_attention_sums(cells, members, s, inc, n_threads=threads)
            return s

        return call

    def perturb(m):
        return lambda: m.edit_embeddings(cells, plan.cell, plan.token, "delete", n_threads=threads)

    fns = [f(m) for f in (embed, sums, perturb) for m in (gh, model)]
    timings = _rounds([_timed(f) for f in fns], rounds=max(1, min(args.repeats, 3)))
    edges = edges_per_cell(cells, graph, n_threads=threads)
    lengths = cells.lengths.astype(float)
    label = f"study model (d 64, 4 heads), {cells.n_cells} demo cells: embeddings"
    return [
        Row(
            NAME,
            label,
            timings[0].median,
            "dense attention (same model)",
            timings[1].median,
            extra=(
                f"{threads} threads; tokens per cell median {np.median(lengths):.0f} (max "
                f"{lengths.max():.0f}); PPI edges per cell median {np.median(edges):.0f}, "
                f"{np.median(edges / np.maximum(lengths, 1)):.1f} per token"
            ),
        ),
        Row(
            NAME,
            f"  same cells: attention summed over {g:,} genes",
            timings[2].median,
            "dense attention (same model)",
            timings[3].median,
        ),
        Row(
            NAME,
            f"  same cells: delete {np.unique(plan.token).size} genes ({len(plan.cell):,} edits)",
            timings[4].median,
            "dense attention (same model)",
            timings[5].median,
            extra=(
                "dense: one pass per cell + O(n d) per edit; GenoHoption re-runs the edited "
                "cell (O(E K d) per edit)"
            ),
        ),
    ]


def run(args: argparse.Namespace) -> list[Row]:
    """Time GenoHoption against dense attention on the same demo cells."""
    made = demo_inputs()
    if made is None:
        raise SystemExit("bench genohoption needs resources/ (run `geneattn fetch-resources`)")
    cells, model, graph = made
    threads = args.threads
    return _encoder_rows(args, cells, graph, threads) + _study_rows(
        args, cells, model, graph, threads
    )

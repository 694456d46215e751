"""``geneattn bench network``: attention -> gene x gene sums, fused kernel against Python.

The cells are resampled (with replacement, fixed seed) from the real demo study, tokenized
with :func:`geneattn.tokenize.tokenize_counts`; the model is the study-derived default
(:func:`geneattn.models.study.build_study_model`, ``d_model=64``, 4 heads) and the universe
the 2,000 most frequent genes present in at least 10 cells. Three rows:

* ours (``mha_aggregate_cells``) against a per-cell Python loop over gene pairs into a dict,
  in the style of ``aggregate_attentions`` in Barabasi-Lab/Geneformer-NetworkMedicine
  ``code/gf_tools.py``; the loop takes seconds per cell, so it runs on a few cells and its
  time is scaled per cell (the row says so);
* ours against vectorised numpy (per-cell attention, ``np.add.at`` into the sums), on a
  subset of the cells, likewise scaled;
* peak memory: ours on 1,000 and on 10,000 cells in fresh subprocesses that stream the
  tokens from disk in chunks; their peak RSS (``VmHWM``) is in the row's notes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from geneattn.bench import Row, time_call

NAME = "network"
HELP = "fused attention -> gene x gene sums against a Python loop and numpy"

N_CELLS = 1_000
LOOP_CELLS = 10
NUMPY_CELLS = 100
MEMORY_CELLS = (1_000, 10_000)

#: Child process of the memory row: streams cells from .npy files through the kernel.
_CHILD = """
import json, sys, time
import numpy as np
from geneattn import _kernels
d, n_cells, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
load = lambda name: np.load(f"{d}/{name}.npy")
offsets, table, w_q, w_k, index = (load(n) for n in ("offsets", "table", "w_q", "w_k", "index"))
meta = json.loads(open(f"{d}/meta.json").read())
g = meta["g"]
sums, incoming = np.zeros((g, g)), np.zeros(g)
t0 = time.perf_counter()
with open(f"{d}/tokens.bin", "rb") as fh:
    for c0 in range(0, n_cells, 1000):
        c1 = min(c0 + 1000, n_cells)
        a, b = int(offsets[c0]), int(offsets[c1])
        fh.seek(4 * a)
        tokens = np.fromfile(fh, dtype=np.int32, count=b - a)
        _kernels.mha_aggregate_cells(tokens, offsets[c0:c1 + 1] - a, table, w_q, w_k,
            meta["n_heads"], index, g, n_threads=threads, sums=sums, incoming=incoming)
seconds = time.perf_counter() - t0
# VmHWM belongs to this process image (ru_maxrss keeps the forking parent's peak)
status = open("/proc/self/status").read().splitlines()
rss = next(int(s.split()[1]) for s in status if s.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "maxrss_kib": rss, "total": float(sums.sum())}))
"""


def demo_study(n_cells: int, seed: int = 0):
    """Resampled demo cells, the study model and the universe.

    Parameters
    ----------
    n_cells
        Cells to resample (with replacement) from the 200 demo cells.
    seed
        Resampling seed.

    Returns
    -------
    tuple
        ``(cells, model, universe)``, or None when the resources are missing.
    """
    from geneattn.attention import choose_universe, subset_cells
    from geneattn.bench.demo_study import load_demo_study

    demo = load_demo_study()
    if demo is None:
        return None
    cells, model = demo.cells, demo.model
    rng = np.random.default_rng(seed)
    cells = subset_cells(cells, rng.integers(0, cells.n_cells, n_cells))
    universe = choose_universe(cells, min_cells=10, max_genes=2000)
    return cells, model, universe


def _attention(x: np.ndarray, w_q: np.ndarray, w_k: np.ndarray, n_heads: int) -> np.ndarray:
    """Per-head softmax attention of one cell, ``(n_heads, n, n)``."""
    q, k = x @ w_q, x @ w_k
    dh = x.shape[1] // n_heads
    out = np.empty((n_heads, len(x), len(x)))
    for h in range(n_heads):
        cols = slice(h * dh, (h + 1) * dh)
        s = q[:, cols] @ k[:, cols].T / np.sqrt(dh)
        e = np.exp(s - s.max(axis=1, keepdims=True))
        out[h] = e / (e.sum(axis=1, keepdims=True) + 1e-30)
    return out


def python_loop(cells, model, index: np.ndarray, g: int) -> tuple[np.ndarray, np.ndarray]:
    """Per cell: numpy attention, then Python loops over token pairs into a dict by gene pair."""
    pair_sums: dict[tuple[int, int], float] = {}
    incoming = np.zeros(g)
    n_heads = model.n_heads
    for c in range(cells.n_cells):
        toks = cells.cell(c)
        attention = _attention(model.gene_embeddings[toks], model.w_q, model.w_k, n_heads)
        genes = [int(index[t]) for t in toks]
        for i in range(len(toks)):
            for j in range(len(toks)):
                if genes[j] < 0:
                    continue
                ab = 0.0
                for h in range(n_heads):
                    ab += attention[h, i, j]
                ab /= n_heads
                incoming[genes[j]] += ab
                if genes[i] >= 0:
                    key = (genes[i], genes[j])
                    pair_sums[key] = pair_sums.get(key, 0.0) + ab
    sums = np.zeros((g, g))
    for (a, b), v in pair_sums.items():
        sums[a, b] = v
    return sums, incoming


def numpy_vectorised(cells, model, index: np.ndarray, g: int) -> tuple[np.ndarray, np.ndarray]:
    """Per cell: numpy attention averaged over heads, ``np.add.at`` into the sums."""
    sums, incoming = np.zeros((g, g)), np.zeros(g)
    for c in range(cells.n_cells):
        toks = cells.cell(c)
        a = _attention(model.gene_embeddings[toks], model.w_q, model.w_k, model.n_heads)
        a = a.mean(axis=0)
        u = index[toks]
        keep = u >= 0
        uk = u[keep]
        np.add.at(sums, (uk[:, None], uk[None, :]), a[np.ix_(keep, keep)])
        np.add.at(incoming, uk, a[:, keep].sum(axis=0))
    return sums, incoming


def _peak_memory(cells, model, index, g, threads: int, sizes: tuple[int, ...]) -> list[dict]:
    """Run the streaming child on the first ``n`` of ``cells`` for each size."""
    from geneattn.tokenize import subset_cells

    rng = np.random.default_rng(1)
    big = subset_cells(cells, rng.integers(0, cells.n_cells, max(sizes)))
    results = []
    with tempfile.TemporaryDirectory(prefix="geneattn-bench-") as tmp:
        big.tokens.astype(np.int32).tofile(f"{tmp}/tokens.bin")
        arrays = {
            "offsets": big.offsets,
            "table": model.gene_embeddings,
            "w_q": model.w_q,
            "w_k": model.w_k,
            "index": index,
        }
        for name, arr in arrays.items():
            np.save(f"{tmp}/{name}.npy", np.ascontiguousarray(arr))
        Path(tmp, "meta.json").write_text(json.dumps({"g": g, "n_heads": model.n_heads}))
        for n in sizes:
            cmd = [sys.executable, "-c", _CHILD, tmp, str(n), str(threads)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode:
                raise RuntimeError(f"memory child failed: {done.stderr.strip()}")
            results.append({"cells": n, **json.loads(done.stdout)})
    return results


def run(args: argparse.Namespace) -> list[Row]:
    """Time the fused kernel against the Python loop and numpy; measure its peak memory."""
    from geneattn import _kernels

    n_cells = 200 if args.quick else N_CELLS
    made = demo_study(n_cells)
    if made is None:
        raise SystemExit("bench network needs resources/ (run `geneattn fetch-resources`)")
    cells, model, universe = made
    g = len(universe)
    index = np.full(model.gene_embeddings.shape[0], -1, dtype=np.int64)
    index[universe] = np.arange(g)
    label = f"{n_cells:,} demo cells (resampled), G={g}"

    def ours(c=cells):
        return _kernels.mha_aggregate_cells(
            c.tokens, c.offsets, model.gene_embeddings, model.w_q, model.w_k,
            model.n_heads, index, g, n_threads=args.threads,
        )  # fmt: skip

    from geneattn.tokenize import subset_cells

    # correctness first, on the subsets the references are timed on
    loop_cells = subset_cells(cells, np.arange(LOOP_CELLS))
    np_cells = subset_cells(cells, np.linspace(0, n_cells - 1, NUMPY_CELLS).astype(np.int64))
    for sub, ref in ((loop_cells, python_loop), (np_cells, numpy_vectorised)):
        got, want = ours(sub), ref(sub, model, index, g)
        for a, b in zip(got, want, strict=True):
            if not np.allclose(a, b, rtol=1e-9, atol=1e-12):
                raise AssertionError(f"kernel and {ref.__name__} disagree; not timing")

    t_ours = time_call(ours, repeats=min(args.repeats, 3))
    t0 = time.perf_counter()
    python_loop(loop_cells, model, index, g)
    loop_s = (time.perf_counter() - t0) / LOOP_CELLS * n_cells
    t_np = time_call(lambda: numpy_vectorised(np_cells, model, index, g), repeats=1, warmup=0)
    np_s = t_np.median / NUMPY_CELLS * n_cells

    sizes = (100, 1000) if args.quick else MEMORY_CELLS
    mem = _peak_memory(cells, model, index, g, args.threads, sizes)
    mem_note = "; ".join(
        f"{m['cells']:,} cells: peak RSS {m['maxrss_kib'] / 1024:.0f} MiB in {m['seconds']:.1f} s"
        for m in mem
    )
    threads = f"{args.threads} threads"
    return [
        Row(
            NAME,
            f"{label}: vs per-cell Python loop",
            t_ours.median,
            "Python pair loop (gf_tools style)",
            loop_s,
            target=50,
            extra=(
                f"loop timed on {LOOP_CELLS} cells and scaled per cell to {n_cells:,}; "
                f"{threads}; outputs agree"
            ),
        ),
        Row(
            NAME,
            f"{label}: vs vectorised numpy",
            t_ours.median,
            "numpy attention + np.add.at",
            np_s,
            target=5,
            extra=(
                f"numpy timed on {NUMPY_CELLS} evenly spaced cells and scaled per cell to "
                f"{n_cells:,}; {threads}; outputs agree"
            ),
        ),
        Row(
            NAME,
            f"peak memory, {sizes[0]:,} vs {sizes[1]:,} cells (resampled)",
            mem[0]["seconds"],
            f"ours, {sizes[1]:,} cells",
            mem[1]["seconds"],
            target=None,
            extra=f"fresh subprocesses streaming tokens in 1,000-cell chunks; {mem_note}",
        ),
    ]

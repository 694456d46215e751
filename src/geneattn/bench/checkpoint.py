"""``geneattn bench checkpoint``: the BERT encoder of pretrained checkpoints against PyTorch.

Random models of Geneformer V1's size (6 layers x 256 hidden x 4 heads, feed-forward 512,
ReLU, 2,048 positions) and of a V2 size (12 x 512 x 8 heads, feed-forward 1,024, 4,096
positions) encode cells of random distinct gene ids at full length: every layer runs and
the last one is mean-pooled, as :meth:`~geneattn.models.bert.BertEncoder.encode_batch`
with ``emb_layer=0`` does. In the same run, with the same threads and the same sequences:

- ours, float32 (:meth:`~geneattn.models.bert.BertEncoder.encode_batch`);
- the numpy reference forward pass (:func:`geneattn.testing.bert_reference.forward`, float32, one
  cell at a time, numpy's BLAS limited to ``--threads``; V1 only);
- PyTorch on the CPU: ``transformers.BertModel`` loaded from the same weights, one cell at
  a time, no padding, ``torch.set_num_threads(--threads)``, once with
  ``attn_implementation="sdpa"`` (PyTorch's fused ``scaled_dot_product_attention``) and
  once with ``"eager"`` (the softmax matrix materialised). PyTorch is not a dependency of
  the project: it runs in a separate interpreter (``make bench-torch`` builds
  ``.bench-torch``; the ``GENEATTN_BENCH_TORCH`` environment variable names another one)
  as a subprocess that times its own calls; without it those rows are skipped and the
  notes say why;
- the machine's float32 GEMM peak: numpy's ``2048 x 2048 x 2048`` matmul with the same
  threads. Our encoder's rate is its matmul FLOPs (:func:`encoder_flops`) over its time,
  and the ``peak`` rows compare it with this one.

Perturbation passes: one V1-size cell of 2,048 genes, :data:`N_EDITS` of them deleted
(one at a time, evenly spaced ranks), each perturbed sequence run through the layers that
Geneformer's default ``emb_layer=-1`` needs (5 of 6), as the workflow's perturb stage runs
them (:meth:`~geneattn.models.bert.BertEncoder.forward` of all of them in one call).
PyTorch runs the same sequences as one batch (they have the same length, so no padding),
truncated to the same 5 layers, and again as Geneformer's ``InSilicoPerturber`` runs them
(the whole model with ``output_hidden_states``).

A last V1 row times the fused aggregation of the last layer's attention over a gene
universe (:meth:`~geneattn.models.bert.BertEncoder.attention_sums`) against
:meth:`~geneattn.models.bert.BertEncoder.iter_attention` with each cell's ``n x n``
matrix added with numpy (:func:`geneattn.testing.bert_reference.add_attention`).

Every engine's result is checked against the float64 reference before anything is timed.
The engines of a block run in alternating rounds (at most three) so that load from other
processes on a shared machine falls on all alike; medians are reported. bfloat16 is not
measured: the encoder has no bf16 path (the notes say whether the CPU has AVX512-BF16).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from geneattn.bench import Row, Timing
from geneattn.bench.kernels import SETTLE_S, _check
from geneattn.models.bert import BertEncoder
from geneattn.models.bert_weights import BertConfig, BertWeights, save_checkpoint
from geneattn.testing import bert_reference

NAME = "checkpoint"
HELP = "BERT encoder of V1- and V2-size checkpoints against PyTorch (sdpa, eager) and numpy"

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

#: A Geneformer V2 size (12 x 512, 8 heads, 4,096 tokens).
V2 = {
    "vocab_size": 20_275,
    "hidden_size": 512,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "intermediate_size": 1024,
    "max_position_embeddings": 4096,
    "hidden_act": "relu",
}

#: Genes of the aggregation row's universe (the workflow's default ``universe_max_genes``).
UNIVERSE_GENES = 2000

#: Perturbed sequences of the perturbation row.
N_EDITS = 8

#: Environment variable naming the PyTorch interpreter.
TORCH_ENV = "GENEATTN_BENCH_TORCH"

#: Size of numpy's peak matmul.
PEAK_N = 2048

Timed = Callable[[], float]


def encoder_flops(config: BertConfig, n: int, n_layers: int | None = None) -> float:
    """Matmul floating-point operations of one cell of ``n`` tokens through the layers."""
    d, i = config.hidden_size, config.intermediate_size
    per_layer = 2 * n * d * 3 * d + 2 * 2 * n * n * d + 2 * n * d * d + 2 * 2 * n * d * i
    return float((config.num_hidden_layers if n_layers is None else n_layers) * per_layer)


def _cells(n_cells: int, n: int, vocab: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
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


def _timed(fn: Callable[[], object]) -> Timed:
    """``fn`` as a function returning its wall-clock seconds."""

    def run() -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    return run


def _rounds(fns: list[Timed], rounds: int) -> list[Timing]:
    """Each function once per round, in turn, after a pause; the first call is a warm-up."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for t, fn in zip(times, fns, strict=True):
            time.sleep(SETTLE_S)
            t.append(fn())
    return [Timing(tuple(t)) for t in times]


def _peak(threads: int) -> Timed:
    """numpy's float32 ``PEAK_N``-cube matmul on ``threads`` threads, timed."""
    rng = np.random.default_rng(2)
    a = rng.normal(size=(PEAK_N, PEAK_N)).astype(np.float32)
    b = rng.normal(size=(PEAK_N, PEAK_N)).astype(np.float32)

    def run() -> float:
        with threadpool_limits(limits=threads, user_api="blas"):
            t0 = time.perf_counter()
            a @ b
            return time.perf_counter() - t0

    return run


def _peak_gflops(t: Timing) -> float:
    return 2 * PEAK_N**3 / t.median / 1e9


def _has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            return any("avx512_bf16" in line.split() for line in fh if line.startswith("flags"))
    except OSError:
        return False


def _torch_worker() -> None:  # pragma: no cover - runs in the PyTorch interpreter
    """The PyTorch side, run by the bench-torch interpreter (numpy, torch, transformers).

    First stdin line: ``{"threads": T, "checkpoints": {name: directory}}``; it answers
    with the versions. Then one request per line: ``{"model", "attn", "layers", "inputs",
    "batch", "hidden", "result"}``: the ``.npz`` of ids and offsets in ``inputs`` runs
    through ``BertModel`` ``batch`` sequences at a time (equal lengths), ``hidden`` None
    for the last hidden state or a ``hidden_states`` index (the whole model runs, with
    ``output_hidden_states``); the mean over tokens of each sequence goes to ``result``
    when given. Answers ``{"seconds": ...}`` (the forward passes alone).
    """
    import json
    import sys
    import time

    import numpy as np
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    setup = json.loads(sys.stdin.readline())
    torch.set_num_threads(setup["threads"])
    models: dict = {}
    print(
        json.dumps(
            {"versions": f"torch {torch.__version__}, transformers {transformers.__version__}"}
        ),
        flush=True,
    )
    for line in sys.stdin:
        req = json.loads(line)
        key = (req["model"], req["attn"], req["layers"])
        if key not in models:
            models[key] = transformers.BertModel.from_pretrained(
                setup["checkpoints"][req["model"]],
                attn_implementation=req["attn"],
                add_pooling_layer=False,
                num_hidden_layers=req["layers"],
            ).eval()
        model = models[key]
        data = np.load(req["inputs"])
        ids, offsets = data["ids"].astype(np.int64), data["offsets"]
        seqs = [torch.from_numpy(ids[offsets[c] : offsets[c + 1]]) for c in range(offsets.size - 1)]
        pooled = []
        t0 = time.perf_counter()
        with torch.inference_mode():
            for b0 in range(0, len(seqs), req["batch"]):
                x = torch.stack(seqs[b0 : b0 + req["batch"]])
                if req["hidden"] is None:
                    h = model(input_ids=x).last_hidden_state
                else:
                    h = model(input_ids=x, output_hidden_states=True).hidden_states[req["hidden"]]
                pooled.append(h.mean(dim=1))
        seconds = time.perf_counter() - t0
        if req.get("result"):
            np.save(req["result"], torch.cat(pooled).numpy())
        print(json.dumps({"seconds": seconds}), flush=True)


def torch_python() -> tuple[Path | None, str]:
    """The PyTorch interpreter, or None and why there is none."""
    named = os.environ.get(TORCH_ENV)
    if named:
        p = Path(named)
        return (p, "") if p.exists() else (None, f"{TORCH_ENV}={named} does not exist")
    for root in (Path.cwd(), Path(__file__).resolve().parents[3]):
        p = root / ".bench-torch" / "bin" / "python"
        if p.exists():
            return p, ""
    return None, "no PyTorch environment (make bench-torch builds .bench-torch)"


class TorchWorker:
    """A running :func:`_torch_worker` subprocess."""

    def __init__(self, python: Path, threads: int, checkpoints: dict[str, str]) -> None:
        source = inspect.getsource(_torch_worker) + "\n_torch_worker()\n"
        env = dict(os.environ)
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(threads)
        self.proc = subprocess.Popen(
            [str(python), "-c", source],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.versions = self._ask({"threads": threads, "checkpoints": checkpoints})["versions"]

    def _ask(self, message: dict) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            tail = err.strip().splitlines()[-1] if err.strip() else "no output"
            raise RuntimeError(f"the PyTorch worker stopped: {tail}")
        return json.loads(line)

    def run(self, **request: object) -> float:
        """Seconds of one request (see :func:`_torch_worker`)."""
        return float(self._ask(request)["seconds"])

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


class _Case:
    """A model, its checkpoint directory for PyTorch and input files."""

    def __init__(self, name: str, shape: dict, tmp: Path) -> None:
        self.name = name
        self.config = BertConfig(**shape)
        self.model = BertEncoder(self.config, BertWeights.random(self.config, seed=0), version="V1")
        self.dir = str(save_checkpoint(tmp / name, self.config, self.model.weights))
        self.tmp = tmp

    def inputs(self, tag: str, ids: np.ndarray, offsets: np.ndarray) -> str:
        path = self.tmp / f"{self.name}-{tag}.npz"
        np.savez(path, ids=ids, offsets=offsets)
        return str(path)


def _torch_fns(
    worker: TorchWorker | None,
    case: _Case,
    inputs: str,
    want: np.ndarray,
    variants: list[tuple[str, str, int, int, int | None]],
    what: str,
) -> list[Timed]:
    """PyTorch runs of ``inputs``, each checked against ``want`` (pooled rows) first.

    ``variants``: ``(label, attn, layers, batch, hidden)``.
    """
    if worker is None:
        return []
    fns = []
    for label, attn, layers, batch, hidden in variants:
        request = {
            "model": case.name,
            "attn": attn,
            "layers": layers,
            "inputs": inputs,
            "batch": batch,
            "hidden": hidden,
        }
        result = str(case.tmp / "result.npy")
        worker.run(**request, result=result)
        _check(np.load(result), want, 1e-4, f"PyTorch {label} ({what})")
        fns.append(lambda request=request: worker.run(**request, result=None))
    return fns


def run(args: argparse.Namespace) -> list[Row]:
    """Time the encoder against PyTorch, numpy and the GEMM peak."""
    threads = args.threads
    rounds = max(1, min(args.repeats, 3))
    python, why = torch_python()
    with tempfile.TemporaryDirectory(prefix="geneattn-bench-") as tmp_name:
        tmp = Path(tmp_name)
        cases = {"V1": _Case("V1", V1, tmp), "V2": _Case("V2", V2, tmp)}
        worker = None
        if python is not None:
            try:
                worker = TorchWorker(python, threads, {k: c.dir for k, c in cases.items()})
            except (OSError, RuntimeError) as err:
                why = f"{python} could not run PyTorch: {err}"
        versions = worker.versions if worker else ""
        try:
            rows = _v1_rows(args, cases["V1"], worker, why, rounds)
            rows += _perturb_rows(args, cases["V1"], worker, why, rounds)
            rows += _size_rows(args, cases["V2"], worker, why, rounds)
        finally:
            if worker is not None:
                worker.close()
    note = f"PyTorch: {versions}" if versions else f"PyTorch rows skipped: {why}"
    bf16 = "has" if _has_bf16() else "has no"
    rows[0] = _with_note(
        rows[0], f"{note}; bfloat16 not measured (no bf16 path; this CPU {bf16} AVX512-BF16)"
    )
    return rows


def _with_note(row: Row, note: str) -> Row:
    return Row(
        row.suite,
        row.case,
        row.ours_s,
        row.reference,
        row.reference_s,
        target=row.target,
        extra=f"{row.extra}; {note}" if row.extra else note,
    )


def _engine_rows(
    label: str,
    case: _Case,
    n_cells: int,
    n: int,
    t_ours: Timing,
    t_peak: Timing,
    torch_timings: list[Timing],
    threads: int,
) -> list[Row]:
    """Rows of ours against the GEMM peak and the PyTorch variants (sdpa, eager)."""
    flops = encoder_flops(case.config, n) * n_cells
    rate = flops / t_ours.median / 1e9
    peak = _peak_gflops(t_peak)
    rows = [
        Row(
            NAME,
            f"  {label}: ours against the f32 GEMM peak",
            t_ours.median,
            f"same FLOPs at numpy's f32 {PEAK_N}^3 matmul rate",
            flops / (peak * 1e9),
            target=0.75,
            extra=(
                f"{threads} threads; ours {n_cells / t_ours.median:.2f} cells/s, {rate:.0f} "
                f"GFLOP/s ({flops / n_cells / 1e9:.1f} GFLOP of matmul work per cell); "
                f"numpy matmul {peak:.0f} GFLOP/s in the same rounds"
            ),
        )
    ]
    names = [("sdpa", 1.0), ("eager", None)]
    for (attn, target), t in zip(names, torch_timings, strict=False):
        rows.append(
            Row(
                NAME,
                f"  {label}: same cells",
                t_ours.median,
                f"PyTorch BertModel, attention {attn}, one cell at a time",
                t.median,
                target=target,
                extra=f"PyTorch {n_cells / t.median:.2f} cells/s, "
                f"{flops / t.median / 1e9:.0f} GFLOP/s",
            )
        )
    return rows


def _v1_rows(
    args: argparse.Namespace, case: _Case, worker: TorchWorker | None, why: str, rounds: int
) -> list[Row]:
    config, model = case.config, case.model
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

    exact = np.stack(
        [
            bert_reference.mean_pool(
                bert_reference.forward(
                    ids[offsets[c] : offsets[c + 1]], model.weights, config, attentions=False
                )[0][-1]
            )
            for c in range(n_cells)
        ]
    )
    err = _check(ours(), exact, 1e-4, "checkpoint encoder")
    inputs = case.inputs("cells", ids, offsets)
    layers = config.num_hidden_layers
    variants = [("sdpa", "sdpa", layers, 1, None), ("eager", "eager", layers, 1, None)]
    torch_fns = _torch_fns(worker, case, inputs, exact, variants, "V1 cells")
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
    fns = [_timed(ours), _timed(reference), _peak(threads), *torch_fns]
    t_ours, t_ref, t_peak, *t_torch = _rounds(fns, rounds)
    t_fused, t_streamed = _rounds([_timed(fused), _timed(streamed)], rounds)
    label = f"V1 size, {n_cells} cells x {n} tokens"
    rows = [
        Row(
            NAME,
            f"Geneformer V1-size encoder (6 x 256, 4 heads, FFN 512, random weights), "
            f"{n_cells} cells x {n} tokens, float32, all layers + mean pooling",
            t_ours.median,
            "numpy reference forward pass",
            t_ref.median,
            target=2.0,
            extra=(
                f"{threads} threads each; numpy {n_cells / t_ref.median:.2f} cells/s (BLAS "
                f"limited to {threads}); max error vs float64 {err:.1e}"
                + ("" if worker else f"; PyTorch rows skipped: {why}")
            ),
        ),
        *_engine_rows(label, case, n_cells, n, t_ours, t_peak, t_torch, threads),
        Row(
            NAME,
            f"  V1 size, same cells: last layer's attention summed over {g:,} universe "
            f"genes (fused)",
            t_fused.median,
            "iter_attention + numpy np.add.at",
            t_streamed.median,
            target=None,
            extra=(
                f"{threads} threads each; {per_cell:.0f} universe genes per cell on average; "
                f"float64 sums, largest difference {agg_err:.1e} of the largest sum"
            ),
        ),
    ]
    return rows


def _perturb_rows(
    args: argparse.Namespace, case: _Case, worker: TorchWorker | None, why: str, rounds: int
) -> list[Row]:
    """Deletions in one cell through the layers ``emb_layer=-1`` needs, ours and PyTorch."""
    config, model = case.config, case.model
    n, n_edits = (512, 2) if args.quick else (2048, N_EDITS)
    cell, _ = _cells(1, n, config.vocab_size, seed=3)
    ranks = np.linspace(0, n - 1, n_edits).round().astype(int)
    seqs = [np.delete(cell, r) for r in ranks]
    ids = np.concatenate(seqs).astype(np.int32)
    offsets = np.arange(n_edits + 1, dtype=np.int64) * (n - 1)
    layer = config.num_hidden_layers - 1
    threads = args.threads

    def ours() -> np.ndarray:
        return model.forward(ids, offsets, hidden_layers=[layer], n_threads=threads)["hidden"][0]

    hidden = ours()
    got = hidden.reshape(n_edits, n - 1, -1).mean(axis=1)
    exact = bert_reference.mean_pool(
        bert_reference.forward(seqs[0], model.weights, config, n_layers=layer, attentions=False)[0][
            -1
        ]
    )
    _check(got[0], exact, 1e-4, "checkpoint encoder (perturbed sequences)")
    inputs = case.inputs("perturbed", ids, offsets)
    variants = [
        ("sdpa, 5 layers", "sdpa", layer, n_edits, None),
        ("sdpa, whole model", "sdpa", config.num_hidden_layers, n_edits, layer),
    ]
    torch_fns = _torch_fns(worker, case, inputs, got, variants, "perturbed sequences")
    t_ours, *t_torch = _rounds([_timed(ours), *torch_fns], rounds)
    flops = encoder_flops(config, n - 1, layer) * n_edits
    label = (
        f"  V1 size, in-silico deletion: {n_edits} perturbed sequences of one {n}-token cell "
        f"through the {layer} layers emb_layer=-1 needs"
    )
    common = (
        f"{args.threads} threads each; ours {n_edits / t_ours.median:.2f} passes/s, "
        f"{flops / t_ours.median / 1e9:.0f} GFLOP/s"
    )
    if not t_torch:
        return [
            Row(
                NAME,
                label,
                t_ours.median,
                "PyTorch (skipped)",
                float("nan"),
                target=None,
                extra=f"{common}; PyTorch rows skipped: {why}",
            )
        ]
    refs = [
        (f"PyTorch sdpa, batch of {n_edits}, truncated to {layer} layers", 1.5),
        (
            f"PyTorch sdpa, batch of {n_edits}, whole model + output_hidden_states (Geneformer)",
            None,
        ),
    ]
    return [
        Row(
            NAME,
            label if k == 0 else "  same sequences",
            t_ours.median,
            ref,
            t.median,
            target=target,
            extra=(common + "; " if k == 0 else "") + f"PyTorch {n_edits / t.median:.2f} passes/s",
        )
        for k, ((ref, target), t) in enumerate(zip(refs, t_torch, strict=True))
    ]


def _size_rows(
    args: argparse.Namespace, case: _Case, worker: TorchWorker | None, why: str, rounds: int
) -> list[Row]:
    """The V2-size encoder against PyTorch and the GEMM peak."""
    config, model = case.config, case.model
    n_cells, n = (1, 512) if args.quick else (1, 4096)
    ids, offsets = _cells(n_cells, n, config.vocab_size)
    threads = args.threads

    def ours() -> np.ndarray:
        return model.encode_batch(ids, offsets, emb_layer=0, n_threads=threads)

    # against float64 on a prefix of the first cell (the reference's n x n float64 matrices
    # of a whole cell take gigabytes), then PyTorch against ours on the whole cells
    part = ids[: min(n, 1024)]
    exact = bert_reference.mean_pool(
        bert_reference.forward(part, model.weights, config, attentions=False)[0][-1]
    )
    short = model.encode_batch(part, np.array([0, part.size]), emb_layer=0, n_threads=threads)
    err = _check(short[0], exact, 1e-4, "checkpoint encoder (V2 size)")
    got = ours()
    inputs = case.inputs("cells", ids, offsets)
    layers = config.num_hidden_layers
    variants = [("sdpa", "sdpa", layers, 1, None), ("eager", "eager", layers, 1, None)]
    torch_fns = _torch_fns(worker, case, inputs, got, variants, "V2 cells")
    t_ours, t_peak, *t_torch = _rounds([_timed(ours), _peak(threads), *torch_fns], rounds)
    label = f"V2 size (12 x 512, 8 heads, FFN 1024), {n_cells} cells x {n} tokens"
    rows = _engine_rows(label, case, n_cells, n, t_ours, t_peak, t_torch, threads)
    rows[0] = _with_note(rows[0], f"max error vs float64 {err:.1e} ({part.size} tokens)")
    if not t_torch:
        rows[0] = _with_note(rows[0], f"PyTorch rows skipped: {why}")
    return rows


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run `geneattn bench checkpoint`")

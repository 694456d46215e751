"""``geneattn bench perturb``: in-silico deletion against a brute-force numpy forward pass.

The 50 most often expressed genes x 100 cells resampled (fixed seed) from the real demo
study, with the study model
(:func:`geneattn.bench.network.demo_study`), delete mode: every cell expressing a gene has
it deleted and is re-embedded with the gene excluded from both poolings. Ours is one call
of the edit kernel (one forward pass per cell, then ``O(n d)`` per deletion); the reference
recomputes the whole numpy forward pass of each perturbed sequence
(:func:`geneattn.testing.reference.multi_head_attention`), as Geneformer's perturber does. The
reference is timed on the first :data:`REF_CELLS` cells and scaled by the number of
perturbations; both are checked to agree on those cells first.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from geneattn.bench import Row, time_call

NAME = "perturb"
HELP = "delete 50 genes in 100 demo cells: edit kernel vs numpy brute-force forward passes"

N_GENES = 50
N_CELLS = 100
REF_CELLS = 4


def _brute(model, cells, plan) -> np.ndarray:
    """Perturbed embeddings by a full numpy forward pass per edit."""
    from geneattn.testing import reference

    out = np.zeros((len(plan.cell), model.d_model))
    for e in range(len(plan.cell)):
        seq = cells.cell(int(plan.cell[e])).astype(np.int64)
        keep = seq != plan.token[e]
        # rank-scaled values: the other genes keep their positions' weights
        n = len(seq)
        weights = np.log((n + 1) / (np.arange(n) + 1.0))[keep]
        heads, _ = reference.multi_head_attention(
            model.gene_embeddings[seq[keep]], model.w_q, model.w_k, model.w_v, model.n_heads,
            value_weights=None if model.value_rank == "none" else weights,
        )  # fmt: skip
        out[e] = (heads @ model.w_o).mean(axis=0)
    return out


def run(args: argparse.Namespace) -> list[Row]:
    """Time the edit kernel and the brute-force reference on the same perturbations."""
    from threadpoolctl import threadpool_limits

    from geneattn.attention import presence_matrix, subset_cells
    from geneattn.bench.network import demo_study
    from geneattn.edits import plan_edits

    n_cells = 20 if args.quick else N_CELLS
    made = demo_study(n_cells, seed=2)
    if made is None:
        raise SystemExit("bench perturb needs resources/ (run `geneattn fetch-resources`)")
    cells, model, _ = made
    n_tokens = model.gene_embeddings.shape[0]
    presence = np.asarray(presence_matrix(cells, np.arange(n_tokens), n_tokens).sum(axis=0))
    presence = presence.ravel()
    # the 50 most often expressed genes, so that nearly every cell has each deleted
    expressed = np.flatnonzero(presence > 0)
    genes = expressed[np.lexsort((expressed, -presence[expressed]))][:N_GENES]
    plan = plan_edits(cells, genes, "delete")

    def ours():
        return model.edit_embeddings(cells, plan.cell, plan.token, "delete", n_threads=args.threads)

    first = subset_cells(cells, np.arange(REF_CELLS))
    sub_plan = plan_edits(first, genes, "delete")
    _, got = model.edit_embeddings(
        first, sub_plan.cell, sub_plan.token, "delete", n_threads=args.threads
    )
    want = _brute(model, first, sub_plan)
    err = float(np.abs(got - want).max() / np.abs(want).max())
    if err > 1e-9:
        raise AssertionError(f"edit kernel and brute force disagree ({err:.1e}); not timing")
    t_ours = time_call(ours, repeats=min(args.repeats, 5))
    with threadpool_limits(limits=args.threads, user_api="blas"):
        t0 = time.perf_counter()
        _brute(model, first, sub_plan)
        ref_s = (time.perf_counter() - t0) / len(sub_plan.cell) * len(plan.cell)
    lengths = np.diff(cells.offsets)
    extra = (
        f"{len(plan.cell):,} deletions ({N_GENES} genes x the cells expressing them), "
        f"{args.threads} threads each (numpy's BLAS limited to {args.threads}); median "
        f"{int(np.median(lengths))} tokens per cell, d={model.d_model}, {model.n_heads} heads; "
        f"reference timed on the {len(sub_plan.cell)} deletions of {REF_CELLS} cells and "
        f"scaled; max relative error vs brute force {err:.1e}"
    )
    label = f"delete {N_GENES} genes in {n_cells} demo cells (resampled)"
    return [Row(NAME, label, t_ours.median, "numpy forward per edit", ref_s, 10.0, extra)]

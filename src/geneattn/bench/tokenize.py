"""``geneattn bench tokenize``: 100,000 cells x 20,000 genes through the rank encoder.

The cells are resampled (with replacement, fixed seed) from the real demo study when the
resources are present, restricted to 20,000 genes that have Geneformer tokens; otherwise they
are Poisson-sparse synthetic counts (the row says which). The reference is a vectorised
numpy implementation of the same rules (one global lexsort over all stored entries).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from geneattn.bench import Row, time_call

NAME = "tokenize"
HELP = "Geneformer V1 tokenization of 100k cells x 20k genes"
N_GENES = 20_000


def numpy_reference(
    x: sp.csr_matrix,
    token: np.ndarray,
    median: np.ndarray,
    n_counts: np.ndarray,
    max_len: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised numpy rank encoding: same rules as the kernel, one global sort."""
    rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
    cols = x.indices
    tok = token[cols]
    keep = (x.data > 0) & (tok >= 0)
    rows, cols, tok = rows[keep], cols[keep], tok[keep]
    value = x.data[keep].astype(np.float64) / n_counts[rows] * 10_000.0 / median[cols]
    order = np.lexsort((tok, -value, rows))
    rows, tok = rows[order], tok[order]
    starts = np.searchsorted(rows, np.arange(x.shape[0]))
    position = np.arange(len(rows)) - starts[rows]
    short = position < max_len
    counts = np.bincount(rows[short], minlength=x.shape[0])
    return tok[short].astype(np.int32), np.concatenate([[0], np.cumsum(counts)])


def _demo_matrix(n_cells: int, rng: np.random.Generator) -> tuple[sp.csr_matrix, str] | None:
    root = Path("resources")
    demo = root / "wu2020_200.h5ad"
    gf = root / "geneformer_v1"
    if not (demo.exists() and (gf / "gene_median_dictionary.tsv").exists()):
        return None
    import anndata as ad

    from geneattn.resources.load import load_gene_medians, load_gene_name_map

    adata = ad.read_h5ad(demo)
    names = load_gene_name_map(gf / "gene_name_id.tsv")
    medians = load_gene_medians(gf / "gene_median_dictionary.tsv")
    mapped = np.array([names.get(g) in medians for g in adata.var_names])
    cols = np.flatnonzero(mapped)[:N_GENES]
    x = sp.csr_matrix(adata.X, dtype=np.float32)[:, cols]
    pick = rng.integers(0, x.shape[0], n_cells)
    return sp.csr_matrix(x[pick]), f"{n_cells} demo cells (resampled) x {len(cols)} genes"


def _synthetic_matrix(n_cells: int, rng: np.random.Generator) -> tuple[sp.csr_matrix, str]:
    n_base, nnz_per_cell = 2000, 2000
    indptr = np.arange(n_base + 1, dtype=np.int64) * nnz_per_cell
    indices = np.sort(
        rng.random((n_base, N_GENES)).argpartition(nnz_per_cell, axis=1)[:, :nnz_per_cell],
        axis=1,
    ).ravel()
    data = rng.poisson(2.0, indptr[-1]).astype(np.float32) + 1
    base = sp.csr_matrix((data, indices.astype(np.int32), indptr), shape=(n_base, N_GENES))
    x = sp.csr_matrix(base[rng.integers(0, n_base, n_cells)])
    return x, f"{n_cells} synthetic cells (resampled from {n_base}) x {N_GENES} genes"


def run(args: argparse.Namespace) -> list[Row]:
    """Time the Rust kernel and the numpy reference on the same matrix."""
    from geneattn import _kernels

    rng = np.random.default_rng(0)
    n_cells = 10_000 if args.quick else 100_000
    made = _demo_matrix(n_cells, rng) or _synthetic_matrix(n_cells, rng)
    x, label = made
    n_genes = x.shape[1]
    token = np.arange(n_genes, dtype=np.int32)
    median = rng.uniform(0.5, 5.0, n_genes)
    n_counts = np.asarray(x.sum(axis=1), dtype=np.float64).ravel()
    indptr, indices = x.indptr.astype(np.int64), x.indices.astype(np.int32)

    def ours() -> tuple[np.ndarray, np.ndarray]:
        return _kernels.rank_encode_csr(
            indptr, indices, x.data, token, median, n_counts, 1e4, 2048, args.threads
        )

    def reference() -> tuple[np.ndarray, np.ndarray]:
        return numpy_reference(x, token, median, n_counts, 2048)

    got, want = ours(), reference()
    if not (np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])):
        raise AssertionError("kernel and numpy reference disagree; not timing")
    t_ours = time_call(ours, repeats=args.repeats)
    # the reference takes minutes at full size: fewer repeats, median still reported
    t_ref = time_call(reference, repeats=1 if n_cells >= 100_000 else 3, warmup=0)
    extra = f"{x.nnz:,} stored entries; {args.threads} threads; outputs identical"
    return [
        Row(NAME, label, t_ours.median, "numpy lexsort", t_ref.median, target=None, extra=extra)
    ]

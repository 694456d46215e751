"""Resampled studies for the stage benchmark: real cells drawn with replacement.

``python -m geneattn.bench.resample DEMO OUT --cells N`` draws ``N`` cells with
replacement (seeded) from the cells of ``DEMO`` whose condition label is one of
``--labels``, and writes their raw counts to ``OUT`` (``.h5ad``). Every drawn cell gets a new
unique name ``{original}~{i}`` and the obs column ``resampled_from`` naming its source cell,
so no output can be mistaken for real cells. The driver runs this in a subprocess so that
its own memory stays small (see :mod:`geneattn.bench.launcher`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: Cells written at a time.
BLOCK = 50_000

#: obs columns carried over from the demo study (the rest are immune-receptor annotations).
KEEP_OBS = ("source", "patient", "sample", "cluster_orig")


def resample_cells(
    demo: str | Path,
    out: str | Path,
    *,
    n_cells: int,
    column: str,
    labels: Sequence[str],
    seed: int,
) -> dict[str, int]:
    """Write ``n_cells`` cells drawn with replacement from the labelled cells of ``demo``.

    Parameters
    ----------
    demo
        Raw counts (``.h5ad``), cells x genes.
    out
        The resampled study (``.h5ad``) to write.
    n_cells
        Cells to draw.
    column
        obs column of the condition labels.
    labels
        Only cells with one of these labels are drawn.
    seed
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    dict
        ``{"source_cells": ..., "cells": ..., "distinct": ...}``: how many cells could be
        drawn, how many were, and how many distinct source cells they are.
    """
    import anndata as ad
    import scipy.sparse as sp

    from geneattn.errors import InputError
    from geneattn.io.atomic import atomic_path
    from geneattn.io.csr_append import CsrAppender

    if n_cells < 1:
        raise InputError(f"--cells must be >= 1, got {n_cells}")
    adata = ad.read_h5ad(demo)
    if column not in adata.obs.columns:
        raise InputError(f"no obs column {column!r}", demo)
    pool = np.flatnonzero(adata.obs[column].astype(str).isin(list(labels)).to_numpy())
    if len(pool) == 0:
        raise InputError(f"no cell labelled {', '.join(labels)} in {column!r}", demo)
    rng = np.random.default_rng(seed)
    pick = pool[rng.integers(0, len(pool), n_cells)]
    x = sp.csr_matrix(adata.X)
    obs = adata.obs[[c for c in KEEP_OBS if c in adata.obs.columns]].iloc[pick].copy()
    source = adata.obs_names.to_numpy().astype(str)[pick]
    obs["resampled_from"] = source
    obs.index = [f"{name}~{i}" for i, name in enumerate(source)]
    resampled = ad.AnnData(obs=obs, var=adata.var.copy())
    resampled.uns["geneattn_resampled"] = {
        "from": Path(demo).name,
        "seed": int(seed),
        "with_replacement": True,
        "labels": list(labels),
    }
    # X is written a block of cells at a time: a million drawn cells never sit in memory
    with atomic_path(out) as tmp:
        resampled.write_h5ad(tmp)
        with CsrAppender(tmp, "X", n_columns=x.shape[1]) as writer:
            for start in range(0, n_cells, BLOCK):
                writer.append(x[pick[start : start + BLOCK]])
    return {"source_cells": len(pool), "cells": n_cells, "distinct": len(np.unique(pick))}


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of :func:`resample_cells`."""
    parser = argparse.ArgumentParser(prog="python -m geneattn.bench.resample")
    parser.add_argument("demo", help="raw counts .h5ad to draw from")
    parser.add_argument("out", help="resampled .h5ad to write")
    parser.add_argument("--cells", type=int, required=True, help="cells to draw")
    parser.add_argument("--column", default="source", help="obs column of condition labels")
    parser.add_argument("--labels", nargs="+", default=["Tumor", "NAT"], help="labels drawn")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw")
    args = parser.parse_args(argv)
    made = resample_cells(
        args.demo,
        args.out,
        n_cells=args.cells,
        column=args.column,
        labels=args.labels,
        seed=args.seed,
    )
    print(", ".join(f"{k}={v}" for k, v in made.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

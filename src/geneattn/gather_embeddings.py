"""One ``embeddings.h5ad`` from the shards of ``geneattn embed``, written a shard at a time.

The shards' ``obs`` tables (and ``uns``) are read backed and joined as
``anndata.concat(..., merge="same", uns_merge="first")`` joins them; the embeddings
(``obsm["X_geneattn"]``) are copied into the output one shard at a time with h5py, so the
memory needed is the cells' ``obs`` and one shard's embeddings, not every embedding. The
file reads back equal to ``anndata.concat`` of the whole shards.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from geneattn.errors import InputError

log = logging.getLogger(__name__)

KEY = "X_geneattn"


def gather_embeddings(shards: Sequence[str | Path], out: str | Path) -> int:
    """Concatenate embedding shards (in the order given) into ``out``.

    Parameters
    ----------
    shards
        ``.h5ad`` files written by ``geneattn embed``.
    out
        The ``.h5ad`` to write (a temporary name: it is written in place).

    Returns
    -------
    int
        Number of cells written.

    Raises
    ------
    InputError
        A shard is not an embedding shard, was made by another model than the first, has
        another embedding width, or repeats a cell of an earlier shard.
    """
    import anndata as ad
    import h5py

    from geneattn.io.readers import read_stage_h5ad

    lights, widths = [], []
    first_model = None
    seen: dict[str, str] = {}
    for i, path in enumerate(shards):
        part = read_stage_h5ad(path, backed=True)
        try:
            with h5py.File(path, "r") as f:
                if "obsm" not in f or KEY not in f["obsm"]:
                    raise InputError(f"not an embedding shard: no obsm[{KEY!r}]", path)
                shape = f["obsm"][KEY].shape
            model = part.uns.get("geneattn_model")
            if i == 0:
                first_model = model
            elif model != first_model:
                raise InputError(f"made by another model than {shards[0]}", path)
            if widths and shape[1] != widths[0]:
                raise InputError(f"embedding width differs from {shards[0]}", path)
            widths.append(shape[1])
            for cell in part.obs_names.astype(str):
                if cell in seen:
                    raise InputError(f"cell {cell!r} is also in {seen[cell]}", path)
                seen[cell] = str(path)
            lights.append(
                ad.AnnData(
                    X=np.zeros((part.n_obs, 0), dtype=np.float32),
                    obs=part.obs.copy(),
                    uns=dict(part.uns),
                )
            )
        finally:
            part.file.close()
    joined = ad.concat(lights, axis=0, merge="same", uns_merge="first")
    joined.write_h5ad(out)
    n = joined.n_obs
    with h5py.File(out, "a") as f:
        group = f.require_group("obsm")
        if "encoding-type" not in group.attrs:
            group.attrs["encoding-type"] = "dict"
            group.attrs["encoding-version"] = "0.1.0"
        target = group.create_dataset(KEY, shape=(n, widths[0]), dtype=np.float32)
        target.attrs["encoding-type"] = "array"
        target.attrs["encoding-version"] = "0.2.0"
        row = 0
        for path in shards:
            with h5py.File(path, "r") as shard:
                values = shard["obsm"][KEY][...]
            target[row : row + len(values)] = values.astype(np.float32, copy=False)
            row += len(values)
    log.info("gathered %d cells from %d shards", n, len(shards))
    return n

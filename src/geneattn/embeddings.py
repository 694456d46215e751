"""Cell embeddings: the embed stage's AnnData, and gathering its shards.

An embeddings AnnData has no genes: its ``obs`` is the QC'd obs of the embedded cells, its
``obsm["X_geneattn"]`` the float32 embeddings and its ``uns["geneattn_model"]`` the model's
``params`` as strings (shards of different models are refused when gathered).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from geneattn.errors import InputError

if TYPE_CHECKING:
    import anndata as ad
    import pandas as pd

    from geneattn.models.protocol import AttentionModel
    from geneattn.tokenize import TokenizedCells

__all__ = [
    "EMBEDDING_KEY",
    "MODEL_KEY",
    "embedding_anndata",
    "gather_embeddings",
    "model_record",
    "read_embeddings",
]

#: ``obsm`` key of the cell embeddings.
EMBEDDING_KEY = "X_geneattn"
#: ``uns`` key of the params of the model that made them.
MODEL_KEY = "geneattn_model"


def model_record(model: AttentionModel) -> dict[str, str]:
    """The model's ``params`` with every value as a string (as stored with embeddings)."""
    return {k: str(v) for k, v in model.params.items()}


def embedding_anndata(
    cells: TokenizedCells,
    model: AttentionModel,
    obs: pd.DataFrame,
    *,
    n_threads: int = 1,
    source: str | Path | None = None,
) -> ad.AnnData:
    """Embed ``cells`` and return them as an AnnData without genes.

    Parameters
    ----------
    cells
        The tokenized cells (all of them, or one shard).
    model
        The attention model.
    obs
        Cell metadata whose rows of ``cells.cell_ids`` are carried over.
    n_threads
        Rayon threads.
    source
        File of ``obs``, named in errors.

    Returns
    -------
    anndata.AnnData
        ``obs`` of the cells, ``obsm["X_geneattn"]`` float32, ``uns["geneattn_model"]``.

    Raises
    ------
    InputError
        A tokenized cell is not in ``obs``.
    """
    import anndata as ad
    import pandas as pd

    # one hash lookup of the shard's cells in the study's index (a sort of every cell id of
    # the study, as setdiff1d did, made each shard job's time grow with the study)
    names = pd.Index(obs.index.astype(str))
    if not names.is_unique:
        raise InputError("cell names repeat in it", source)
    rows = names.get_indexer(pd.Index(np.asarray(cells.cell_ids).astype(str)))
    if (rows < 0).any():
        missing = np.asarray(cells.cell_ids)[rows < 0]
        raise InputError(
            f"{missing.size} tokenized cells are not in it, e.g. {str(missing[0])!r}", source
        )
    emb = model.embed(cells, n_threads=n_threads)
    out = ad.AnnData(
        X=np.zeros((cells.n_cells, 0), dtype=np.float32),
        obs=obs.iloc[rows].copy(),
    )
    out.obsm[EMBEDDING_KEY] = emb.astype(np.float32)
    out.uns[MODEL_KEY] = model_record(model)
    return out


def gather_embeddings(parts: Sequence[ad.AnnData], sources: Sequence[str | Path]) -> ad.AnnData:
    """Concatenate embedding shards in the given order.

    Parameters
    ----------
    parts
        The shards (:func:`embedding_anndata`).
    sources
        The file of each shard, named in errors.

    Returns
    -------
    anndata.AnnData
        Every shard's cells.

    Raises
    ------
    InputError
        A shard has no embeddings, was made by another model, has another width, or repeats
        a cell of another shard.
    """
    import anndata as ad

    first = parts[0]
    for path, part in zip(sources, parts, strict=True):
        if EMBEDDING_KEY not in part.obsm:
            raise InputError("not an embedding shard: no obsm['X_geneattn']", path)
        if part.uns.get(MODEL_KEY) != first.uns.get(MODEL_KEY):
            raise InputError(f"made by another model than {sources[0]}", path)
        if part.obsm[EMBEDDING_KEY].shape[1] != first.obsm[EMBEDDING_KEY].shape[1]:
            raise InputError(f"embedding width differs from {sources[0]}", path)
    seen: dict[str, str | Path] = {}
    for path, part in zip(sources, parts, strict=True):
        for cell in part.obs_names.astype(str):
            if cell in seen:
                raise InputError(f"cell {cell!r} is also in {seen[cell]}", path)
            seen[cell] = path
    return ad.concat(parts, axis=0, merge="same", uns_merge="first")


def read_embeddings(path: str | Path, column: str) -> tuple[np.ndarray, np.ndarray]:
    """The cell embeddings of an embeddings ``.h5ad`` and each cell's ``obs[column]`` (str).

    Raises
    ------
    InputError
        The file cannot be read, has no embeddings or no such column.
    """
    from geneattn.io.readers import read_stage_h5ad

    emb = read_stage_h5ad(path)
    if EMBEDDING_KEY not in emb.obsm:
        raise InputError("no obsm['X_geneattn'] (not an embeddings file)", path)
    if column not in emb.obs.columns:
        raise InputError(f"no obs column {column!r}", path)
    return np.asarray(emb.obsm[EMBEDDING_KEY]), emb.obs[column].astype(str).to_numpy()


def gather_embedding_files(shards: Sequence[str | Path], out: str | Path) -> int:
    """:func:`gather_embeddings` of shard files into ``out``, one shard's embeddings at a time.

    The shards' ``obs`` tables (and ``uns``) are read backed and joined as
    :func:`gather_embeddings` joins them; the embeddings are copied into the output one shard
    at a time with h5py, so the memory needed is the cells' ``obs`` and one shard's
    embeddings, not every embedding. The file reads back equal to ``gather_embeddings`` of
    the whole shards.

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
                if "obsm" not in f or EMBEDDING_KEY not in f["obsm"]:
                    raise InputError(f"not an embedding shard: no obsm[{EMBEDDING_KEY!r}]", path)
                shape = f["obsm"][EMBEDDING_KEY].shape
            model = part.uns.get(MODEL_KEY)
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
        target = group.create_dataset(EMBEDDING_KEY, shape=(n, widths[0]), dtype=np.float32)
        target.attrs["encoding-type"] = "array"
        target.attrs["encoding-version"] = "0.2.0"
        row = 0
        for path in shards:
            with h5py.File(path, "r") as shard:
                values = shard["obsm"][EMBEDDING_KEY][...]
            target[row : row + len(values)] = values.astype(np.float32, copy=False)
            row += len(values)
    return n

"""Which cells a stage takes: the cells of one condition, and which genes each cell holds.

The condition of a cell is an ``obs`` column of the QC'd AnnData; the cells of the tokens
file are matched to it by cell id. :func:`condition_labels` checks and returns that column
(:func:`read_condition_labels` reads it from an ``.h5ad`` without loading the counts);
:func:`condition_positions` and :func:`labelled_positions` give the positions, among the
tokenized cells, of the cells of one label; :func:`cells_by_label` counts tokenized cells
per label (the tokenize summary the workflow shards by). :func:`presence_matrix` and
:func:`token_presence` say which genes each cell holds.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from geneattn.errors import InputError
from geneattn.shards import WHOLE, Shard

if TYPE_CHECKING:
    import pandas as pd

    from geneattn.tokenize import TokenizedCells

__all__ = [
    "cells_by_label",
    "condition_cells",
    "condition_labels",
    "condition_positions",
    "labelled_positions",
    "presence_matrix",
    "read_condition_labels",
    "read_condition_shard",
    "token_presence",
]

log = logging.getLogger(__name__)


def condition_labels(
    obs: pd.DataFrame, column: str, *, source: str | Path | None = None
) -> pd.Series:
    """The condition column of ``obs``, indexed by cell id (str).

    Parameters
    ----------
    obs
        Cell metadata (an AnnData's ``obs``).
    column
        The condition column.
    source
        File named in errors.

    Returns
    -------
    pandas.Series
        The labels as objects (missing labels stay missing), indexed by cell id.

    Raises
    ------
    InputError
        The column is missing (the message lists the columns) or cell ids repeat.
    """
    if column not in obs.columns:
        raise InputError(
            f"no obs column {column!r} (columns: {', '.join(map(str, obs.columns))})", source
        )
    if obs.index.has_duplicates:
        raise InputError("duplicated cell ids in obs", source)
    labels = obs[column].astype(object)
    labels.index = obs.index.astype(str)
    return labels


def read_condition_labels(path: str | Path, column: str) -> tuple[pd.Series, list[str]]:
    """The condition column of an ``.h5ad``'s obs (:func:`condition_labels`) and its var
    names, read without loading the counts.

    Raises
    ------
    InputError
        The file is missing or not an h5ad, or :func:`condition_labels` refuses its obs.
    """
    from geneattn.io.readers import read_obs_columns

    # Only the obs index, the one column and the var names: every shard job reads this,
    # and the whole obs table (string columns of every cell) made each job's time grow
    # with the study.
    obs, var_names = read_obs_columns(path, [column])
    return condition_labels(obs, column, source=path), var_names


def condition_positions(
    cell_ids: np.ndarray,
    labels: pd.Series,
    condition: str,
    *,
    column: str,
    source: str | Path | None = None,
) -> np.ndarray:
    """Positions among ``cell_ids`` of the cells labelled ``condition``.

    Tokenized cells without a label are left out with a warning naming ``source``.

    Parameters
    ----------
    cell_ids
        Ids of the tokenized cells, in file order.
    labels
        Condition of each cell, indexed by cell id (:func:`condition_labels`).
    condition
        The label.
    column
        Name of the condition column (for the error).
    source
        File the labels came from (for warnings and errors).

    Returns
    -------
    np.ndarray
        int64 positions, ascending.

    Raises
    ------
    InputError
        ``condition`` is not a label of the column (the message lists the labels).
    """
    joined = labels.reindex(np.asarray(cell_ids).astype(str))
    cell_labels = joined.to_numpy()
    _warn_unlabelled(int(joined.isna().sum()), source)
    present = sorted({str(x) for x in labels.dropna().unique()})
    if condition not in present:
        raise _not_a_label(condition, column, present, source)
    return np.flatnonzero(cell_labels.astype(object) == condition)


def _warn_unlabelled(n: int, source: str | Path | None) -> None:
    if n:
        log.warning("%d tokenized cells have no label in %s; they are left out", n, source)


def _not_a_label(
    condition: str, column: str, present: list[str], source: str | Path | None
) -> InputError:
    return InputError(
        f"condition {condition!r} not in column {column!r} (labels: {', '.join(present)})", source
    )


def labelled_positions(
    cell_ids: np.ndarray,
    labels: pd.Series,
    label: str,
    *,
    column: str,
    source: str | Path | None = None,
) -> np.ndarray:
    """Positions among ``cell_ids`` of the cells labelled ``label``.

    Raises
    ------
    InputError
        No cell carries the label (naming ``source``).
    """
    cell_labels = labels.reindex(np.asarray(cell_ids).astype(str)).to_numpy().astype(object)
    index = np.flatnonzero(cell_labels == label)
    if len(index) == 0:
        raise InputError(f"no cell labelled {label!r} in {column!r}", source)
    return index


def condition_cells(
    tokens: str | Path, obs: str | Path, condition: str, *, column: str
) -> np.ndarray:
    """Positions, in a tokens file, of its cells labelled ``condition`` in ``column``.

    The labels are those tokenize recorded in the tokens file
    (:func:`geneattn.tokenize.load_condition_labels`): one small array, so a shard job does
    not read every cell's id and label from the study's ``.h5ad``. Files without them (older,
    or tokenized without ``--condition-column``) are matched by cell id to ``obs``'s column
    (:func:`read_condition_labels`, :func:`condition_positions`), with the same result.

    Parameters
    ----------
    tokens
        The tokens file.
    obs
        The QC'd ``.h5ad`` the tokens came from.
    condition, column
        As for :func:`condition_positions`.

    Returns
    -------
    np.ndarray
        int64 positions, ascending.

    Raises
    ------
    InputError
        As :func:`condition_positions`.
    """
    from geneattn.tokenize import load_cell_ids, load_condition_labels

    recorded = load_condition_labels(tokens, column)
    if recorded is None:
        labels, _ = read_condition_labels(obs, column)
        return condition_positions(
            load_cell_ids(tokens), labels, condition, column=column, source=obs
        )
    _warn_unlabelled(int((recorded == "").sum()), obs)
    chosen = np.flatnonzero(recorded == condition)
    if not len(chosen):
        raise _not_a_label(condition, column, sorted(set(np.unique(recorded).tolist()) - {""}), obs)
    return chosen.astype(np.int64)


def read_condition_shard(
    tokens: str | Path,
    obs: str | Path,
    condition: str,
    *,
    column: str,
    shard: Shard = WHOLE,
) -> tuple[TokenizedCells, int]:
    """The ``shard`` of the tokenized cells labelled ``condition``, and how many cells carry
    that label.

    Only the shard's cells' tokens are read (:func:`geneattn.tokenize.load_tokens` with
    ``cells=``), so the memory needed follows the shard, not the study.

    Parameters
    ----------
    tokens, obs, condition, column
        As for :func:`condition_cells`.
    shard
        Which shard of the condition's cells.

    Returns
    -------
    tuple[TokenizedCells, int]
        The shard's cells, and the number of cells of the condition.
    """
    from geneattn.tokenize import load_tokens

    chosen = condition_cells(tokens, obs, condition, column=column)
    start, stop = shard.bounds(len(chosen))
    return load_tokens(tokens, cells=chosen[start:stop]), len(chosen)


def cells_by_label(
    obs: pd.DataFrame, column: str, cell_ids: np.ndarray, *, source: str | Path | None = None
) -> dict[str, int]:
    """Number of the cells ``cell_ids`` per label of ``obs[column]``, labels sorted.

    Raises
    ------
    InputError
        ``obs`` has no such column.
    """
    if column not in obs.columns:
        raise InputError(
            f"no obs column {column!r} (columns: {', '.join(map(str, obs.columns))})", source
        )
    labels = obs[column].astype(str).reindex(np.asarray(cell_ids).astype(str))
    return {str(k): int(v) for k, v in sorted(labels.value_counts().items())}


def presence_matrix(cells: TokenizedCells, tokens: np.ndarray, n_tokens: int) -> sp.csr_matrix:
    """Which of ``tokens`` each cell holds.

    Parameters
    ----------
    cells
        Tokenized cells.
    tokens
        Token ids of the columns, unique.
    n_tokens
        Number of token ids (every id in ``cells`` and ``tokens`` is below it).

    Returns
    -------
    sp.csr_matrix
        ``cells x len(tokens)`` int64 with entries 0/1 (a token repeated in a cell counts once).
    """
    column = np.full(n_tokens, -1, dtype=np.int64)
    column[tokens] = np.arange(len(tokens))
    rows = np.repeat(np.arange(cells.n_cells, dtype=np.int64), np.diff(cells.offsets))
    cols = column[cells.tokens]
    keep = cols >= 0
    p = sp.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.int64), (rows[keep], cols[keep])),
        shape=(cells.n_cells, len(tokens)),
    )
    p.sum_duplicates()
    p.data[:] = 1
    return p


def token_presence(cells: TokenizedCells) -> np.ndarray:
    """Number of cells holding each token id of the vocabulary (a token occurs once per
    cell), int64 of length ``len(cells.vocabulary)``."""
    return np.bincount(cells.tokens, minlength=len(cells.vocabulary))

"""A shard job's cells from the labels tokenize records, against the labels of ``obs``.

Tokenize records each cell's condition label and ``.h5ad`` row in ``tokens.npz``, so that a
shard job of a million-cell study does not read every cell's id and label from
``qc.h5ad``. Files without them (older ones) fall back to ``obs``: both give the same cells.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from geneattn.cells import condition_cells, read_condition_shard
from geneattn.errors import InputError
from geneattn.shards import Shard
from geneattn.testing import toy
from geneattn.tokenize import (
    condition_text,
    load_condition_labels,
    load_obs_rows,
    save_tokens,
    token_cell_count,
)


@pytest.fixture
def study(tmp_path):
    """30 tokenized cells of a 36-cell obs (some cells untokenized, one unlabelled), with
    tokens files written with and without the recorded arrays."""
    cells = toy.cells(3, 30, 12, vocab=40, frequent_first=False, prefix="c")
    ids = cells.cell_ids.astype(str)
    names = np.concatenate([ids, [f"x{i}" for i in range(6)]])[::-1]  # other order, extras
    labels = pd.Series(np.where(np.arange(36) % 3 == 0, "case", "control"), index=names)
    labels[ids[4]] = None
    obs = pd.DataFrame({"source": pd.Categorical(labels)}, index=names)
    ad.AnnData(np.zeros((36, 1), dtype=np.float32), obs=obs).write_h5ad(tmp_path / "qc.h5ad")
    rows = obs.index.get_indexer(ids)
    save_tokens(tmp_path / "old.npz", cells)
    save_tokens(
        tmp_path / "new.npz",
        cells,
        obs_rows=rows,
        conditions=("source", condition_text(obs.iloc[rows], "source")),
    )
    return tmp_path, cells, rows


@pytest.mark.parametrize("condition", ["case", "control"])
def test_recorded_labels_pick_the_cells_obs_picks(study, condition, caplog):
    tmp, _, _ = study
    qc = tmp / "qc.h5ad"
    old = condition_cells(tmp / "old.npz", qc, condition, column="source")
    new = condition_cells(tmp / "new.npz", qc, condition, column="source")
    np.testing.assert_array_equal(new, old)
    assert new.dtype == np.int64 and len(new) > 3
    assert "1 tokenized cells have no label" in caplog.text  # cell 4, both ways
    for s in range(3):
        shard = Shard(s, 3)
        a, n_a = read_condition_shard(tmp / "old.npz", qc, condition, column="source", shard=shard)
        b, n_b = read_condition_shard(tmp / "new.npz", qc, condition, column="source", shard=shard)
        assert n_a == n_b == len(old)
        np.testing.assert_array_equal(a.cell_ids, b.cell_ids)
        np.testing.assert_array_equal(a.tokens, b.tokens)


def test_recorded_arrays_and_their_errors(study):
    tmp, cells, rows = study
    qc = tmp / "qc.h5ad"
    assert token_cell_count(tmp / "new.npz") == cells.n_cells == 30
    np.testing.assert_array_equal(load_obs_rows(tmp / "new.npz", np.array([5, 0])), rows[[5, 0]])
    assert load_obs_rows(tmp / "old.npz", np.array([0])) is None
    assert load_condition_labels(tmp / "old.npz", "source") is None
    assert load_condition_labels(tmp / "new.npz", "patient") is None  # another column
    for tokens in ("old.npz", "new.npz"):
        with pytest.raises(
            InputError, match=r"'nope' not in column 'source' \(labels: case, control\)"
        ):
            condition_cells(tmp / tokens, qc, "nope", column="source")

"""Sample-level perturbation statistics on seeded toy shifts whose truth is known."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geneattn.perturb_stats import (
    SAMPLE_COLUMNS,
    cell_level_statistics,
    sample_level_statistics,
    sample_shift_table,
    sign_flip_p_value,
)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=8))
def test_sign_flip_p_value_enumerates_every_pattern(values):
    d = np.array(values)
    observed = abs(d.sum())
    hits = sum(
        abs(np.dot(s, d)) >= observed - 1e-12 * (np.abs(d).sum() + 1e-300)
        for s in itertools.product((1, -1), repeat=len(d))
    )
    assert sign_flip_p_value(d) == pytest.approx(hits / 2 ** len(d))


def test_sign_flip_p_value_known_values_and_random_patterns():
    assert sign_flip_p_value([1.0, 2.0, 3.0]) == 0.25
    assert sign_flip_p_value([0.5] * 10) == pytest.approx(2 / 1024)
    assert np.isnan(sign_flip_p_value([]))
    many = np.full(20, 0.1)
    p = sign_flip_p_value(many, n_permutations=999, rng=np.random.default_rng(1))
    assert p == pytest.approx(1 / 1000, abs=3 / 1000)
    with pytest.raises(ValueError, match="finite"):
        sign_flip_p_value([1.0, np.nan])


def toy_shifts(n_samples=6, cells=40, n_genes=60, n_true=0, effect=0.0, seed=0):
    """Genes 0..n_genes-1 are targets, n_genes..2*n_genes-1 null genes, all in bin 0; every
    gene has a random offset per sample (a donor effect) and cell noise; the first
    ``n_true`` targets shift by ``effect`` in every sample."""
    rng = np.random.default_rng(seed)
    samples = np.repeat([f"s{i}" for i in range(n_samples)], cells)
    rows = []
    for token in range(2 * n_genes):
        offset = rng.normal(0, 0.05, n_samples)
        shift = effect if token < n_true else 0.0
        values = shift + offset[np.arange(len(samples)) // cells]
        values = values + rng.normal(0, 0.02, len(samples))
        rows.append(
            pd.DataFrame(
                {
                    "token": token,
                    "cell": np.arange(len(samples)),
                    "cosine_shift": np.abs(values),
                    "goal_shift": values,
                }
            )
        )
    shifts = pd.concat(rows, ignore_index=True)
    targets = list(range(n_genes))
    null = list(range(n_genes, 2 * n_genes))
    bins = dict.fromkeys(range(2 * n_genes), 0)
    return shifts, targets, null, bins, samples


def test_sample_shift_table_subtracts_the_bins_null_mean_per_sample():
    shifts = pd.DataFrame(
        {
            "token": [1, 1, 1, 2, 2, 3, 3, 9],
            "cell": [0, 1, 2, 0, 2, 0, 1, 2],
            "cosine_shift": 0.0,
            "goal_shift": [1.0, 3.0, 5.0, 0.5, 1.5, 10.0, 20.0, 7.0],
        }
    )
    samples = np.array(["a", "a", "b"])
    # token 1 target (bin 0), tokens 2 (bin 0) and 3 (bin 1) null; token 9 ignored
    table = sample_shift_table(shifts, [1], [2, 3], {1: 0, 2: 0, 3: 1}, samples)
    assert table["sample"].tolist() == ["a", "b"]
    assert table["shift"].tolist() == [2.0, 5.0]
    assert table["null_shift"].tolist() == [0.5, 1.5]
    assert table["delta"].tolist() == [1.5, 3.5]
    assert table["n_cells"].tolist() == [2, 1]
    # a bin without null genes falls back to all null genes of the sample
    table = sample_shift_table(shifts, [1], [2, 3], {1: 5, 2: 0, 3: 1}, samples)
    assert table["null_shift"].tolist() == [(0.5 + 10 + 20) / 3, 1.5]


def test_sample_level_test_holds_its_level_where_the_cell_test_does_not():
    shifts, targets, null, bins, samples = toy_shifts(n_samples=6, seed=1)
    by_sample = sample_level_statistics(shifts, targets, null, bins, samples, seed=0)
    by_cell = cell_level_statistics(shifts, targets, null, bins)
    assert list(by_sample.columns) == list(SAMPLE_COLUMNS)
    assert list(by_cell.columns) == list(SAMPLE_COLUMNS)
    assert set(by_sample["unit"]) == {"samples"} and set(by_cell["unit"]) == {"cells"}
    # donor effects: nothing is true, the cell-level test calls most genes anyway
    assert (by_cell["p_value"] < 0.05).mean() > 0.5
    assert (by_sample["p_value"] < 0.05).mean() <= 0.15
    assert (by_sample["fdr"] < 0.05).sum() == 0
    # the exact sign-flip p-value of 6 samples is a multiple of 1/64 and at least 2/64
    assert np.allclose((by_sample["p_value"] * 64) % 1, 0)
    assert by_sample["p_value"].min() >= 2 / 64


def test_sample_level_test_finds_consistent_effects_with_intervals():
    shifts, targets, null, bins, samples = toy_shifts(
        n_samples=8, n_true=5, effect=0.3, n_genes=30, seed=2
    )
    out = sample_level_statistics(shifts, targets, null, bins, samples, seed=0)
    true = out[out["token"] < 5]
    assert (true["p_value"] == 2 / 256).all()
    assert (true["ci_low"] > 0.1).all() and (true["ci_high"] < 0.5).all()
    assert (true["ci_low"] <= true["effect"]).all() and (true["effect"] <= true["ci_high"]).all()
    assert (out["n_samples"] == 8).all() and (out["n_cells"] == 320).all()
    again = sample_level_statistics(shifts, targets, null, bins, samples, seed=0)
    pd.testing.assert_frame_equal(out, again)


def test_sample_level_test_needs_two_samples():
    shifts, targets, null, bins, samples = toy_shifts(n_samples=1, n_genes=5)
    out = sample_level_statistics(shifts, targets, null, bins, samples)
    assert out["p_value"].isna().all() and (out["n_samples"] == 1).all()
    assert out["effect"].notna().all()
    with pytest.raises(ValueError, match="confidence"):
        sample_level_statistics(shifts, targets, null, bins, samples, confidence=1.5)

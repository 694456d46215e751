"""The ratio suites' references agree with what they time (checked before timing too)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest


@pytest.fixture(scope="module")
def demo(resources_dir):
    """12 resampled demo cells and the study model, as `geneattn bench perturb` loads them."""
    from geneattn.bench.network import demo_study

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(resources_dir.parent)
        cells, model, _ = demo_study(12, seed=2)
    return cells, model


@pytest.mark.parametrize("value_rank", ["log", "none"])
def test_perturb_suite_reference_equals_the_edit_kernel(demo, value_rank):
    """The brute-force forward pass of `geneattn bench perturb` follows the study model's
    rank-scaled values (it did not, and the suite refused to time)."""
    from geneattn.bench.perturb import _brute
    from geneattn.edits import plan_edits

    cells, model = demo
    model = dataclasses.replace(model, params={**model.params, "value_rank": value_rank})
    genes = np.unique(cells.cell(0))[:6]
    plan = plan_edits(cells, genes, "delete")
    _, got = model.edit_embeddings(cells, plan.cell, plan.token, "delete", n_threads=2)
    want = _brute(model, cells, plan)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12 * np.abs(want).max())

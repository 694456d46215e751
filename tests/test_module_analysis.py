"""Module eigengenes, kME, grey, condition association and preservation on toy data."""

from __future__ import annotations

import numpy as np
import pytest

from geneattn.module_analysis import (
    grey_weak_members,
    hub_genes_by_kme,
    module_condition_association,
    module_eigengenes,
    module_kme,
    module_preservation,
    module_scores,
    zscore_columns,
)


def planted(n_cells=200, seed=0):
    """Module 1: genes 0-9 on factor f1; module 2: genes 10-17 on f2; genes 18-23 noise."""
    rng = np.random.default_rng(seed)
    f1, f2 = rng.standard_normal(n_cells), rng.standard_normal(n_cells)
    cols = [f1 * (1 + i / 10) + 0.4 * rng.standard_normal(n_cells) for i in range(10)]
    cols += [f2 + 0.6 * rng.standard_normal(n_cells) for _ in range(8)]
    cols += [rng.standard_normal(n_cells) for _ in range(6)]
    modules = np.array([1] * 10 + [2] * 8 + [0] * 6)
    return np.column_stack(cols), modules, f1, f2


def test_eigengenes_follow_the_planted_factors_with_a_fixed_sign():
    x, modules, f1, f2 = planted()
    ids, eig, explained = module_eigengenes(x, modules)
    assert ids.tolist() == [1, 2]
    assert np.corrcoef(eig[:, 0], f1)[0, 1] > 0.95
    assert np.corrcoef(eig[:, 1], f2)[0, 1] > 0.9
    assert np.allclose(eig.mean(axis=0), 0) and np.allclose(eig.std(axis=0), 1)
    assert (explained > 0.6).all() and (explained <= 1).all()
    # first PC of the z-scored block: equal to numpy's SVD up to scale
    z = zscore_columns(x[:, modules == 1])
    u, s, _ = np.linalg.svd(z, full_matrices=False)
    assert abs(np.corrcoef(u[:, 0], eig[:, 0])[0, 1]) == pytest.approx(1.0)
    assert explained[0] == pytest.approx(s[0] ** 2 / (s**2).sum())
    # flipping every gene's sign flips the scores' mean; the eigengene follows it
    _, scores = module_scores(x, modules)
    assert np.corrcoef(scores[:, 0], eig[:, 0])[0, 1] > 0.9


def test_kme_hubs_and_grey():
    x, modules, _, _ = planted()
    ids, eig, _ = module_eigengenes(x, modules)
    kme = module_kme(x, eig)
    assert kme.shape == (24, 2)
    assert (kme[:10, 0] > 0.7).all() and (np.abs(kme[18:, :]) < 0.3).all()
    reference = np.array(
        [[np.corrcoef(x[:, g], eig[:, m])[0, 1] for m in range(2)] for g in range(24)]
    )
    np.testing.assert_allclose(kme, reference, atol=1e-10)
    hubs = hub_genes_by_kme(np.array([f"g{i}" for i in range(24)]), modules, ids, kme, n_hubs=3)
    assert hubs["module"].tolist() == [1, 1, 1, 2, 2, 2]
    assert hubs["kme_rank"].tolist() == [1, 2, 3, 1, 2, 3]
    assert (np.diff(hubs["kme"].to_numpy()[:3]) <= 0).all()
    # noise genes wrongly placed in module 1 are greyed; the planted genes stay
    wrong = modules.copy()
    wrong[18:] = 1
    fixed = grey_weak_members(x, wrong, min_kme=0.3, min_size=5)
    assert (fixed[18:] == 0).all()
    assert len(set(fixed[:10].tolist())) == 1 and fixed[0] > 0
    assert len(set(fixed[10:18].tolist())) == 1 and fixed[10] > 0
    # a module left with fewer than min_size genes dissolves
    assert set(grey_weak_members(x, modules, min_kme=0.3, min_size=9).tolist()) == {0, 1}


def test_condition_association_uses_samples_as_units():
    rng = np.random.default_rng(3)
    samples = np.repeat([f"d{i}" for i in range(6)], 40)
    is_case = np.tile(np.repeat([True, False], 20), 6)
    donor = rng.normal(0, 1, 6)[np.arange(240) // 40]
    shifted = donor + 0.8 * is_case + 0.1 * rng.standard_normal(240)
    null = donor + 0.1 * rng.standard_normal(240)
    eig = np.column_stack([shifted, null])
    paired = module_condition_association(eig, np.array([1, 2]), is_case, samples=samples)
    assert paired["unit"].tolist() == ["samples_paired"] * 2
    assert paired["n_units"].tolist() == [6, 6]
    assert paired.loc[0, "p_value"] == pytest.approx(2 / 64)
    assert paired.loc[0, "diff"] == pytest.approx(0.8, abs=0.1)
    assert paired.loc[1, "p_value"] > 0.05
    cells = module_condition_association(eig, np.array([1, 2]), is_case, n_permutations=500)
    assert cells["unit"].tolist() == ["cells", "cells"] and cells["n_units"].tolist() == [240] * 2
    # unpaired: each donor one condition; 3 vs 3 samples, exact over C(6, 3) = 20 labellings
    one_each = np.repeat([True, False, True, False, True, False], 40)
    eig2 = np.column_stack([donor * 0 + 2.0 * one_each + 0.1 * rng.standard_normal(240)])
    unpaired = module_condition_association(eig2, np.array([1]), one_each, samples=samples)
    assert unpaired.loc[0, "unit"] == "samples" and unpaired.loc[0, "n_units"] == 6
    assert unpaired.loc[0, "p_value"] == pytest.approx(2 / 20)
    with pytest.raises(ValueError, match="both conditions"):
        module_condition_association(eig, np.array([1, 2]), np.ones(240, bool))


def test_preservation_separates_a_kept_module_from_a_lost_one():
    rng = np.random.default_rng(4)
    n = 60
    modules = np.zeros(n, dtype=np.int64)
    modules[:10], modules[10:20] = 1, 2
    base = rng.random((n, n)) * 0.2
    reference = base.copy()
    reference[:10, :10] += 0.8
    reference[10:20, 10:20] += 0.8
    test = rng.random((n, n)) * 0.2
    test[:10, :10] += 0.8 + 0.1 * reference[:10, :10]  # module 1 kept
    out = module_preservation(reference, test, modules, n_permutations=100, seed=0)
    kept, lost = out.iloc[0], out.iloc[1]
    assert kept["module"] == 1 and kept["z_summary"] > 10 and kept["p_density"] < 0.02
    assert lost["module"] == 2 and lost["z_summary"] < 2
    assert out["size"].tolist() == [10, 10]
    with pytest.raises(ValueError, match="shapes differ"):
        module_preservation(reference, test[:5, :5], modules)

"""Enrichment: BH against a hand-computed example, hypergeometric p-values by hand."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

from geneattn.enrichment import ENRICHMENT_COLUMNS, bh_fdr, load_gene_sets, module_enrichment
from geneattn.errors import InputError


def test_bh_fdr_hand_example():
    # sorted: 0.005 (rank 1), 0.01 (2), 0.03 (3), 0.04 (4), 0.5 (5); m = 5
    # p * m / rank: 0.025, 0.025, 0.05, 0.05, 0.5; running minimum from the top rank down
    # leaves them unchanged; back in input order:
    p = [0.01, 0.04, 0.03, 0.005, 0.5]
    np.testing.assert_allclose(bh_fdr(p), [0.025, 0.05, 0.05, 0.025, 0.5])


def test_bh_fdr_monotonicity_cap_and_nan():
    # 0.02 * 3 / 1 = 0.06 > 0.03 * 3 / 2 = 0.045 -> the smaller later value carries down
    np.testing.assert_allclose(bh_fdr([0.02, 0.03, 0.9]), [0.045, 0.045, 0.9])
    # capped at 1; NaN is not a test and stays NaN (m = 2 here)
    out = bh_fdr([0.9, np.nan, 0.6])
    np.testing.assert_allclose(out[[0, 2]], [0.9, 0.9])
    assert np.isnan(out[1])
    np.testing.assert_allclose(bh_fdr([0.7]), [0.7])
    assert bh_fdr([]).shape == (0,)
    # ties keep equal q-values
    np.testing.assert_allclose(bh_fdr([0.01, 0.01, 0.01]), [0.01, 0.01, 0.01])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bh_fdr([1.5])


def hypergeom_tail(k: int, universe: int, set_size: int, module_size: int) -> float:
    """P(X >= k) by summing the probability mass function with exact binomials."""
    total = comb(universe, module_size)
    upper = min(set_size, module_size)
    return (
        sum(
            comb(set_size, x) * comb(universe - set_size, module_size - x)
            for x in range(k, upper + 1)
        )
        / total
    )


GENE_IDS = np.array([f"ENSG{i:03d}" for i in range(20)])
SYMBOLS = np.array([f"S{i}" if i != 7 else "" for i in range(20)])
MODULES = np.array([1] * 6 + [2] * 5 + [0] * 9)


def test_module_enrichment_hypergeometric_by_hand():
    sets = {
        "hallmark": {
            # 4 of module 1, 1 of module 2, 1 unassigned, 1 unknown gene: set size 6
            "SET_A": ["S0", "S1", "S2", "S3", "S6", "S12", "UNKNOWN"],
            # gene 7 has no symbol: matched by Ensembl ID; 2 universe genes -> skipped
            "SET_SMALL": ["ENSG007", "S8", "NOPE"],
        },
        "markers": {"SET_B": ["ENSG007", "S8", "S9", "S10", "S0"]},
    }
    table = module_enrichment(MODULES, GENE_IDS, SYMBOLS, sets)
    assert list(table.columns) == ENRICHMENT_COLUMNS
    rows = {(r.module, r.gene_set): r for r in table.itertuples()}
    assert set(rows) == {(1, "SET_A"), (2, "SET_A"), (1, "SET_B"), (2, "SET_B")}
    a1 = rows[(1, "SET_A")]
    assert (a1.overlap, a1.set_size, a1.module_size, a1.universe) == (4, 6, 6, 20)
    assert a1.p_value == pytest.approx(hypergeom_tail(4, 20, 6, 6), rel=1e-12)
    assert a1.genes == "S0,S1,S2,S3" and a1.collection == "hallmark"
    b2 = rows[(2, "SET_B")]
    assert (b2.overlap, b2.set_size, b2.module_size) == (4, 5, 5)
    assert b2.genes == "ENSG007,S8,S9,S10"
    assert b2.p_value == pytest.approx(hypergeom_tail(4, 20, 5, 5), rel=1e-12)
    # BH over all 4 tests (module x set, skipped sets excluded)
    np.testing.assert_allclose(
        table.sort_values(["module", "gene_set"])["fdr"],
        bh_fdr(table.sort_values(["module", "gene_set"])["p_value"]),
    )
    assert table["fdr"].is_monotonic_increasing


def test_module_enrichment_counts_zero_overlap_tests_in_the_fdr():
    sets = {"c": {"ONLY_M1": ["S0", "S1", "S2"]}}
    table = module_enrichment(MODULES, GENE_IDS, SYMBOLS, sets)
    # two tests (modules 1 and 2); module 2 has no overlap and is not listed
    assert table["module"].tolist() == [1]
    p = hypergeom_tail(3, 20, 3, 6)
    assert table["fdr"].item() == pytest.approx(min(1.0, p * 2))


def test_module_enrichment_with_no_testable_set_is_an_empty_table():
    table = module_enrichment(MODULES, GENE_IDS, SYMBOLS, {"c": {"TINY": ["S0", "S1"]}})
    assert table.empty and list(table.columns) == ENRICHMENT_COLUMNS


def test_module_enrichment_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="same length"):
        module_enrichment(MODULES[:5], GENE_IDS, SYMBOLS, {})
    with pytest.raises(ValueError, match="non-negative"):
        module_enrichment(-MODULES, GENE_IDS, SYMBOLS, {})


def test_load_gene_sets(tmp_path):
    (tmp_path / "hallmark.gmt").write_text("H_A\tdesc\tS0\tS1\tS2\nH_B\tdesc\tS3\tS4\tS5\n")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "hallmark.gmt").write_text("X\tdesc\tS0\n")
    (tmp_path / "bad.gmt").write_text("NAME_ONLY\n")
    sets = load_gene_sets([tmp_path / "hallmark.gmt"])
    assert sets == {"hallmark": {"H_A": ["S0", "S1", "S2"], "H_B": ["S3", "S4", "S5"]}}
    with pytest.raises(InputError, match="already read") as err:
        load_gene_sets([tmp_path / "hallmark.gmt", tmp_path / "other" / "hallmark.gmt"])
    assert err.value.path == tmp_path / "other" / "hallmark.gmt"
    with pytest.raises(InputError) as err:
        load_gene_sets([tmp_path / "bad.gmt"])
    assert str(tmp_path / "bad.gmt") in str(err.value)

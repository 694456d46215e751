"""Module evaluation: enriched fraction and program cohesion against random gene sets."""

from __future__ import annotations

import numpy as np
import pandas as pd

from geneattn.cli import main
from geneattn.evaluation import enriched_fraction, program_cohesion


def _modules():
    genes = [f"G{i}" for i in range(200)]
    module = np.repeat(np.arange(1, 11), 20)  # 10 modules of 20 genes
    module[-5:] = 0
    return pd.DataFrame({"gene": genes, "module": module})


def test_planted_program_is_significant_and_scattered_is_not():
    mods = _modules()
    programs = {
        "planted": ["G40", "G41", "G42", "G43", "G44"],  # all in module 3
        "scattered": ["G0", "G25", "G50", "G75", "G100"],  # five different modules
        "absent": ["NOPE", "G199"],  # G199 is unassigned
    }
    out = program_cohesion(mods, programs, n_permutations=2000, seed=1).set_index("program")
    assert out.loc["planted", "together"] == 5 and out.loc["planted", "module"] == 3
    assert out.loc["planted", "p_value"] < 0.001
    assert out.loc["scattered", "together"] == 1 and out.loc["scattered", "p_value"] == 1.0
    assert out.loc["absent", "in_network"] == 0 and np.isnan(out.loc["absent", "p_value"])
    again = program_cohesion(mods, programs, n_permutations=2000, seed=1)
    assert again.equals(out.reset_index())


def test_enriched_fraction_counts_modules_once():
    enr = pd.DataFrame({"module": [1, 1, 2, 3], "fdr": [0.01, 0.2, 0.049, 0.5]})
    assert enriched_fraction(_modules(), enr) == {"n_modules": 10, "n_enriched": 2, "fraction": 0.2}


def test_cli_writes_table_and_refuses_bad_tables(tmp_path, capsys):
    _modules().to_csv(tmp_path / "m.tsv", sep="\t", index=False)
    pd.DataFrame({"module": [3], "fdr": [0.001]}).to_csv(tmp_path / "e.tsv", sep="\t", index=False)
    args = [
        "evaluate",
        "--modules",
        str(tmp_path / "m.tsv"),
        "--enrichment",
        str(tmp_path / "e.tsv"),
    ]
    assert main([*args, "--program", "p=G40,G41,G42", "--out", str(tmp_path / "ev.tsv")]) == 0
    text = (tmp_path / "ev.tsv").read_text()
    assert "# enriched at FDR < 0.05: 1 (0.100)" in text
    assert "\np\t3\t3\t3\t3\t" in text
    pd.DataFrame({"x": [1]}).to_csv(tmp_path / "bad.tsv", sep="\t", index=False)
    bad = [
        "evaluate",
        "--modules",
        str(tmp_path / "bad.tsv"),
        "--enrichment",
        str(tmp_path / "e.tsv"),
    ]
    assert main([*bad, "--out", str(tmp_path / "ev2.tsv")]) == 2
    assert "bad.tsv" in capsys.readouterr().err and not (tmp_path / "ev2.tsv").exists()

"""Do the modules mean something? Enrichment and known-program cohesion.

Two measurements, written per study by ``geneattn evaluate``:

* the fraction of modules with at least one gene set enriched at FDR < ``fdr``;
* for each known gene program (for T cells: cytotoxicity, regulatory T cells, proliferation,
  interferon response), how many of its genes that are in the network share one module,
  against chance: the p-value is the fraction of random gene sets of the same size, drawn
  from the network's assigned genes, whose largest same-module group is at least as large
  (seeded permutations, ``(1 + hits) / (1 + n)``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

#: Known programs of T cells and other immune cells (symbols).
DEFAULT_PROGRAMS: dict[str, list[str]] = {
    "cytotoxicity": ["GZMB", "PRF1", "NKG7", "GNLY", "GZMA"],
    "regulatory_t_cells": ["FOXP3", "IL2RA", "CTLA4", "TNFRSF4"],
    "proliferation": ["MKI67", "TOP2A"],
    "interferon_response": ["ISG15", "IFI6", "MX1"],
}


def read_table(path: str | Path, columns: set[str]) -> pd.DataFrame:
    """A TSV table with at least ``columns`` (the module or enrichment table).

    Raises
    ------
    InputError
        The file is missing, not a TSV table, or lacks a column.
    """
    from geneattn.errors import InputError

    try:
        table = pd.read_csv(path, sep="\t")
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(f"not a TSV table ({err})", path) from None
    if missing := columns - set(table.columns):
        raise InputError(f"missing columns {sorted(missing)}", path)
    return table


def evaluation_text(frac: dict, cohesion: pd.DataFrame, *, fdr: float) -> str:
    """``evaluation.tsv``: the :func:`enriched_fraction` summary as ``#`` lines, then the
    :func:`program_cohesion` table."""
    head = (
        f"# modules: {frac['n_modules']}\n# enriched at FDR < {fdr:g}: {frac['n_enriched']}"
        f" ({frac['fraction']:.3f})\n"
    )
    return head + cohesion.to_csv(sep="\t", index=False, float_format="%.6g")


def enriched_fraction(
    modules: pd.DataFrame, enrichment: pd.DataFrame, *, fdr: float = 0.05
) -> dict:
    """Fraction of modules with at least one gene set at ``fdr``.

    Parameters
    ----------
    modules
        Module table with columns ``gene`` and ``module`` (0 = unassigned).
    enrichment
        Enrichment table with columns ``module`` and ``fdr``.
    fdr
        FDR threshold.

    Returns
    -------
    dict
        ``n_modules``, ``n_enriched``, ``fraction``.
    """
    ids = sorted(set(modules.loc[modules["module"] > 0, "module"]))
    hit = set(enrichment.loc[pd.to_numeric(enrichment["fdr"], errors="coerce") < fdr, "module"])
    n_enriched = sum(m in hit for m in ids)
    return {
        "n_modules": len(ids),
        "n_enriched": n_enriched,
        "fraction": n_enriched / len(ids) if ids else 0.0,
    }


def program_cohesion(
    modules: pd.DataFrame,
    programs: dict[str, list[str]],
    *,
    n_permutations: int = 10_000,
    seed: int = 0,
) -> pd.DataFrame:
    """How many genes of each program share a module, against random gene sets.

    Parameters
    ----------
    modules
        Module table with columns ``gene`` (symbol) and ``module`` (0 = unassigned).
    programs
        ``{name: [symbols]}``.
    n_permutations
        Random gene sets per program.
    seed
        Seed of the random gene sets.

    Returns
    -------
    pd.DataFrame
        One row per program: ``program``, ``genes``, ``in_network`` (assigned genes of the
        program), ``together`` (largest group in one module), ``module`` (that module),
        ``expected_together`` (mean over random sets), ``p_value``, ``members`` (genes in
        that module).
    """
    assigned = modules.loc[modules["module"] > 0, ["gene", "module"]]
    labels = assigned["module"].to_numpy()
    module_of = dict(zip(assigned["gene"].astype(str), labels, strict=True))
    rng = np.random.default_rng(seed)
    rows = []
    for name, genes in programs.items():
        present = [g for g in genes if g in module_of]
        n = len(present)
        row = {"program": name, "genes": len(genes), "in_network": n}
        if n < 2:
            rows.append(
                row
                | {
                    "together": n,
                    "module": 0,
                    "expected_together": float(n),
                    "p_value": float("nan"),
                    "members": ",".join(present),
                }
            )
            continue
        mods = np.array([module_of[g] for g in present])
        values, counts = np.unique(mods, return_counts=True)
        best = values[np.argmax(counts)]
        together = int(counts.max())
        picks = np.argpartition(rng.random((n_permutations, len(labels))), n, axis=1)[:, :n]
        null = np.array([np.bincount(r).max() for r in labels[picks]])
        rows.append(
            row
            | {
                "together": together,
                "module": int(best),
                "expected_together": float(null.mean()),
                "p_value": float((1 + np.sum(null >= together)) / (1 + n_permutations)),
                "members": ",".join(g for g, m in zip(present, mods, strict=True) if m == best),
            }
        )
    return pd.DataFrame(rows)

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


def program_pair_sharing(
    modules: pd.DataFrame,
    programs: dict[str, list[str]],
    *,
    n_permutations: int = 10_000,
    seed: int = 0,
) -> pd.DataFrame:
    """Fraction of each program's gene pairs that share a module, against random gene sets.

    Unlike :func:`program_cohesion`, which draws its random sets from the assigned genes, the
    universe here is every gene of ``modules``, unassigned ones (module 0) included, and a pair
    shares a module only when both genes are in the same module ``> 0``. Module assignments
    over the same universe (attention modules and co-expression modules of the same genes)
    are then compared on the same footing: a method that leaves a program's genes unassigned
    is not rewarded for it.

    Parameters
    ----------
    modules
        Columns ``gene`` (symbol) and ``module`` (0 = unassigned); one row per gene of the
        universe.
    programs
        ``{name: [symbols]}``.
    n_permutations
        Random gene sets per program, each of the size of the program's genes in the universe.
    seed
        Seed of the random gene sets (one generator for all programs, in their order).

    Returns
    -------
    pandas.DataFrame
        One row per program: ``program``, ``genes``, ``in_universe``, ``assigned`` (in a module
        ``> 0``), ``pairs`` (``n (n - 1) / 2`` over the genes in the universe),
        ``shared_pairs``, ``fraction`` (shared / pairs), ``expected_fraction`` (mean over the
        random sets), ``p_value`` (``(1 + #{null >= fraction}) / (1 + n_permutations)``;
        NaN with fewer than 2 genes in the universe), ``module`` (the module holding most of
        the program, 0 if none holds two of its genes) and ``members`` (its genes there).
    """
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be at least 1, got {n_permutations}")
    genes = modules["gene"].astype(str).to_numpy()
    labels = modules["module"].to_numpy(dtype=np.int64)
    if np.any(labels < 0):
        raise ValueError("module numbers must be non-negative (0 = unassigned)")
    module_of = dict(zip(genes.tolist(), labels.tolist(), strict=False))
    n_labels = int(labels.max()) + 1 if len(labels) else 1
    rng = np.random.default_rng(seed)
    rows = []
    for name, members in programs.items():
        present = list(dict.fromkeys(g for g in members if g in module_of))
        n = len(present)
        mods = np.array([module_of[g] for g in present], dtype=np.int64)
        row = {
            "program": name,
            "genes": len(members),
            "in_universe": n,
            "assigned": int(np.sum(mods > 0)),
            "pairs": n * (n - 1) // 2,
        }
        if n < 2:
            rows.append(
                row
                | {
                    "shared_pairs": 0,
                    "fraction": float("nan"),
                    "expected_fraction": float("nan"),
                    "p_value": float("nan"),
                    "module": 0,
                    "members": "",
                }
            )
            continue
        shared = int(_shared_pairs(mods[None, :], n_labels)[0])
        fraction = shared / row["pairs"]
        picks = np.argpartition(rng.random((n_permutations, len(labels))), n, axis=1)[:, :n]
        null = _shared_pairs(labels[picks], n_labels) / row["pairs"]
        counts = np.bincount(mods, minlength=n_labels)
        counts[0] = 0
        best = int(np.argmax(counts)) if counts.max() >= 2 else 0
        rows.append(
            row
            | {
                "shared_pairs": shared,
                "fraction": fraction,
                "expected_fraction": float(null.mean()),
                "p_value": float((1 + np.sum(null >= fraction - 1e-12)) / (1 + n_permutations)),
                "module": best,
                "members": ",".join(g for g, m in zip(present, mods, strict=True) if m == best)
                if best
                else "",
            }
        )
    return pd.DataFrame(rows, columns=_SHARING_COLUMNS)


#: Columns of :func:`program_pair_sharing` (also of its table with no program).
_SHARING_COLUMNS = [
    "program", "genes", "in_universe", "assigned", "pairs", "shared_pairs", "fraction",
    "expected_fraction", "p_value", "module", "members",
]  # fmt: skip


def _shared_pairs(labels: np.ndarray, n_labels: int) -> np.ndarray:
    """Per row of ``labels`` (sets x genes), the pairs of genes in one module ``> 0``."""
    n_sets = labels.shape[0]
    flat = (np.arange(n_sets)[:, None] * n_labels + labels).ravel()
    counts = np.bincount(flat, minlength=n_sets * n_labels).reshape(n_sets, n_labels)
    counts = counts[:, 1:].astype(np.int64)
    return (counts * (counts - 1) // 2).sum(axis=1)


def immune_marker_programs(
    path: str | Path, *, min_genes: int = 3, max_genes: int = 50
) -> dict[str, list[str]]:
    """Positive marker sets of every cell type of pegasus' immune-marker file.

    The file (``genesets/human_immune_cell_markers.json``) lists cell types with ``markers``
    (groups of genes; a trailing ``+`` marks a positive, ``-`` a negative marker) and nested
    ``subtypes`` of the same form. Each cell type, at any depth, gives one program: its
    positive markers, in file order, without repeats.

    Parameters
    ----------
    path
        The JSON file.
    min_genes, max_genes
        Programs with fewer or more positive markers are left out.

    Returns
    -------
    dict
        ``{"markers:<cell type>": [symbols]}``.

    Raises
    ------
    InputError
        If the file is missing or not JSON of that form.
    """
    import json

    from geneattn.errors import InputError

    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"not a JSON file ({err})", path) from None
    out: dict[str, list[str]] = {}

    def walk(cell_types: object) -> None:
        if not isinstance(cell_types, list):
            raise InputError("expected a list of cell types with 'name' and 'markers'", path)
        for entry in cell_types:
            if not isinstance(entry, dict) or "name" not in entry:
                raise InputError("a cell type without a name", path)
            genes: list[str] = []
            for group in entry.get("markers", []):
                for g in group.get("genes", []):
                    g = str(g).strip()
                    if g.endswith("+"):
                        genes.append(g[:-1])
            genes = list(dict.fromkeys(genes))
            if min_genes <= len(genes) <= max_genes:
                out[f"markers:{entry['name']}"] = genes
            sub = entry.get("subtypes")
            if isinstance(sub, dict):
                walk(sub.get("cell_types", []))
            elif isinstance(sub, list):
                walk(sub)

    if not isinstance(data, dict) or "cell_types" not in data:
        raise InputError("no 'cell_types' list (not pegasus' marker file)", path)
    walk(data["cell_types"])
    return out

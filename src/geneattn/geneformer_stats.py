"""Geneformer's ``InSilicoPerturberStats`` modes over per-cell shifts, with its column names.

Input is a long table of per-cell values (``token``, ``cell`` and one column per state or a
``cos_sim`` column), as :func:`geneattn.geneformer_perturb.geneformer_perturbation_shifts`
writes; the output tables use Geneformer's column names (``Shift_to_goal_end``,
``Goal_end_vs_random_pval``, ``Goal_end_FDR``, ``Test_vs_null_pval``, ...) so they drop
into analyses written for Geneformer. The golden tests compare them with Geneformer's own
tables (upstream commit 05fcbeb).

- :func:`goal_state_shift`: each gene's mean shift toward the goal (and each alternative)
  state; Wilcoxon rank-sum (``scipy.stats.ranksums``) of its shifts against the shifts of
  all perturbed genes pooled ("random"), Benjamini-Hochberg FDR; Geneformer's order.
- :func:`vs_null`: each gene's shifts in the test cells against those in null cells.
- :func:`mixture_model`: a two-component Gaussian mixture over the genes' mean
  similarities; ``Impact_component`` 1 for the low-similarity (impact) component.

:func:`geneformer_table` runs one of them on the gathered shards of the perturb stage
(config ``perturb.geneformer_stats``; ``perturb.alt_states`` add the alternative end
states, ``perturb.null_study`` is the null of ``vs_null``).

Differences from Geneformer, by design: Geneformer downsamples the pooled "random" shifts
to 100,000 with Python's ``random`` in its own cell order; here the pool is downsampled with
``numpy.random.default_rng(seed)`` (so only above 100,000 values do p-values differ).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from geneattn.enrichment import bh_fdr
from geneattn.errors import InputError

__all__ = [
    "STATS_MODES",
    "geneformer_table",
    "goal_state_shift",
    "mixture_model",
    "null_shift_file",
    "vs_null",
]

#: Geneformer's cap on the pooled random shifts.
RANDOM_CAP = 100_000


def _ranksums_p(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import ranksums

    x = x[np.isfinite(x)]
    y = y[np.isfinite(y)]
    if x.size == 0 or y.size == 0:
        return float("nan")
    return float(ranksums(x, y).pvalue)


def _check(shifts: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = {"token", *columns} - set(shifts.columns)
    if missing:
        raise InputError(f"the shift table lacks the columns {sorted(missing)}")


def goal_state_shift(
    shifts: pd.DataFrame,
    *,
    goal: str,
    alt_states: Sequence[str] = (),
    seed: int = 42,
) -> pd.DataFrame:
    """Geneformer's ``goal_state_shift`` mode (``genes_perturbed="all"``).

    Parameters
    ----------
    shifts
        Per (gene, cell): ``token`` and ``shift_to_{state}`` columns.
    goal
        The goal state.
    alt_states
        Alternative end states.
    seed
        Seed of the downsampling of the pooled random shifts (above 100,000).

    Returns
    -------
    pandas.DataFrame
        ``Gene`` (token), ``Shift_to_goal_end``, ``Shift_to_alt_end_{s}``,
        ``Goal_end_vs_random_pval``, ``Alt_end_vs_random_pval_{s}``, ``Goal_end_FDR``,
        ``Alt_end_FDR_{s}``, ``N_Detections``, ``Sig``; sorted by ``Sig`` (descending),
        ``Shift_to_goal_end`` (descending), ``Goal_end_FDR``.
    """
    states = [goal, *alt_states]
    cols = [f"shift_to_{s}" for s in states]
    _check(shifts, cols)
    rng = np.random.default_rng(seed)
    pooled = {}
    for s, col in zip(states, cols, strict=True):
        v = shifts[col].to_numpy(dtype=np.float64)
        pooled[s] = rng.choice(v, RANDOM_CAP, replace=False) if v.size > RANDOM_CAP else v
    rows = []
    for tok, g in shifts.groupby("token", sort=True):
        row = {"Gene": int(tok)}
        for s, col in zip(states, cols, strict=True):
            v = g[col].to_numpy(dtype=np.float64)
            name = "goal_end" if s == goal else f"alt_end_{s}"
            row[f"Shift_to_{name}"] = float(np.mean(v))
            key = "Goal_end_vs_random_pval" if s == goal else f"Alt_end_vs_random_pval_{s}"
            row[key] = _ranksums_p(pooled[s], v)
        row["N_Detections"] = len(g)
        rows.append(row)
    table = pd.DataFrame(rows)
    order = ["Gene", "Shift_to_goal_end"]
    order += [f"Shift_to_alt_end_{s}" for s in alt_states]
    order += ["Goal_end_vs_random_pval"] + [f"Alt_end_vs_random_pval_{s}" for s in alt_states]
    if table.empty:
        return pd.DataFrame(columns=[*order, "Goal_end_FDR", "N_Detections", "Sig"])
    table["Goal_end_FDR"] = bh_fdr(table["Goal_end_vs_random_pval"].to_numpy())
    for s in alt_states:
        table[f"Alt_end_FDR_{s}"] = bh_fdr(table[f"Alt_end_vs_random_pval_{s}"].to_numpy())
    order += ["Goal_end_FDR"] + [f"Alt_end_FDR_{s}" for s in alt_states]
    table["Sig"] = (table["Goal_end_FDR"] < 0.05).astype(np.int64)
    table = table[[*order, "N_Detections", "Sig"]]
    return table.sort_values(
        ["Sig", "Shift_to_goal_end", "Goal_end_FDR"],
        ascending=[False, False, True],
        kind="mergesort",
    ).reset_index(drop=True)


def vs_null(test: pd.DataFrame, null: pd.DataFrame, *, column: str = "cos_sim") -> pd.DataFrame:
    """Geneformer's ``vs_null`` mode: each gene's shifts in test vs null cells.

    Parameters
    ----------
    test, null
        Per (gene, cell) values: ``token`` and ``column``.
    column
        The value compared (Geneformer's raw ``cos_sims``: ``cos_sim``).

    Returns
    -------
    pandas.DataFrame
        ``Gene``, ``Test_avg_shift``, ``Null_avg_shift``, ``Test_vs_null_avg_shift``,
        ``Test_vs_null_pval`` (NaN -> 1), ``Test_vs_null_FDR``, ``N_Detections_test``,
        ``N_Detections_null``, ``Sig``; Geneformer's order.
    """
    _check(test, [column])
    _check(null, [column])
    null_by = {int(t): g[column].to_numpy(dtype=np.float64) for t, g in null.groupby("token")}
    rows = []
    for tok, g in test.groupby("token", sort=True):
        v = g[column].to_numpy(dtype=np.float64)
        n = null_by.get(int(tok), np.array([]))
        p = _ranksums_p(v, n)
        rows.append(
            {
                "Gene": int(tok),
                "Test_avg_shift": float(np.mean(v)),
                "Null_avg_shift": float(np.mean(n)) if n.size else float("nan"),
                "Test_vs_null_avg_shift": float(np.mean(v) - np.mean(n))
                if n.size
                else float("nan"),
                "Test_vs_null_pval": 1.0 if np.isnan(p) else p,
                "N_Detections_test": len(v),
                "N_Detections_null": len(n),
            }
        )
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table.insert(5, "Test_vs_null_FDR", bh_fdr(table["Test_vs_null_pval"].to_numpy()))
    table["Sig"] = (table["Test_vs_null_FDR"] < 0.05).astype(np.int64)
    return table.sort_values(
        ["Sig", "Test_vs_null_avg_shift", "Test_vs_null_FDR"],
        ascending=[False, False, True],
        kind="mergesort",
    ).reset_index(drop=True)


def _gaussian_mixture_1d(x: np.ndarray, *, max_iter: int = 100, tol: float = 1e-3):
    """Two-component 1-D Gaussian mixture, fitted as scikit-learn's ``GaussianMixture``
    with its defaults (the fit Geneformer uses); components ordered by ascending mean.

    Hard responsibilities from 2-means (Lloyd's iterations from the means of the lower and
    upper halves, until no label changes), then EM until the mean log-likelihood changes by
    less than ``tol`` (scikit-learn's stopping rule, not full convergence), variances
    regularised by ``1e-6`` (``reg_covar``).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size < 2:
        raise InputError("the mixture model needs at least two genes")
    s = np.sort(x)
    centre = np.array([s[: s.size // 2].mean(), s[s.size // 2 :].mean()])
    label = np.full(x.size, -1)
    for _ in range(300):
        new = np.abs(x[:, None] - centre[None, :]).argmin(axis=1)
        if np.array_equal(new, label):
            break
        label = new
        centre = np.array(
            [x[label == k].mean() if np.any(label == k) else centre[k] for k in (0, 1)]
        )
    resp = np.stack([label == 0, label == 1], axis=1).astype(np.float64)

    def m_step(resp: np.ndarray):
        nk = resp.sum(axis=0) + 10 * np.finfo(np.float64).eps
        mean = (resp * x[:, None]).sum(axis=0) / nk
        var = (resp * (x[:, None] - mean) ** 2).sum(axis=0) / nk + 1e-6
        return nk / nk.sum(), mean, var

    def e_step(weight, mean, var):
        log_p = -0.5 * (np.log(2 * np.pi * var) + (x[:, None] - mean) ** 2 / var)
        log_p += np.log(weight)
        top = log_p.max(axis=1, keepdims=True)
        norm = top[:, 0] + np.log(np.exp(log_p - top).sum(axis=1))
        return norm, np.exp(log_p - norm[:, None])

    weight, mean, var = m_step(resp)
    lower = -np.inf
    for _ in range(max_iter):
        previous = lower
        norm, resp = e_step(weight, mean, var)
        weight, mean, var = m_step(resp)
        lower = norm.mean()
        if abs(lower - previous) < tol:
            break
    order = np.argsort(mean)
    return weight[order], mean[order], var[order]


def mixture_model(
    shifts: pd.DataFrame, *, column: str = "cos_sim", impact: str = "lower_mean"
) -> pd.DataFrame:
    """Geneformer's ``mixture_model`` mode (single genes, no anchor).

    A two-component Gaussian mixture is fitted to the genes' mean values. With the impact
    component ``I`` and the other ``N``, Geneformer's rule: a value above ``N``'s mean is
    non-impact, else one below ``I``'s mean is impact, else the more probable component.

    Parameters
    ----------
    shifts
        Per (gene, cell): ``token`` and ``column``.
    column
        The value (Geneformer's ``cos_sims``: ``cos_sim``).
    impact
        ``lower_mean`` (default): ``I`` is the component of lower mean similarity, the
        larger effect, as Geneformer intends. ``higher_mean``: the other one. Geneformer
        takes scikit-learn's first component as ``I``, and scikit-learn orders components
        by its random k-means initialisation, so Geneformer's labels follow one of the two
        depending on the data; ``higher_mean`` reproduces a fit that put the higher mean
        first (its rule then calls impact only values below the lower mean).

    Returns
    -------
    pandas.DataFrame
        ``Gene``, ``Test_avg_shift``, ``Impact_component`` (1: impact),
        ``Impact_component_percent`` (percent of cells whose value is in the impact
        component), ``N_Detections``; sorted by ``Impact_component`` (descending), then
        ``Test_avg_shift``.
    """
    _check(shifts, [column])
    groups = [(int(t), g[column].to_numpy(dtype=np.float64)) for t, g in shifts.groupby("token")]
    means = np.array([v.mean() for _, v in groups])
    weight, mean, var = _gaussian_mixture_1d(means)
    if impact not in ("lower_mean", "higher_mean"):
        raise InputError(f"impact must be lower_mean or higher_mean, got {impact!r}")
    if impact == "higher_mean":
        weight, mean, var = weight[::-1], mean[::-1], var[::-1]

    def impact(values: np.ndarray) -> np.ndarray:
        log_p = -0.5 * (np.log(2 * np.pi * var) + (values[:, None] - mean) ** 2 / var)
        log_p += np.log(weight)
        out = (log_p[:, 0] >= log_p[:, 1]).astype(np.int64)
        out[values < mean[0]] = 1
        out[values > mean[1]] = 0  # checked first by Geneformer: it wins
        return out

    rows = []
    for (tok, v), m in zip(groups, means, strict=True):
        rows.append(
            {
                "Gene": tok,
                "Test_avg_shift": float(m),
                "Impact_component": int(impact(np.array([m]))[0]),
                "Impact_component_percent": float(impact(v).mean() * 100),
                "N_Detections": len(v),
            }
        )
    return (
        pd.DataFrame(rows)
        .sort_values(
            ["Impact_component", "Test_avg_shift"], ascending=[False, True], kind="mergesort"
        )
        .reset_index(drop=True)
    )


#: The modes of :func:`geneformer_table` (config ``perturb.geneformer_stats``).
STATS_MODES = ("goal_state_shift", "vs_null", "mixture_model")

#: The gathered per-cell shifts a study's results directory keeps for ``vs_null``.
CELLS_FILE = "perturbation_cells.tsv"


def _single_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The (gene, cell) rows of single genes (not the planned rows, not the groups)."""
    return table[(table["cell"] != "") & (table["role"] != "group")]


def null_shift_file(path: str | Path) -> Path:
    """The per-cell shift table of a null study: ``path`` itself, or a results directory's
    :data:`CELLS_FILE`.

    Raises
    ------
    InputError
        ``path`` does not exist, or the directory holds no :data:`CELLS_FILE`.
    """
    path = Path(path)
    if path.is_dir():
        cells = path / CELLS_FILE
        if not cells.is_file():
            raise InputError(
                f"holds no {CELLS_FILE} (run that study with perturb.geneformer_table: true)",
                path,
            )
        return cells
    if not path.is_file():
        raise InputError("the null study's shift table does not exist", path)
    return path


def geneformer_table(
    table: pd.DataFrame,
    *,
    name_map,
    stats: str = "goal_state_shift",
    null: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Geneformer's stats table of gathered perturbation shards, with its column names.

    ``Gene`` holds the Ensembl ID (our token ids are not Geneformer's), then ``Gene_name``
    and ``Ensembl_ID``.

    Parameters
    ----------
    table
        Shard rows (:func:`geneattn.perturb.read_shift_tables`).
    name_map
        ``{symbol: ensembl_id}``.
    stats
        ``goal_state_shift``: :func:`goal_state_shift` of the goal shifts of every perturbed
        gene (targets and null genes together make Geneformer's "random" pool), with the
        shard's alternative end states (``alt_shift_{label}`` columns) as ``alt_states``;
        without a goal state (a single-condition study) it falls back to ``mixture_model``.
        ``mixture_model``: :func:`mixture_model` of the similarities (``1 -
        cosine_shift``). ``vs_null``: :func:`vs_null` of the similarities against those of
        the same genes (matched by Ensembl ID) in ``null``.
    null
        ``vs_null``: the null study's shard rows (:func:`null_shift_file`).

    Raises
    ------
    InputError
        An unknown ``stats``, or ``vs_null`` without ``null``.
    """
    from geneattn.perturb import alt_shift_column, alt_shift_states

    if stats not in STATS_MODES:
        raise InputError(f"stats must be one of {', '.join(STATS_MODES)}, got {stats!r}")
    if stats == "vs_null" and null is None:
        raise InputError("the vs_null stats need the null study's shifts")
    rows = _single_rows(table)
    null_rows = _single_rows(null) if stats == "vs_null" else rows.iloc[:0]
    genes = sorted(set(rows["gene_id"]))
    code = {g: i for i, g in enumerate(sorted(set(genes) | set(null_rows["gene_id"])))}
    genes = sorted(code, key=code.__getitem__)
    token = rows["gene_id"].map(code).to_numpy(dtype=np.int64)
    goal = rows["goal_shift"].to_numpy(dtype=np.float64)
    cos = 1.0 - rows["cosine_shift"].to_numpy(dtype=np.float64)
    if stats == "goal_state_shift" and not np.isfinite(goal).any():
        stats = "mixture_model"  # no goal state: today's fallback, as documented
    if stats == "goal_state_shift":
        alt = alt_shift_states(rows)
        key = "goal"
        while key in alt:
            key += "_"
        frame = pd.DataFrame({"token": token, f"shift_to_{key}": goal})
        for state in alt:
            frame[f"shift_to_{state}"] = rows[alt_shift_column(state)].to_numpy(dtype=np.float64)
        out = goal_state_shift(frame.dropna(), goal=key, alt_states=alt)
    elif stats == "mixture_model":
        out = mixture_model(pd.DataFrame({"token": token, "cos_sim": cos}).dropna())
    else:
        null_cos = 1.0 - null_rows["cosine_shift"].to_numpy(dtype=np.float64)
        null_token = null_rows["gene_id"].map(code).to_numpy(dtype=np.int64)
        out = vs_null(
            pd.DataFrame({"token": token, "cos_sim": cos}).dropna(),
            pd.DataFrame({"token": null_token, "cos_sim": null_cos}).dropna(),
        )
        if out.empty:
            raise InputError("no gene was perturbed in any cell: nothing to compare with the null")
    symbol_of: dict[str, str] = {}
    for symbol, ens in sorted(name_map.items()):
        symbol_of.setdefault(ens, symbol)
    ensembl = [genes[t] for t in out["Gene"]]
    out["Gene"] = ensembl
    out.insert(1, "Gene_name", [symbol_of.get(g, g) for g in ensembl])
    out.insert(2, "Ensembl_ID", ensembl)
    return out

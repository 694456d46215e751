"""Perturbation statistics with the sample (donor) as the unit of replication.

:func:`geneattn.perturb.goal_statistics` tests each perturbed gene's per-cell shifts against
those of random genes of the same expression-frequency bin with a rank-sum test over *cells*.
Cells of one donor are not independent replicates: with thousands of cells from a handful of
donors, shifts of 1e-3 get p-values of 1e-23. When the study says which sample each cell
comes from (``conditions.sample``), :func:`sample_shift_table` summarises each gene per
sample instead:

    delta[g, s] = mean over the sample's cells of g's shift
                  - mean over the sample's (null gene, cell) shifts of g's bin

and :func:`sample_level_statistics` tests ``mean_s delta[g, s] = 0`` across samples with a
two-sided sign-flip permutation test (exact, by enumerating every sign pattern, up to
``2**14`` patterns; random flips beyond), gives a percentile bootstrap confidence interval of
the mean over samples, and the Benjamini-Hochberg FDR across genes. Without samples,
:func:`cell_level_statistics` keeps the rank-sum test over cells and says so in its ``unit``
column (``cells``): those p-values treat cells as independent replicates.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from geneattn.enrichment import bh_fdr

__all__ = [
    "SAMPLE_COLUMNS",
    "cell_level_statistics",
    "sample_level_statistics",
    "sample_shift_table",
    "sign_flip_p_value",
]

#: Columns of :func:`sample_level_statistics` (and :func:`cell_level_statistics`).
SAMPLE_COLUMNS = (
    "token",
    "n_cells",
    "n_samples",
    "mean_cosine_shift",
    "mean_goal_shift",
    "effect",
    "ci_low",
    "ci_high",
    "statistic",
    "p_value",
    "fdr",
    "unit",
)

#: Sign patterns are enumerated when there are at most this many samples.
EXACT_SAMPLES = 14


def sign_flip_p_value(
    deltas: np.ndarray, *, n_permutations: int = 10_000, rng: np.random.Generator | None = None
) -> float:
    """Two-sided sign-flip permutation p-value of ``mean(deltas) = 0``.

    Under the null each sample's delta is symmetric around 0, so flipping its sign leaves the
    distribution unchanged. With at most :data:`EXACT_SAMPLES` values every one of the
    ``2**n`` sign patterns is enumerated and ``p = #{|null| >= |observed|} / 2**n`` (exact;
    the smallest possible p is ``2 / 2**n``); otherwise ``n_permutations`` random patterns
    give ``(1 + hits) / (1 + n_permutations)``.

    Parameters
    ----------
    deltas
        One value per sample (finite).
    n_permutations
        Random sign patterns when not enumerated.
    rng
        Generator of the random patterns (default: seeded with 0).

    Returns
    -------
    float
        The p-value; NaN for no values.
    """
    d = np.asarray(deltas, dtype=np.float64)
    n = len(d)
    if n == 0:
        return float("nan")
    if not np.all(np.isfinite(d)):
        raise ValueError("deltas must be finite")
    observed = abs(d.sum())
    tol = 1e-12 * (np.abs(d).sum() + 1e-300)
    if n <= EXACT_SAMPLES:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        null = np.abs(signs @ d)
        return float(np.mean(null >= observed - tol))
    rng = np.random.default_rng(0) if rng is None else rng
    signs = rng.choice((-1.0, 1.0), size=(n_permutations, n))
    null = np.abs(signs @ d)
    return float((1 + np.sum(null >= observed - tol)) / (1 + n_permutations))


def sample_shift_table(
    shifts: pd.DataFrame,
    targets: Sequence[int],
    null_tokens: Sequence[int],
    bin_of: Mapping[int, int],
    cell_samples: np.ndarray,
    *,
    column: str = "goal_shift",
) -> pd.DataFrame:
    """Per gene and sample: the gene's mean shift minus its bin's null mean in that sample.

    Parameters
    ----------
    shifts
        Per (gene, cell) shifts: ``token``, ``cell`` (index into ``cell_samples``) and
        ``column`` (e.g. from :func:`geneattn.perturb.perturbation_shifts`).
    targets
        Tokens tested.
    null_tokens
        The random genes of the frequency bins.
    bin_of
        Bin of every token (targets and null genes).
    cell_samples
        Sample of each cell.
    column
        The shift tested (``goal_shift``, or ``cosine_shift`` without a goal).

    Returns
    -------
    pandas.DataFrame
        ``token``, ``sample``, ``n_cells``, ``shift`` (mean of the gene), ``null_shift`` (mean
        of the bin's null genes in the sample; all null genes when the bin has none) and
        ``delta``. Samples where the gene has no cell or the null has no value are left out.
    """
    # samples by the index of their name in sorted order (a name per row would hold a
    # string per (gene, cell) row; the groups below are the same, in the same order)
    names, sample_code = np.unique(np.asarray(cell_samples).astype(str), return_inverse=True)
    cells = shifts["cell"].to_numpy(dtype=np.int64)
    if len(cells) and (cells.min() < 0 or cells.max() >= len(sample_code)):
        raise ValueError("a shift's cell is outside cell_samples")
    frame = pd.DataFrame(
        {
            "token": shifts["token"].to_numpy(dtype=np.int64),
            "sample": sample_code.reshape(-1)[cells],
            "value": shifts[column].to_numpy(dtype=np.float64),
        }
    )
    frame = frame[np.isfinite(frame["value"].to_numpy())]
    null_set = {int(t) for t in null_tokens}
    null = frame[frame["token"].isin(null_set).to_numpy()]
    kinds, where = np.unique(null["token"].to_numpy(), return_inverse=True)
    bins = np.array([bin_of.get(int(t), -1) for t in kinds], dtype=np.int64)[where]
    by_bin = null.assign(bin=bins).groupby(["bin", "sample"])["value"].mean()
    all_null = null.groupby("sample")["value"].mean()
    bins_present = set(bins.tolist())
    rows = []
    target_frame = frame[frame["token"].isin({int(t) for t in targets}).to_numpy()]
    grouped = target_frame.groupby(["token", "sample"])["value"].agg(["mean", "size"])
    for (token, sample), (mean, size) in grouped.iterrows():
        b = bin_of.get(int(token), -2)
        if b in bins_present:
            ref = by_bin.get((b, sample))
        else:
            ref = all_null.get(sample)
        if ref is None or not np.isfinite(ref):
            continue
        rows.append(
            {
                "token": int(token),
                "sample": str(names[sample]),
                "n_cells": int(size),
                "shift": float(mean),
                "null_shift": float(ref),
                "delta": float(mean - ref),
            }
        )
    return pd.DataFrame(
        rows, columns=["token", "sample", "n_cells", "shift", "null_shift", "delta"]
    ).sort_values(["token", "sample"], kind="mergesort", ignore_index=True)


def sample_level_statistics(
    shifts: pd.DataFrame,
    targets: Sequence[int],
    null_tokens: Sequence[int],
    bin_of: Mapping[int, int],
    cell_samples: np.ndarray,
    *,
    column: str = "goal_shift",
    n_permutations: int = 10_000,
    n_bootstrap: int = 2000,
    confidence: float = 0.95,
    min_samples: int = 2,
    seed: int = 0,
) -> pd.DataFrame:
    """Each target's shift beyond its null genes, tested across samples.

    Parameters
    ----------
    shifts, targets, null_tokens, bin_of, cell_samples, column
        As for :func:`sample_shift_table`.
    n_permutations
        Random sign patterns beyond :data:`EXACT_SAMPLES` samples.
    n_bootstrap
        Resamplings of the samples (with replacement) for the confidence interval.
    confidence
        Coverage of the percentile bootstrap interval.
    min_samples
        Genes seen in fewer samples get no test (NaN p-value).
    seed
        Seed of the bootstrap and of random sign patterns (one generator, genes in order).

    Returns
    -------
    pandas.DataFrame
        :data:`SAMPLE_COLUMNS`, one row per target in the order given: ``effect`` is the mean
        over samples of ``delta``, ``ci_low`` / ``ci_high`` its bootstrap interval,
        ``statistic`` the effect divided by the standard deviation of the deltas (a
        standardised effect; NaN for one sample), ``unit`` is ``samples``.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    per_sample = sample_shift_table(
        shifts, targets, null_tokens, bin_of, cell_samples, column=column
    )
    by_token = {int(t): g for t, g in per_sample.groupby("token")}
    cell_shifts = token_groups(shifts, ("cosine_shift", "goal_shift"))
    rng = np.random.default_rng(seed)
    alpha = (1.0 - confidence) / 2.0
    rows = []
    for t in targets:
        t = int(t)
        g = by_token.get(t)
        c = cell_shifts.get(t)
        deltas = np.array([]) if g is None else g["delta"].to_numpy()
        n = len(deltas)
        row = {
            "token": t,
            "n_cells": 0 if c is None else len(c["cosine_shift"]),
            "n_samples": n,
            "mean_cosine_shift": float("nan") if c is None else _mean(c["cosine_shift"]),
            "mean_goal_shift": float("nan") if c is None else _mean(c["goal_shift"]),
            "effect": float(deltas.mean()) if n else float("nan"),
        }
        if n >= min_samples:
            boot = deltas[rng.integers(0, n, size=(n_bootstrap, n))].mean(axis=1)
            sd = deltas.std(ddof=1)
            row |= {
                "ci_low": float(np.quantile(boot, alpha)),
                "ci_high": float(np.quantile(boot, 1.0 - alpha)),
                "statistic": float(deltas.mean() / sd) if sd > 0 else float("nan"),
                "p_value": sign_flip_p_value(deltas, n_permutations=n_permutations, rng=rng),
            }
        else:
            row |= {k: float("nan") for k in ("ci_low", "ci_high", "statistic", "p_value")}
        rows.append(row)
    table = pd.DataFrame(rows, columns=list(SAMPLE_COLUMNS[:-2]))
    table["fdr"] = bh_fdr(table["p_value"].to_numpy(dtype=np.float64))
    table["unit"] = "samples"
    return table[list(SAMPLE_COLUMNS)]


def token_groups(shifts: pd.DataFrame, columns: Sequence[str]) -> dict[int, dict[str, np.ndarray]]:
    """Each token's values of ``columns``, in the order of its rows.

    The values of ``shifts.groupby("token")``, without a copy of the frame per group: the
    rows are ordered by token once (stably) and each token's values are a slice.

    Returns
    -------
    dict
        ``{token: {column: float64 values}}``.
    """
    tokens = shifts["token"].to_numpy(dtype=np.int64)
    order = np.argsort(tokens, kind="stable")
    kinds, starts = np.unique(tokens[order], return_index=True)
    ends = np.append(starts[1:], len(tokens))
    ordered = {c: shifts[c].to_numpy(dtype=np.float64)[order] for c in columns}
    return {
        int(t): {c: v[a:b] for c, v in ordered.items()}
        for t, a, b in zip(kinds.tolist(), starts.tolist(), ends.tolist(), strict=True)
    }


def _mean(values: np.ndarray) -> float:
    """The mean of the finite-or-NaN ``values`` as :meth:`pandas.Series.mean` takes it."""
    return float(pd.Series(values).mean())


def cell_level_statistics(
    shifts: pd.DataFrame,
    targets: Sequence[int],
    null_tokens: Sequence[int],
    bin_of: Mapping[int, int],
    *,
    column: str = "goal_shift",
) -> pd.DataFrame:
    """The rank-sum test over cells, in the columns of :func:`sample_level_statistics`.

    :func:`geneattn.perturb.goal_statistics` with ``effect`` = the gene's mean shift minus
    the mean of its bin's null shifts (over cells), no interval, ``n_samples`` 0 and
    ``unit`` = ``cells``: the p-values treat every cell as an independent replicate, which
    overstates the evidence when cells come from few donors.
    """

    stats = goal_statistics(shifts, targets, null_tokens, bin_of, column=column)
    null_set = {int(t) for t in null_tokens}
    values = shifts[np.isfinite(shifts[column].to_numpy(dtype=np.float64))]
    null = values[values["token"].isin(null_set)]
    null_bin = null["token"].map(lambda t: bin_of.get(int(t), -1))
    bin_mean = null.groupby(null_bin)[column].mean()
    all_mean = float(null[column].mean()) if len(null) else float("nan")
    mean_of = values.groupby("token")[column].mean()
    effect = []
    for t in stats["token"].tolist():
        ref = bin_mean.get(bin_of.get(int(t), -2), all_mean)
        effect.append(float(mean_of.get(int(t), np.nan) - ref))
    out = stats.assign(n_samples=0, effect=effect, ci_low=np.nan, ci_high=np.nan, unit="cells")
    return out[list(SAMPLE_COLUMNS)]


def goal_statistics(
    shifts: pd.DataFrame,
    targets: Sequence[int],
    null_tokens: Sequence[int],
    bin_of: dict[int, int],
    *,
    column: str = "goal_shift",
) -> pd.DataFrame:
    """Per target token: its shifts against the null tokens of its frequency bin.

    Two-sided Wilcoxon rank-sum test (``scipy.stats.mannwhitneyu``) of the target's
    ``column`` values over cells against those of the null tokens in the same bin (all
    null tokens when the bin has none), then Benjamini-Hochberg FDR over the targets.

    Returns
    -------
    pandas.DataFrame
        ``token``, ``n_cells``, ``mean_cosine_shift``, ``mean_goal_shift``, ``statistic``
        (the rank-biserial effect ``2U / (n1 n2) - 1``), ``p_value``, ``fdr``.
    """
    from scipy.stats import mannwhitneyu

    null_set = set(int(t) for t in null_tokens)
    by_token = token_groups(shifts, ("cosine_shift", "goal_shift"))
    null_by_bin: dict[int, list[np.ndarray]] = {}
    for t in null_set:
        if t in by_token:
            null_by_bin.setdefault(bin_of.get(t, -1), []).append(by_token[t][column])
    all_null = [v for vs in null_by_bin.values() for v in vs]
    rows = []
    for t in targets:
        t = int(t)
        g = by_token.get(t)
        values = np.array([]) if g is None else g[column]
        values = values[np.isfinite(values)]
        ref_parts = null_by_bin.get(bin_of.get(t, -2)) or all_null
        ref = np.concatenate(ref_parts) if ref_parts else np.array([])
        ref = ref[np.isfinite(ref)]
        if values.size and ref.size:
            res = mannwhitneyu(values, ref, alternative="two-sided", method="asymptotic")
            stat = 2.0 * float(res.statistic) / (values.size * ref.size) - 1.0
            p = float(res.pvalue)
        else:
            stat = p = float("nan")
        rows.append(
            {
                "token": t,
                "n_cells": 0 if g is None else len(g["cosine_shift"]),
                "mean_cosine_shift": float("nan") if g is None else _mean(g["cosine_shift"]),
                "mean_goal_shift": float("nan") if g is None else _mean(g["goal_shift"]),
                "statistic": stat,
                "p_value": p,
            }
        )
    table = pd.DataFrame(
        rows,
        columns=[
            "token",
            "n_cells",
            "mean_cosine_shift",
            "mean_goal_shift",
            "statistic",
            "p_value",
        ],
    )
    table["fdr"] = bh_fdr(table["p_value"].to_numpy(dtype=np.float64))
    return table

"""hdWGCNA-style analysis of gene modules: eigengenes, kME, hubs, grey, traits, preservation.

For any module assignment (attention modules or co-expression modules; 0 = unassigned):

* :func:`module_eigengenes`: each module's eigengene, the first principal component of the
  z-scored expression of its genes across cells (sign: positively correlated with the
  module's mean z-score), and the fraction of variance it explains;
  :func:`module_scores`: the simpler mean z-score of the module's genes per cell;
* :func:`module_kme`: every gene's correlation with every eigengene (kME);
  :func:`hub_genes_by_kme`: each module's genes by decreasing kME;
* :func:`grey_weak_members`: WGCNA's ``minKMEtoStay``: genes whose kME to their own module is
  below a threshold are unassigned (0), then modules left below the minimum size too;
* :func:`module_condition_association`: does a module's eigengene differ between case and
  control? With a sample column the unit is the sample (per-sample mean eigengene; paired
  sign-flip test when every sample has both conditions, else a permutation of sample
  labels, exact when few); without, cells (flagged as treating cells as replicates);
* :func:`module_preservation`: a Zsummary-like preservation statistic of each module of a
  reference network in a test network (e.g. control vs case), each statistic standardised
  against random gene sets of the module's size.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "grey_weak_members",
    "hub_genes_by_kme",
    "module_condition_association",
    "module_eigengenes",
    "module_ids",
    "module_kme",
    "module_preservation",
    "module_scores",
    "zscore_columns",
]

#: Above this many relabellings, permutation tests draw at random instead of enumerating.
EXACT_LIMIT = 20_000


def zscore_columns(expression: np.ndarray | sparse.spmatrix) -> np.ndarray:
    """Columns (genes) centred and scaled to unit variance; constant columns become 0."""
    x = np.asarray(
        expression.toarray() if sparse.issparse(expression) else expression, dtype=np.float64
    )
    if x.ndim != 2:
        raise ValueError(f"expression must be cells x genes, got shape {x.shape}")
    centred = x - x.mean(axis=0)
    sd = np.sqrt((centred**2).mean(axis=0))
    scale = np.zeros_like(sd)
    varies = sd > 1e-12 * (1.0 + np.abs(x).max(axis=0))
    scale[varies] = 1.0 / sd[varies]
    return centred * scale


def module_ids(modules: np.ndarray) -> np.ndarray:
    """The module numbers of ``modules`` (0 = unassigned), ascending, unique, ``> 0``."""
    modules = np.asarray(modules, dtype=np.int64)
    if np.any(modules < 0):
        raise ValueError("module numbers must be non-negative (0 = unassigned)")
    return np.unique(modules[modules > 0])


def module_eigengenes(
    expression: np.ndarray | sparse.spmatrix, modules: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Module eigengenes: first principal component of each module's z-scored genes.

    Parameters
    ----------
    expression
        Cells x G (log-normalised) expression.
    modules
        Module of each gene (0 = unassigned).

    Returns
    -------
    ids
        int64 module numbers (ascending, ``> 0``).
    eigengenes
        ``(n_cells, n_modules)``: cell scores on the first right singular vector, scaled to
        unit variance; the sign makes it correlate positively with the module's mean
        z-score (:func:`module_scores`).
    variance_explained
        Fraction of the module's z-scored variance on that component.
    """
    z = zscore_columns(expression)
    modules = np.asarray(modules, dtype=np.int64)
    if len(modules) != z.shape[1]:
        raise ValueError(f"{len(modules)} module labels for {z.shape[1]} genes")
    ids = module_ids(modules)
    eig = np.zeros((z.shape[0], len(ids)))
    explained = np.zeros(len(ids))
    for c, m in enumerate(ids):
        block = z[:, modules == m]
        u, s, _ = np.linalg.svd(block, full_matrices=False)
        total = float((s**2).sum())
        if total == 0:
            continue
        score = u[:, 0] * s[0]
        mean = block.mean(axis=1)
        if float(score @ mean) < 0:
            score = -score
        sd = score.std()
        eig[:, c] = (score - score.mean()) / sd if sd > 0 else 0.0
        explained[c] = s[0] ** 2 / total
    return ids, eig, explained


def module_scores(
    expression: np.ndarray | sparse.spmatrix, modules: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean z-score of each module's genes per cell: ``(ids, (n_cells, n_modules))``."""
    z = zscore_columns(expression)
    modules = np.asarray(modules, dtype=np.int64)
    ids = module_ids(modules)
    return ids, np.column_stack([z[:, modules == m].mean(axis=1) for m in ids]) if len(
        ids
    ) else np.zeros((z.shape[0], 0))


def module_kme(expression: np.ndarray | sparse.spmatrix, eigengenes: np.ndarray) -> np.ndarray:
    """Pearson correlation of every gene with every eigengene: ``(G, n_modules)`` (kME)."""
    z = zscore_columns(expression)
    e = zscore_columns(np.asarray(eigengenes, dtype=np.float64))
    if e.shape[0] != z.shape[0]:
        raise ValueError(f"{e.shape[0]} eigengene rows for {z.shape[0]} cells")
    return np.clip(z.T @ e / z.shape[0], -1.0, 1.0)


def hub_genes_by_kme(
    genes: np.ndarray, modules: np.ndarray, ids: np.ndarray, kme: np.ndarray, *, n_hubs: int = 10
) -> pd.DataFrame:
    """Each module's genes ranked by their kME to it (hdWGCNA's hub genes).

    Returns
    -------
    pandas.DataFrame
        ``module``, ``gene``, ``kme``, ``kme_rank`` (1 = hub); the top ``n_hubs`` genes of each
        module, ties by gene order.
    """
    import pandas as pd

    genes = np.asarray(genes).astype(str)
    modules = np.asarray(modules, dtype=np.int64)
    rows = []
    for c, m in enumerate(np.asarray(ids).tolist()):
        members = np.flatnonzero(modules == m)
        order = members[np.lexsort((members, -kme[members, c]))][:n_hubs]
        for r, g in enumerate(order.tolist(), start=1):
            rows.append({"module": m, "gene": genes[g], "kme": float(kme[g, c]), "kme_rank": r})
    return pd.DataFrame(rows, columns=["module", "gene", "kme", "kme_rank"])


def grey_weak_members(
    expression: np.ndarray | sparse.spmatrix,
    modules: np.ndarray,
    *,
    min_kme: float = 0.3,
    min_size: int = 5,
) -> np.ndarray:
    """Unassign (module 0) genes whose kME to their own module is below ``min_kme``.

    Eigengenes are computed once from the given modules; genes below the threshold become 0,
    then modules with fewer than ``min_size`` genes left are dissolved into 0 and the rest
    renumbered by decreasing size (:func:`geneattn.modules.relabel_modules`).

    Returns
    -------
    numpy.ndarray
        int64 modules, 0 = unassigned (WGCNA's grey).
    """
    modules = np.asarray(modules, dtype=np.int64)
    ids, eig, _ = module_eigengenes(expression, modules)
    out = modules.copy()
    if len(ids):
        kme = module_kme(expression, eig)
        column = np.searchsorted(ids, modules)
        assigned = modules > 0
        own = np.zeros(len(modules))
        own[assigned] = kme[np.flatnonzero(assigned), column[assigned]]
        out[assigned & (own < min_kme)] = 0
    return _renumber(out, min_size)


def _renumber(modules: np.ndarray, min_size: int) -> np.ndarray:
    """Modules ``> 0`` with ``min_size`` genes or more numbered 1, 2, ... by decreasing size
    (ties: lowest gene index first); the rest 0."""
    out = np.zeros(len(modules), dtype=np.int64)
    ids, first, sizes = np.unique(modules, return_index=True, return_counts=True)
    keep = (ids > 0) & (sizes >= min_size)
    order = np.lexsort((first[keep], -sizes[keep]))
    for new, m in enumerate(ids[keep][order].tolist(), start=1):
        out[modules == m] = new
    return out


def _sign_flip_p(deltas: np.ndarray, n_permutations: int, rng: np.random.Generator) -> float:
    """Two-sided sign-flip p-value of the mean of ``deltas`` (exact when few)."""
    deltas = np.asarray(deltas, dtype=np.float64)
    n = len(deltas)
    observed = abs(deltas.mean())
    tol = 1e-12 * (np.abs(deltas).sum() + 1e-300)
    if 2**n <= EXACT_LIMIT:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        null = np.abs(signs @ deltas) / n
        return float(np.mean(null >= observed - tol))
    signs = rng.choice((-1.0, 1.0), size=(n_permutations, n))
    null = np.abs(signs @ deltas) / n
    return float((1 + np.sum(null >= observed - tol)) / (1 + n_permutations))


def _label_permutation_p(
    values: np.ndarray, is_case: np.ndarray, n_permutations: int, rng: np.random.Generator
) -> float:
    """Two-sided p of ``mean(case) - mean(control)`` over relabellings (exact when few)."""
    n, n_case = len(values), int(is_case.sum())
    observed = abs(values[is_case].mean() - values[~is_case].mean())
    tol = 1e-12 * (np.abs(values).sum() + 1e-300)
    total = values.sum()
    if math.comb(n, n_case) <= EXACT_LIMIT:
        sums = np.array([values[list(c)].sum() for c in itertools.combinations(range(n), n_case)])
        null = np.abs(sums / n_case - (total - sums) / (n - n_case))
        return float(np.mean(null >= observed - tol))
    order = np.argsort(rng.random((n_permutations, n)), axis=1)
    sums = values[order[:, :n_case]].sum(axis=1)
    null = np.abs(sums / n_case - (total - sums) / (n - n_case))
    return float((1 + np.sum(null >= observed - tol)) / (1 + n_permutations))


def module_condition_association(
    eigengenes: np.ndarray,
    ids: np.ndarray,
    is_case: np.ndarray,
    *,
    samples: np.ndarray | None = None,
    n_permutations: int = 10_000,
    seed: int = 0,
) -> pd.DataFrame:
    """Difference of each module's eigengene between case and control, with the right unit.

    With ``samples``, each sample's mean eigengene per condition is the unit: when at least
    two samples have cells of both conditions the test is paired over those samples
    (per-sample case minus control, two-sided sign-flip permutation, exact for up to 14
    samples; samples with one condition are left out), otherwise the samples'
    means are compared by permuting their condition labels (exact when the relabellings are
    few; a sample with cells of both conditions then contributes one mean per condition).
    Without ``samples``, cells are the unit (permutation of cell labels): the table's
    ``unit`` column says ``cells``, and the p-values treat cells as independent replicates,
    which they are not when cells come from few donors.

    Parameters
    ----------
    eigengenes
        ``(n_cells, n_modules)`` (:func:`module_eigengenes`).
    ids
        Module numbers of the columns.
    is_case
        bool per cell: case (True) or control (False).
    samples
        Sample (donor) of each cell, or None.
    n_permutations
        Random relabellings / sign flips when they are not enumerated.
    seed
        Seed of the random draws.

    Returns
    -------
    pandas.DataFrame
        ``module``, ``case_mean``, ``control_mean``, ``diff``, ``n_units``, ``unit``
        (``samples_paired``, ``samples`` or ``cells``), ``p_value``, ``fdr`` (BH across
        modules).
    """
    import pandas as pd

    from geneattn.enrichment import bh_fdr

    eig = np.asarray(eigengenes, dtype=np.float64)
    is_case = np.asarray(is_case, dtype=bool)
    if eig.shape[0] != len(is_case):
        raise ValueError(f"{eig.shape[0]} cells of eigengenes but {len(is_case)} labels")
    if is_case.all() or not is_case.any():
        raise ValueError("both conditions need cells")
    rng = np.random.default_rng(seed)
    rows = []
    if samples is not None:
        samples = np.asarray(samples).astype(str)
        if len(samples) != len(is_case):
            raise ValueError(f"{len(samples)} samples for {len(is_case)} cells")
        names = np.unique(samples)
        case_means, control_means = [], []
        for s in names:
            here = samples == s
            case_means.append(eig[here & is_case].mean(axis=0) if (here & is_case).any() else None)
            control_means.append(
                eig[here & ~is_case].mean(axis=0) if (here & ~is_case).any() else None
            )
        both = [
            i
            for i, (a, b) in enumerate(zip(case_means, control_means, strict=True))
            if a is not None and b is not None
        ]
        paired = len(both) >= 2
    for c, m in enumerate(np.asarray(ids).tolist()):
        if samples is None:
            values = eig[:, c]
            unit, n_units = "cells", len(values)
            case_mean, control_mean = values[is_case].mean(), values[~is_case].mean()
            p = _label_permutation_p(values, is_case, n_permutations, rng)
        elif paired:
            a = np.array([case_means[i][c] for i in both])
            b = np.array([control_means[i][c] for i in both])
            unit, n_units = "samples_paired", len(a)
            case_mean, control_mean = a.mean(), b.mean()
            p = _sign_flip_p(a - b, n_permutations, rng) if n_units else float("nan")
        else:
            a = np.array([x[c] for x in case_means if x is not None])
            b = np.array([x[c] for x in control_means if x is not None])
            unit, n_units = "samples", len(a) + len(b)
            case_mean, control_mean = a.mean(), b.mean()
            values = np.concatenate([a, b])
            labels = np.concatenate([np.ones(len(a), bool), np.zeros(len(b), bool)])
            p = _label_permutation_p(values, labels, n_permutations, rng)
        rows.append(
            {
                "module": int(m),
                "case_mean": float(case_mean),
                "control_mean": float(control_mean),
                "diff": float(case_mean - control_mean),
                "n_units": int(n_units),
                "unit": unit,
                "p_value": float(p),
            }
        )
    table = pd.DataFrame(
        rows,
        columns=["module", "case_mean", "control_mean", "diff", "n_units", "unit", "p_value"],
    )
    table["fdr"] = bh_fdr(table["p_value"].to_numpy(dtype=np.float64))
    return table


def _preservation_stats(ref: np.ndarray, test: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Density and connectivity statistics of one gene set (see module_preservation)."""
    r = ref[np.ix_(members, members)]
    t = test[np.ix_(members, members)]
    off = ~np.eye(len(members), dtype=bool)
    mean_test = t[off].mean()
    k_ref, k_test = r.sum(axis=1) - np.diagonal(r), t.sum(axis=1) - np.diagonal(t)

    def cor(a: np.ndarray, b: np.ndarray) -> float:
        a, b = a - a.mean(), b - b.mean()
        den = math.sqrt(float((a * a).sum() * (b * b).sum()))
        return float((a * b).sum() / den) if den > 0 else 0.0

    return np.array([mean_test, cor(r[off], t[off]), cor(k_ref, k_test)])


def module_preservation(
    reference: np.ndarray | sparse.spmatrix,
    test: np.ndarray | sparse.spmatrix,
    modules: np.ndarray,
    *,
    n_permutations: int = 200,
    seed: int = 0,
) -> pd.DataFrame:
    """Zsummary-like preservation of each reference module in a test network.

    Both networks are G x G weights over the same genes (e.g. the control and case mean
    attention, or two correlation matrices; made symmetric here). Per module, three
    statistics in the spirit of WGCNA's ``modulePreservation``:

    * density: the mean test weight among the module's genes (``mean_weight``);
    * connectivity: the correlation of the module's pair weights between reference and test
      (``cor_weight``), and of its genes' intramodular connectivity (``cor_kim``).

    Each is standardised against ``n_permutations`` random gene sets of the module's size:
    ``Z = (observed - mean(null)) / sd(null)``. ``z_density`` is the density Z,
    ``z_connectivity`` the median of the two connectivity Zs, and ``z_summary`` their mean.
    WGCNA reads ``Zsummary > 10`` as strong and ``< 2`` as no evidence of preservation.

    Returns
    -------
    pandas.DataFrame
        ``module``, ``size``, ``mean_weight``, ``cor_weight``, ``cor_kim``, ``z_density``,
        ``z_connectivity``, ``z_summary``, ``p_density`` (one-sided permutation p of the
        density).
    """
    import pandas as pd

    def dense(m: np.ndarray | sparse.spmatrix) -> np.ndarray:
        a = np.asarray(m.toarray() if sparse.issparse(m) else m, dtype=np.float64)
        if a.ndim != 2 or a.shape[0] != a.shape[1]:
            raise ValueError(f"networks must be square, got shape {a.shape}")
        return (a + a.T) * 0.5

    ref, tst = dense(reference), dense(test)
    if ref.shape != tst.shape:
        raise ValueError(f"network shapes differ: {ref.shape} vs {tst.shape}")
    modules = np.asarray(modules, dtype=np.int64)
    if len(modules) != ref.shape[0]:
        raise ValueError(f"{len(modules)} module labels for {ref.shape[0]} genes")
    if n_permutations < 2:
        raise ValueError(f"n_permutations must be at least 2, got {n_permutations}")
    rng = np.random.default_rng(seed)
    n = ref.shape[0]
    rows = []
    for m in module_ids(modules).tolist():
        members = np.flatnonzero(modules == m)
        obs = _preservation_stats(ref, tst, members)
        null = np.array(
            [
                _preservation_stats(ref, tst, np.sort(rng.choice(n, len(members), replace=False)))
                for _ in range(n_permutations)
            ]
        )
        sd = null.std(axis=0, ddof=1)
        z = np.where(sd > 0, (obs - null.mean(axis=0)) / np.where(sd > 0, sd, 1.0), 0.0)
        z_density = float(z[0])
        z_connectivity = float(np.median(z[1:]))
        rows.append(
            {
                "module": int(m),
                "size": len(members),
                "mean_weight": float(obs[0]),
                "cor_weight": float(obs[1]),
                "cor_kim": float(obs[2]),
                "z_density": z_density,
                "z_connectivity": z_connectivity,
                "z_summary": (z_density + z_connectivity) / 2.0,
                "p_density": float((1 + np.sum(null[:, 0] >= obs[0])) / (1 + n_permutations)),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "module",
            "size",
            "mean_weight",
            "cor_weight",
            "cor_kim",
            "z_density",
            "z_connectivity",
            "z_summary",
            "p_density",
        ],
    )

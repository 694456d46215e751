"""In-silico perturbation of genes in case cells, and its goal-state statistics.

As Geneformer's ``InSilicoPerturber``, a gene's token is deleted or moved (see
:mod:`geneattn.edits`), the cell re-embedded, and the shift of its embedding measured, and
how far toward a goal state (here the control cells' centroid) it moved.

Each perturbation is an edit of a cell's tokens (:mod:`geneattn.edits`); the model
(:class:`~geneattn.models.protocol.AttentionModel`) gives the original and perturbed cell
embeddings of every edit. The study model's kernel (``mha_edit_effects``) makes one forward
pass per cell, then ``O(n d)`` per perturbation instead of a new ``O(n^2 d)`` pass (see
``kernels/src/perturb.rs``); its attention has no position information, so moving a token
changes nothing: ``inhibit``, ``activate`` and ``overexpress`` of an expressed gene leave the
embedding unchanged (shifts exactly 0), and ``overexpress`` of an absent gene inserts it and
drops the cell's last token. A checkpoint re-encodes every perturbed sequence, so rank
shifts matter there.

For each perturbed gene and cell, with ``z`` the cell embedding without the gene's own
token in the pooling (Geneformer excludes it from both embeddings) and ``z'`` the perturbed
one:

- ``cosine_shift = 1 - cos(z, z')``;
- ``goal_shift = cos(z', c) - cos(z, c)``, ``c`` the centroid of the control cells
  (positive: the perturbation moves the cell toward the control state).

Each gene's goal shifts are compared with those of random expressed genes of the same
expression-frequency bin (Wilcoxon rank-sum test), then Benjamini-Hochberg FDR.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from geneattn.edits import plan_edits
from geneattn.enrichment import bh_fdr
from geneattn.errors import InputError
from geneattn.tokenize import TokenizedCells

if TYPE_CHECKING:
    from geneattn.models.protocol import AttentionModel

#: Columns of ``perturbation.tsv``.
TABLE_COLUMNS = (
    "gene",
    "ensembl_id",
    "module",
    "mode",
    "n_cells",
    "mean_cosine_shift",
    "mean_goal_shift",
    "statistic",
    "p_value",
    "fdr",
)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na = np.linalg.norm(a, axis=-1)
    nb = np.linalg.norm(b, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((na > 0) & (nb > 0), (a * b).sum(axis=-1) / (na * nb), 0.0)


def perturbation_shifts(
    model: AttentionModel,
    cells: TokenizedCells,
    tokens: Sequence[int],
    mode: str,
    *,
    goal: np.ndarray | None,
    shift: float = 0.25,
    n_threads: int = 1,
    progress: Callable[[int, int], None] | None = None,
    chunk: int = 64,
) -> pd.DataFrame:
    """Cosine and goal-state shifts of each perturbed token in each cell it applies to.

    Parameters
    ----------
    model
        The study's attention model, or a checkpoint (one forward pass per perturbed
        sequence, which makes rank shifts matter).
    cells
        The cells perturbed (the case cells of a shard).
    tokens
        Tokens to perturb.
    mode
        One of :data:`MODES`.
    shift
        ``inhibit`` / ``activate``: fraction of the sequence the token moves (see
        :func:`perturbed_tokens`; the study model is order-free, so only checkpoints see it).
    goal
        The goal-state centroid ``(d_model,)``, or None (``goal_shift`` is then NaN).
    n_threads
        Rayon threads.
    progress
        Called with ``(done, total)`` cells after each chunk of cells.
    chunk
        Cells per kernel call (bounds the memory of one call).

    Returns
    -------
    pandas.DataFrame
        ``token``, ``cell`` (index in ``cells``), ``cosine_shift``, ``goal_shift``.
    """
    from geneattn.tokenize import subset_cells

    parts = []
    for c0 in range(0, cells.n_cells, chunk):
        index = np.arange(c0, min(c0 + chunk, cells.n_cells))
        sub = subset_cells(cells, index)
        plan = plan_edits(sub, tokens, mode)
        original, perturbed = model.edit_embeddings(
            sub, plan.cell, plan.token, mode, shift=shift, n_threads=n_threads
        )
        cosine_shift = 1.0 - _cosine(original, perturbed)
        if goal is None:
            goal_shift = np.full(len(cosine_shift), np.nan)
        else:
            g = np.broadcast_to(goal, original.shape)
            goal_shift = _cosine(perturbed, g) - _cosine(original, g)
        parts.append(
            pd.DataFrame(
                {
                    "token": plan.token,
                    "cell": index[plan.cell],
                    "cosine_shift": cosine_shift,
                    "goal_shift": goal_shift,
                }
            )
        )
        if progress is not None:
            progress(int(index[-1]) + 1, cells.n_cells)
    if not parts:
        return pd.DataFrame({"token": [], "cell": [], "cosine_shift": [], "goal_shift": []}).astype(
            {"token": np.int64, "cell": np.int64}
        )
    return pd.concat(parts, ignore_index=True)


def frequency_bins(presence: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Quantile bin (0 .. n_bins - 1) of each gene's number of expressing cells."""
    ranks = pd.Series(presence).rank(method="first").to_numpy()
    return np.minimum(((ranks - 1) * n_bins / max(len(presence), 1)).astype(np.int64), n_bins - 1)


def choose_null_tokens(
    candidates: np.ndarray,
    presence: np.ndarray,
    exclude: Sequence[int],
    *,
    per_bin: int,
    n_bins: int = 10,
    seed: int = 0,
) -> tuple[np.ndarray, dict[int, int]]:
    """Random expressed tokens, ``per_bin`` from each expression-frequency bin.

    Parameters
    ----------
    candidates
        Tokens that may be drawn (expressed in enough cells).
    presence
        Number of expressing cells of each candidate.
    exclude
        Tokens never drawn (the perturbed genes).
    per_bin
        Tokens drawn per bin (all of a smaller bin).
    n_bins
        Quantile bins of ``presence``.
    seed
        Seed of the draw.

    Returns
    -------
    tuple
        The drawn tokens (sorted) and the bin of every candidate token.
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    bins = frequency_bins(np.asarray(presence), n_bins)
    bin_of = dict(zip(candidates.tolist(), bins.tolist(), strict=True))
    skip = set(int(t) for t in exclude)
    rng = np.random.default_rng(seed)
    drawn: list[int] = []
    for b in range(n_bins):
        pool = [t for t in candidates[bins == b].tolist() if t not in skip]
        if pool:
            k = min(per_bin, len(pool))
            drawn.extend(rng.choice(pool, size=k, replace=False).tolist())
    return np.array(sorted(drawn), dtype=np.int64), bin_of


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
    by_token = {int(t): g for t, g in shifts.groupby("token")}
    null_by_bin: dict[int, list[np.ndarray]] = {}
    for t in null_set:
        if t in by_token:
            null_by_bin.setdefault(bin_of.get(t, -1), []).append(by_token[t][column].to_numpy())
    all_null = [v for vs in null_by_bin.values() for v in vs]
    rows = []
    for t in targets:
        t = int(t)
        g = by_token.get(t)
        values = np.array([]) if g is None else g[column].to_numpy()
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
                "n_cells": 0 if g is None else len(g),
                "mean_cosine_shift": float("nan") if g is None else g["cosine_shift"].mean(),
                "mean_goal_shift": float("nan") if g is None else g["goal_shift"].mean(),
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


@dataclasses.dataclass(frozen=True)
class PerturbPlan:
    """What every perturbation shard perturbs, chosen once from all case cells.

    Attributes
    ----------
    tokens
        int64 tokens perturbed: the targets, then the null genes.
    roles
        ``"target"`` or ``"null"`` per token.
    bins
        Expression-frequency bin of each token among the case cells (-1: not a candidate).
    goal
        float64 goal-state centroid (mean control-cell embedding), empty without controls.
    """

    tokens: np.ndarray
    roles: np.ndarray
    bins: np.ndarray
    goal: np.ndarray

    @property
    def targets(self) -> np.ndarray:
        """Tokens of the genes asked for."""
        return self.tokens[self.roles == "target"]


def save_plan(path: str | Path, plan: PerturbPlan) -> None:
    """Write ``plan`` atomically (uncompressed ``.npz``, byte-deterministic)."""
    from geneattn.io.atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            tokens=np.asarray(plan.tokens, dtype=np.int64),
            roles=np.asarray(plan.roles).astype(str),
            bins=np.asarray(plan.bins, dtype=np.int64),
            goal=np.asarray(plan.goal, dtype=np.float64),
        )


def load_plan(path: str | Path) -> PerturbPlan:
    """Read a plan written by :func:`save_plan`, checking its structure."""
    from geneattn.io.npz import read_npz_arrays

    z = read_npz_arrays(path, ("tokens", "roles", "bins", "goal"), "a perturbation plan")
    plan = PerturbPlan(
        tokens=z["tokens"], roles=z["roles"].astype(str), bins=z["bins"], goal=z["goal"]
    )
    n = len(plan.tokens)
    if (
        plan.tokens.dtype != np.int64
        or plan.tokens.ndim != 1
        or plan.roles.shape != (n,)
        or plan.bins.shape != (n,)
        or plan.goal.ndim != 1
        or not set(plan.roles.tolist()) <= {"target", "null"}
        or len(np.unique(plan.tokens)) != n
    ):
        raise InputError("not a perturbation plan: inconsistent tokens, roles, bins or goal", path)
    return plan

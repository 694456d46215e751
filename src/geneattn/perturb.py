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
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from geneattn.edits import plan_edits
from geneattn.errors import InputError
from geneattn.tokenize import TokenizedCells

if TYPE_CHECKING:
    from geneattn.models.protocol import AttentionModel

log = logging.getLogger(__name__)

#: Columns of ``perturbation.tsv`` after :data:`TABLE_COLUMNS`: the unit the p-values treat
#: as replicates (``samples`` or ``cells``), samples seen, the shift beyond the null genes
#: and its bootstrap interval over samples.
EXTRA_COLUMNS = ("unit", "n_samples", "effect", "ci_low", "ci_high")

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
    alt_goals: Mapping[str, np.ndarray] | None = None,
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
    alt_goals
        Alternative end states (Geneformer's ``alt_states``): label -> ``(d_model,)``; the
        shift toward each goes to column ``alt_shift_{label}``, defined as ``goal_shift``.
    n_threads
        Rayon threads.
    progress
        Called with ``(done, total)`` cells after each chunk of cells.
    chunk
        Cells per kernel call (bounds the memory of one call).

    Returns
    -------
    pandas.DataFrame
        ``token``, ``cell`` (index in ``cells``), ``cosine_shift``, ``goal_shift``, then
        ``alt_shift_{label}`` per alternative end state.
    """
    from geneattn.tokenize import subset_cells

    alt_goals = {str(k): np.asarray(v, dtype=np.float64) for k, v in (alt_goals or {}).items()}
    alt_columns = [alt_shift_column(k) for k in alt_goals]
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
        alt = {}
        for column, state in zip(alt_columns, alt_goals.values(), strict=True):
            g = np.broadcast_to(state, original.shape)
            alt[column] = _cosine(perturbed, g) - _cosine(original, g)
        parts.append(
            pd.DataFrame(
                {
                    "token": plan.token,
                    "cell": index[plan.cell],
                    "cosine_shift": cosine_shift,
                    "goal_shift": goal_shift,
                    **alt,
                }
            )
        )
        if progress is not None:
            progress(int(index[-1]) + 1, cells.n_cells)
    if not parts:
        columns = ["token", "cell", "cosine_shift", "goal_shift", *alt_columns]
        return pd.DataFrame({c: [] for c in columns}).astype({"token": np.int64, "cell": np.int64})
    return pd.concat(parts, ignore_index=True)


#: Prefix of a shard column holding the shifts toward an alternative end state.
ALT_SHIFT_PREFIX = "alt_shift_"


def alt_shift_column(state: str) -> str:
    """The shard column of the shifts toward the alternative end state ``state``."""
    return f"{ALT_SHIFT_PREFIX}{state}"


def alt_shift_states(table: pd.DataFrame) -> list[str]:
    """The alternative end states of a shard table, in column order."""
    n = len(ALT_SHIFT_PREFIX)
    return [str(c)[n:] for c in table.columns if str(c).startswith(ALT_SHIFT_PREFIX)]


#: Columns of a perturbation shard's table (``geneattn perturb``).
SHIFT_COLUMNS = ("gene_id", "role", "bin", "cell", "mode", "cosine_shift", "goal_shift")


def shift_table(
    plan: PerturbPlan,
    shifts: pd.DataFrame,
    cells: TokenizedCells,
    mode: str,
) -> pd.DataFrame:
    """A perturbation shard's table: one row per planned gene (``cell`` empty, shifts NaN),
    so that every planned gene appears even where the shard's cells do not express it, then
    one row per perturbation of :func:`perturbation_shifts`.

    Parameters
    ----------
    plan
        The plan the shard followed.
    shifts
        :func:`perturbation_shifts` of the shard's cells.
    cells
        The shard's cells.
    mode
        The perturbation mode.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`SHIFT_COLUMNS`, then ``alt_shift_{label}`` per alternative end state
        of the plan.
    """
    alt_columns = [alt_shift_column(str(k)) for k in plan.alt_states]
    vocabulary = np.asarray(cells.vocabulary).astype(str)
    role_of = dict(zip(plan.tokens.tolist(), plan.roles.tolist(), strict=True))
    bin_of = dict(zip(plan.tokens.tolist(), plan.bins.tolist(), strict=True))
    out = pd.DataFrame(
        {
            "gene_id": vocabulary[shifts["token"].to_numpy()],
            "role": [role_of[t] for t in shifts["token"].tolist()],
            "bin": [bin_of[t] for t in shifts["token"].tolist()],
            "cell": cells.cell_ids.astype(str)[shifts["cell"].to_numpy()],
            "mode": mode,
            "cosine_shift": shifts["cosine_shift"].to_numpy(),
            "goal_shift": shifts["goal_shift"].to_numpy(),
            **{c: shifts[c].to_numpy() for c in alt_columns},
        }
    )
    planned = pd.DataFrame(
        {
            "gene_id": vocabulary[plan.tokens],
            "role": plan.roles,
            "bin": plan.bins,
            "cell": "",
            "mode": mode,
            "cosine_shift": np.nan,
            "goal_shift": np.nan,
            **{c: np.nan for c in alt_columns},
        }
    )
    return pd.concat([planned, out], ignore_index=True)


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


#: Text columns of a shift table, held as categoricals once read.
TEXT_COLUMNS = ("gene_id", "role", "cell", "mode")


def read_shift_tables(paths: Sequence[str | Path]) -> pd.DataFrame:
    """The tables of perturbation shards (:func:`shift_table`), concatenated in order.

    The text columns (:data:`TEXT_COLUMNS`) are categoricals: a study's tables hold a row
    per perturbed gene and cell, and a string object per cell of those rows would hold
    several times the memory of their numbers (at a million cells, gigabytes).

    Raises
    ------
    InputError
        A shard cannot be read, lacks a column, or the shards mix modes.
    """
    from pandas.api.types import union_categoricals

    parts = []
    text = dict.fromkeys(TEXT_COLUMNS, "category")
    for path in paths:
        try:
            part = pd.read_csv(path, sep="\t", keep_default_na=False, na_values=["NA"], dtype=text)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            raise InputError(f"cannot read the shard ({err})", path) from None
        missing = set(SHIFT_COLUMNS) - set(part.columns)
        if missing:
            raise InputError(f"missing columns {sorted(missing)}", path)
        if parts and list(part.columns) != list(parts[0].columns):
            raise InputError("its columns differ from the first shard's", path)
        parts.append(part)
    if not parts:
        raise InputError("no perturbation shards given")
    columns = {}
    for name in parts[0].columns:
        if name in text:
            columns[name] = union_categoricals([part[name] for part in parts])
        else:
            columns[name] = np.concatenate([part[name].to_numpy() for part in parts])
    del parts
    table = pd.DataFrame(columns)
    modes = sorted(set(table["mode"]))
    if len(modes) != 1:
        raise InputError(f"the shards mix perturbation modes {modes}", paths[0])
    return table


def read_module_annotation(path: str | Path) -> tuple[dict[str, int], dict[str, str]]:
    """:func:`module_annotation` of a module table file."""
    return module_annotation(pd.read_csv(path, sep="\t"), source=path)


def module_annotation(
    modules: pd.DataFrame, *, source: str | Path | None = None
) -> tuple[dict[str, int], dict[str, str]]:
    """``{gene_id: module}`` and ``{gene_id: symbol}`` of a module table.

    Raises
    ------
    InputError
        The table lacks the columns gene, gene_id or module.
    """
    if not {"gene", "gene_id", "module"} <= set(modules.columns):
        raise InputError("needs the columns gene, gene_id and module", source)
    module_of = dict(zip(modules["gene_id"], modules["module"].astype(int), strict=True))
    symbol_of = dict(zip(modules["gene_id"], modules["gene"], strict=True))
    return module_of, symbol_of


def perturbation_table(
    table: pd.DataFrame,
    *,
    name_map: Mapping[str, str],
    module_of: Mapping[str, int] | None = None,
    module_symbols: Mapping[str, str] | None = None,
    samples: Mapping[str, str] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """``perturbation.tsv``: each target gene's shifts against the null genes of its bin.

    With ``samples`` (cell id -> sample, e.g. the patient) each gene's shift beyond its
    null genes is summarised per sample and tested across samples
    (:func:`geneattn.perturb_stats.sample_level_statistics`: sign-flip test, bootstrap
    interval); without, every cell is a replicate
    (:func:`geneattn.perturb_stats.cell_level_statistics`) and the ``unit`` column says so.

    Parameters
    ----------
    table
        Every shard's rows (:func:`read_shift_tables`), one mode.
    name_map
        ``{symbol: ensembl_id}``: a gene's symbol is the alphabetically first of its ID's.
    module_of
        ``{gene_id: module}`` of the module table (-1 for genes not in it); None: -1.
    module_symbols
        ``{gene_id: symbol}`` of the module table, preferred to ``name_map``'s.
    samples
        Sample of every perturbed cell (None: cells are the replicates).
    seed
        Seed of the sign flips and the bootstrap.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`TABLE_COLUMNS` then :data:`EXTRA_COLUMNS`, sorted by the mean goal
        shift (the mean cosine shift without a goal state), largest first, then by gene.
    """
    single = (table["role"] != "group").to_numpy()  # genes perturbed together: group_table
    planned = (table["cell"] == "").to_numpy()
    plan = table[single & planned].drop_duplicates(["gene_id", "role"])
    genes = sorted(set(plan["gene_id"]))
    code = {g: i for i, g in enumerate(genes)}
    # the (gene, cell) rows, with only the columns the tests read: a study's tables hold
    # millions of rows, so nothing here copies a text column per row
    rows = single & ~planned
    gene = table["gene_id"].astype("category")
    token = np.array([code.get(g, -1) for g in gene.cat.categories], dtype=np.int64)
    token = token[gene.cat.codes.to_numpy()[rows]]
    if (token < 0).any():
        raise InputError("shift rows of genes the shards' planned rows do not list")
    shifts = pd.DataFrame(
        {
            "token": token,
            "cosine_shift": table["cosine_shift"].to_numpy(dtype=np.float64)[rows],
            "goal_shift": table["goal_shift"].to_numpy(dtype=np.float64)[rows],
        }
    )
    targets = [code[g] for g in plan.loc[plan["role"] == "target", "gene_id"]]
    null = [code[g] for g in plan.loc[plan["role"] == "null", "gene_id"]]
    bin_of = {code[g]: int(b) for g, b in zip(plan["gene_id"], plan["bin"], strict=True)}
    column = "goal_shift" if shifts["goal_shift"].notna().any() else "cosine_shift"
    if column == "cosine_shift":
        log.info("no goal state (single-condition study): testing the cosine shifts")
    if samples is not None:
        from geneattn.perturb_stats import sample_level_statistics

        # the perturbed cells' ids, sorted, and each row's index into them (by category,
        # not by a string per row: a study's tables hold millions of rows)
        cell = table["cell"][rows].astype("category").cat.remove_unused_categories()
        ids = np.asarray(cell.cat.categories, dtype=str)
        order = np.argsort(ids, kind="stable")
        cell_ids = ids[order]
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        missing = [c for c in cell_ids.tolist() if c not in samples]
        if missing:
            raise InputError(f"{len(missing)} perturbed cells have no sample, e.g. {missing[0]!r}")
        shifts["cell"] = rank[cell.cat.codes.to_numpy()]
        sample_of = np.array([str(samples[c]) for c in cell_ids.tolist()])
        stats = sample_level_statistics(
            shifts, targets, null, bin_of, sample_of, column=column, seed=seed
        )
        log.info("tested across %d samples", len(set(sample_of.tolist())))
    else:
        from geneattn.perturb_stats import cell_level_statistics

        stats = cell_level_statistics(
            shifts.assign(cell=np.arange(len(shifts))), targets, null, bin_of, column=column
        )
        log.warning("no sample column: the test treats every cell as an independent replicate")

    symbol_of: dict[str, str] = {}
    for symbol, ens in sorted(name_map.items()):
        symbol_of.setdefault(ens, symbol)
    symbol_of.update(module_symbols or {})
    module_of = module_of or {}
    ensembl = [genes[t] for t in stats["token"]]
    modes = table["mode"][single]
    out = pd.DataFrame(
        {
            "gene": [symbol_of.get(g, g) for g in ensembl],
            "ensembl_id": ensembl,
            "module": [module_of.get(g, -1) for g in ensembl],
            "mode": str(modes.iloc[0]) if len(modes) else "",
            "n_cells": stats["n_cells"].to_numpy(),
            "mean_cosine_shift": stats["mean_cosine_shift"].to_numpy(),
            "mean_goal_shift": stats["mean_goal_shift"].to_numpy(),
            "statistic": stats["statistic"].to_numpy(),
            "p_value": stats["p_value"].to_numpy(),
            "fdr": stats["fdr"].to_numpy(),
            **{c: stats[c].to_numpy() for c in EXTRA_COLUMNS},
        }
    )
    effect = out["mean_goal_shift"] if column == "goal_shift" else out["mean_cosine_shift"]
    out = (
        out.assign(_effect=effect.fillna(-np.inf))
        .sort_values(["_effect", "gene"], ascending=[False, True], kind="mergesort")
        .drop(columns="_effect")
    )
    return out[[*TABLE_COLUMNS, *EXTRA_COLUMNS]]


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
    alt_states
        Labels of the alternative end states (Geneformer's ``alt_states``), often empty.
    alt_goals
        float64 ``(len(alt_states), d)``: their state embeddings, like ``goal``.
    """

    tokens: np.ndarray
    roles: np.ndarray
    bins: np.ndarray
    goal: np.ndarray
    alt_states: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=str))
    alt_goals: np.ndarray = dataclasses.field(
        default_factory=lambda: np.zeros((0, 0), dtype=np.float64)
    )

    @property
    def alt_goal_map(self) -> dict[str, np.ndarray]:
        """``{label: state embedding}`` of the alternative end states."""
        return {str(k): v for k, v in zip(self.alt_states, self.alt_goals, strict=True)}

    @property
    def targets(self) -> np.ndarray:
        """Tokens of the genes asked for."""
        return self.tokens[self.roles == "target"]


def save_plan(path: str | Path, plan: PerturbPlan) -> None:
    """Write ``plan`` atomically (uncompressed ``.npz``, byte-deterministic; the
    alternative end states only when there are some)."""
    from geneattn.io.atomic import atomic_path

    alt = {}
    if len(plan.alt_states):
        alt = {
            "alt_states": np.asarray(plan.alt_states).astype(str),
            "alt_goals": np.asarray(plan.alt_goals, dtype=np.float64),
        }
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            tokens=np.asarray(plan.tokens, dtype=np.int64),
            roles=np.asarray(plan.roles).astype(str),
            bins=np.asarray(plan.bins, dtype=np.int64),
            goal=np.asarray(plan.goal, dtype=np.float64),
            **alt,
        )


def check_plan(
    plan: PerturbPlan,
    vocabulary: np.ndarray,
    *,
    source: str | Path | None = None,
    tokens_source: str | Path | None = None,
) -> None:
    """Refuse a plan with a token outside ``vocabulary`` (made from other tokens)."""
    if len(plan.tokens) and plan.tokens.max() >= len(vocabulary):
        raise InputError(f"a token is outside the vocabulary of {tokens_source}", source)


def load_plan(path: str | Path) -> PerturbPlan:
    """Read a plan written by :func:`save_plan`, checking its structure."""
    from geneattn.io.npz import read_npz_arrays

    z = read_npz_arrays(path, ("tokens", "roles", "bins", "goal"), "a perturbation plan")
    alt = {}
    with np.load(path, allow_pickle=False) as f:
        has_alt = "alt_states" in f.files
    if has_alt:
        a = read_npz_arrays(path, ("alt_states", "alt_goals"), "a perturbation plan")
        alt = {"alt_states": a["alt_states"].astype(str), "alt_goals": a["alt_goals"]}
    plan = PerturbPlan(
        tokens=z["tokens"], roles=z["roles"].astype(str), bins=z["bins"], goal=z["goal"], **alt
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
        or (len(plan.alt_states) and plan.alt_goals.shape != (len(plan.alt_states), len(plan.goal)))
    ):
        raise InputError("not a perturbation plan: inconsistent tokens, roles, bins or goal", path)
    return plan

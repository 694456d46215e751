"""What the perturbation stage perturbs: target genes, null genes and the goal state.

Chosen once from all case cells, before the perturbation shards run
(:func:`perturbation_plan`):

- the targets (:func:`choose_targets`): the top hubs of the disease modules (modules whose
  differential FDR is below ``disease_fdr``, :func:`disease_modules`; every module when none
  is), a list of genes, or the genes expressed in most case cells;
- null genes: random expressed genes of each expression-frequency bin
  (:func:`geneattn.perturb.choose_null_tokens`);
- the goal state: the centroid of the control cells' embeddings (:func:`control_centroid`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from geneattn.cells import token_presence
from geneattn.errors import InputError
from geneattn.genes import ensembl_id
from geneattn.perturb import PerturbPlan, choose_null_tokens

if TYPE_CHECKING:
    import pandas as pd

    from geneattn.tokenize import TokenizedCells

__all__ = [
    "SKIPPED_COLUMNS",
    "SKIP_REASONS",
    "GenesFrom",
    "Targets",
    "choose_targets",
    "control_centroid",
    "disease_modules",
    "expressed_tokens",
    "perturbation_plan",
    "read_differential_table",
    "read_hub_table",
]

log = logging.getLogger(__name__)

GenesFrom = Literal["hubs", "list", "expressed"]


def read_hub_table(path: str | Path) -> pd.DataFrame:
    """A module table (``modules.tsv``) with the columns ``gene_id``, ``module``, ``hub_rank``.

    Raises
    ------
    InputError
        The file cannot be read or lacks a column.
    """
    import pandas as pd

    try:
        table = pd.read_csv(
            path, sep="\t", keep_default_na=False, dtype={"gene": str, "gene_id": str}
        )
    except (OSError, pd.errors.ParserError) as err:
        raise InputError(f"cannot read the module table ({err})", path) from None
    missing = {"gene_id", "module", "hub_rank"} - set(table.columns)
    if missing:
        raise InputError(f"missing columns {sorted(missing)}", path)
    return table


def read_differential_table(path: str | Path) -> pd.DataFrame:
    """A differential table (``differential.tsv``); its ``module`` and ``fdr`` columns are
    checked by :func:`disease_modules`.

    Raises
    ------
    InputError
        The file cannot be read.
    """
    import pandas as pd

    try:
        return pd.read_csv(path, sep="\t")
    except (OSError, pd.errors.ParserError) as err:
        raise InputError(f"cannot read the differential table ({err})", path) from None


def disease_modules(
    differential: pd.DataFrame | None,
    modules: set[int],
    *,
    disease_fdr: float = 0.05,
    source: str | Path | None = None,
) -> set[int]:
    """Modules whose differential FDR is below ``disease_fdr``, or all when none is.

    Parameters
    ----------
    differential
        The differential table (``module``, ``fdr``), or None (every module).
    modules
        The module numbers to choose from.
    disease_fdr
        FDR threshold of a disease module.
    source
        File of ``differential``, named in errors.

    Returns
    -------
    set[int]
        The disease modules.
    """
    if differential is None or differential.empty:
        return modules
    if not {"module", "fdr"} <= set(differential.columns):
        raise InputError("needs the columns module and fdr", source)
    below = differential["fdr"] < disease_fdr
    hits = set(differential.loc[below, "module"].astype(int).tolist()) & modules
    if not hits:
        log.info(
            "no module has a differential FDR below %g; perturbing hubs of all modules",
            disease_fdr,
        )
        return modules
    log.info("%d disease modules (FDR < %g): %s", len(hits), disease_fdr, sorted(hits))
    return hits


#: Columns of the table of genes asked for but not perturbed (``perturbation/skipped.tsv``).
SKIPPED_COLUMNS = ("gene", "gene_id", "module", "reason", "case_cells")

#: Why a gene asked for is not perturbed.
SKIP_REASONS = {
    "not_in_vocabulary": "not in the token vocabulary",
    "too_few_case_cells": "expressed in too few case cells",
    "over_max_genes": "beyond max_genes",
}


@dataclass(frozen=True)
class Targets:
    """The genes to perturb, and the genes asked for that are not.

    Attributes
    ----------
    tokens
        int64 tokens to perturb, in a fixed order.
    skipped
        One row per gene asked for (listed, or a hub passed over) that is not perturbed:
        :data:`SKIPPED_COLUMNS`. ``gene`` as asked for (or the hub's symbol), ``gene_id`` its
        Ensembl ID (``""`` when unknown), ``module`` the hub's module (-1 for a listed gene),
        ``reason`` a key of :data:`SKIP_REASONS`, ``case_cells`` the case cells expressing
        it (-1 when it has no token).
    """

    tokens: np.ndarray
    skipped: pd.DataFrame


def choose_targets(
    *,
    genes_from: GenesFrom,
    vocabulary: np.ndarray,
    presence: np.ndarray,
    expressed: np.ndarray,
    name_map: Mapping[str, str],
    genes: Sequence[str] = (),
    hubs: pd.DataFrame | None = None,
    differential: pd.DataFrame | None = None,
    hubs_per_module: int = 5,
    disease_fdr: float = 0.05,
    max_genes: int = 200,
    min_cells: int = 5,
    differential_source: str | Path | None = None,
) -> Targets:
    """The genes to perturb, and those asked for that cannot be.

    Parameters
    ----------
    genes_from
        ``"hubs"``: the ``hubs_per_module`` top hubs (by ``hub_rank``) of each disease
        module among those with a token and expressed in ``min_cells`` or more case cells
        (hubs passed over are reported as skipped); ``"list"``: ``genes`` (symbols or
        Ensembl IDs), those with a token and expressed in ``min_cells`` case cells;
        ``"expressed"``: the genes expressed in most case cells (ties by token id).
    vocabulary
        Gene id of each token id.
    presence
        Case cells holding each token id.
    expressed
        Token ids held by ``min_cells`` or more case cells.
    name_map
        ``{symbol: ensembl_id}`` (for ``genes`` given by symbol).
    genes
        Symbols or Ensembl IDs (``genes_from="list"``).
    hubs
        The module table (``gene_id``, ``module``, ``hub_rank``, optionally ``gene``;
        ``genes_from="hubs"``).
    differential
        The differential table, which decides the disease modules (None: every module).
    hubs_per_module, disease_fdr, max_genes, min_cells
        As in the workflow's ``perturb`` config; genes beyond the first ``max_genes`` are
        skipped.
    differential_source
        File of ``differential``, named in errors.

    Returns
    -------
    Targets
        The tokens (at most ``max_genes``) and the skipped genes; skipped genes are also
        named in the log.

    Raises
    ------
    InputError
        ``genes_from="list"`` without genes; ``genes_from="hubs"`` without a module table;
        no gene is left to perturb (the message names the skipped genes and why).
    """
    import pandas as pd

    vocabulary = np.asarray(vocabulary).astype(str)
    token_of = {g: t for t, g in enumerate(vocabulary)}
    skipped: list[tuple[str, str, int, str, int]] = []

    def usable(gene: str, gene_id: str, module: int) -> int | None:
        """The gene's token when it can be perturbed, else None (recorded as skipped)."""
        t = token_of.get(gene_id)
        if t is None:
            skipped.append((gene, gene_id, module, "not_in_vocabulary", -1))
            return None
        if presence[t] < min_cells:
            skipped.append((gene, gene_id, module, "too_few_case_cells", int(presence[t])))
            return None
        return t

    if genes_from == "expressed":
        chosen = sorted(expressed.tolist(), key=lambda t: (-presence[t], t))
    elif genes_from == "list":
        if not genes:
            raise InputError("genes_from 'list' needs genes")
        chosen, label = [], {}
        for g in dict.fromkeys(str(g) for g in genes):
            t = usable(g, ensembl_id(g, name_map), -1)
            if t is not None and t not in label:
                chosen.append(t)
                label[t] = (g, -1)
    elif genes_from == "hubs":
        if hubs is None:
            raise InputError("genes_from 'hubs' needs the module table")
        table = hubs[hubs["module"] > 0]
        disease = disease_modules(
            differential,
            set(table["module"].tolist()),
            disease_fdr=disease_fdr,
            source=differential_source,
        )
        table = table[table["module"].isin(disease)].sort_values(["module", "hub_rank"])
        chosen, label = [], {}
        for module, group in table.groupby("module", sort=True):
            symbols = group["gene"] if "gene" in group.columns else group["gene_id"]
            taken = 0
            for gene_id, symbol in zip(group["gene_id"], symbols, strict=True):
                if taken == hubs_per_module:
                    break
                t = usable(str(symbol) or str(gene_id), str(gene_id), int(module))
                if t is not None:
                    taken += 1
                    if t not in label:
                        chosen.append(t)
                        label[t] = (str(symbol) or str(gene_id), int(module))
    else:
        raise InputError(f"genes_from must be hubs, list or expressed, got {genes_from!r}")
    if genes_from != "expressed":
        for t in chosen[max_genes:]:
            gene, module = label[t]
            skipped.append((gene, vocabulary[t], module, "over_max_genes", int(presence[t])))
    tokens = np.array(chosen[:max_genes], dtype=np.int64)
    table = pd.DataFrame(skipped, columns=list(SKIPPED_COLUMNS))
    _log_skipped(table, genes_from, min_cells=min_cells, max_genes=max_genes)
    if len(tokens) == 0:
        asked = "listed genes" if genes_from == "list" else "hub genes of the disease modules"
        if len(table) == 0:
            raise InputError(f"no {asked} to perturb")
        raise InputError(
            f"none of the {len(table)} {asked} can be perturbed: "
            + _skipped_text(table, min_cells, max_genes)
        )
    return Targets(tokens=tokens, skipped=table)


def _skipped_text(table: pd.DataFrame, min_cells: int, max_genes: int) -> str:
    """``TTN (not in the token vocabulary), MYH7 (in 2 case cells, fewer than 5)``."""

    def why(row) -> str:
        if row.reason == "too_few_case_cells":
            return f"in {row.case_cells} case cells, fewer than {min_cells}"
        if row.reason == "over_max_genes":
            return f"beyond max_genes {max_genes}"
        return SKIP_REASONS[row.reason]

    return ", ".join(f"{row.gene} ({why(row)})" for row in table.itertuples(index=False))


def _log_skipped(table: pd.DataFrame, genes_from: str, *, min_cells: int, max_genes: int) -> None:
    if len(table):
        what = "listed genes" if genes_from == "list" else "hub genes"
        log.warning(
            "%d %s skipped: %s", len(table), what, _skipped_text(table, min_cells, max_genes)
        )


def control_centroid(
    embeddings: np.ndarray,
    labels: Sequence[str] | np.ndarray,
    control: str,
    *,
    summary_stat: str = "exact_mean",
    source: str | Path | None = None,
) -> np.ndarray:
    """Embedding of the goal state: mean (or median) of the cells labelled ``control``.

    Parameters
    ----------
    embeddings
        Cell embeddings, cells x d.
    labels
        Condition of each cell (compared as str).
    control
        The control label.
    summary_stat
        ``exact_mean`` or ``exact_median`` (Geneformer's ``EmbExtractor`` state embedding:
        per dimension, the lower middle value for an even count).
    source
        File of the embeddings, named in errors.

    Returns
    -------
    np.ndarray
        float64 ``(d,)``.

    Raises
    ------
    InputError
        No cell is labelled ``control``.
    """
    chosen = np.asarray(labels).astype(str) == control
    if not chosen.any():
        raise InputError(f"no cell labelled {control!r}", source)
    from geneattn.geneformer_shifts import cell_embedding_states

    return cell_embedding_states(np.asarray(embeddings)[chosen], summary_stat)


def perturbation_plan(
    *,
    targets: np.ndarray,
    presence: np.ndarray,
    expressed: np.ndarray,
    goal: np.ndarray | None,
    alt_goals: Mapping[str, np.ndarray] | None = None,
    null_per_bin: int = 10,
    seed: int = 0,
) -> PerturbPlan:
    """The plan every perturbation shard follows: the targets, then null genes.

    Parameters
    ----------
    targets
        Tokens to perturb (:func:`choose_targets`).
    presence
        Case cells holding each token id (:func:`geneattn.cells.token_presence`).
    expressed
        Token ids held by enough case cells: the candidates of the null genes.
    goal
        The goal-state centroid, or None (no goal shift).
    alt_goals
        Alternative end states (label -> state embedding, like ``goal``).
    null_per_bin
        Null genes drawn per expression-frequency bin.
    seed
        Seed of the draw.

    Returns
    -------
    PerturbPlan
        Tokens, roles, bins and goal.
    """
    null, bin_of = choose_null_tokens(
        expressed, presence[expressed], targets, per_bin=null_per_bin, seed=seed
    )
    tokens = np.concatenate([targets, null]).astype(np.int64)
    alt = {}
    if alt_goals:
        if goal is None:
            raise InputError("alternative end states need a goal state (a control label)")
        alt = {
            "alt_states": np.array([str(k) for k in alt_goals]),
            "alt_goals": np.stack([np.asarray(v, dtype=np.float64) for v in alt_goals.values()]),
        }
    return PerturbPlan(
        tokens=tokens,
        roles=np.array(["target"] * len(targets) + ["null"] * len(null)),
        bins=np.array([bin_of.get(int(t), -1) for t in tokens], dtype=np.int64),
        goal=np.zeros(0, dtype=np.float64) if goal is None else goal,
        **alt,
    )


def check_alt_states(
    labels: Sequence[str] | np.ndarray,
    alt_states: Sequence[str],
    *,
    column: str,
    case: str,
    control: str | None,
    source: str | Path | None = None,
) -> None:
    """Refuse alternative end states that are not other conditions of the data.

    Parameters
    ----------
    labels
        Condition of each cell.
    alt_states
        Labels of the alternative end states (Geneformer's ``alt_states``).
    column
        The condition column, named in errors.
    case, control
        The perturbed cells' label and the goal state's (None: no goal state).
    source
        File of the labels, named in errors.

    Raises
    ------
    InputError
        A state is not a label of ``column``, repeats, is the case or control label, or
        there is no goal state.
    """
    if not alt_states:
        return
    if control is None:
        raise InputError("alt_states need a goal state (a control label)", source)
    present = sorted(set(np.asarray(labels).astype(str).tolist()))
    seen: set[str] = set()
    for state in alt_states:
        if state in (case, control):
            raise InputError(
                f"alt_states: {state!r} is the {'case' if state == case else 'control'} label, "
                "not an alternative end state",
                source,
            )
        if state not in present:
            raise InputError(
                f"alt_states: no cell labelled {state!r} in {column!r} (its labels: "
                f"{', '.join(present)})",
                source,
            )
        if state in seen:
            raise InputError(f"alt_states: {state!r} is listed twice", source)
        seen.add(state)


def expressed_tokens(
    case: TokenizedCells, *, min_cells: int, label: str = "case"
) -> tuple[np.ndarray, np.ndarray]:
    """Case cells holding each token id, and the tokens held by ``min_cells`` or more.

    Raises
    ------
    InputError
        No token is held by ``min_cells`` case cells.
    """
    presence = token_presence(case)
    expressed = np.flatnonzero(presence >= min_cells)
    if len(expressed) == 0:
        raise InputError(f"no gene is expressed in {min_cells} or more {label} cells")
    return presence, expressed

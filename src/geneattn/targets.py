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
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from geneattn.cells import token_presence
from geneattn.errors import InputError
from geneattn.perturb import PerturbPlan, choose_null_tokens

if TYPE_CHECKING:
    import pandas as pd

    from geneattn.tokenize import TokenizedCells

__all__ = [
    "GenesFrom",
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
        table = pd.read_csv(path, sep="\t")
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
    hubs_source: str | Path | None = None,
    differential_source: str | Path | None = None,
) -> np.ndarray:
    """Tokens of the genes to perturb, in a fixed order.

    Parameters
    ----------
    genes_from
        ``"hubs"``: the ``hubs_per_module`` top hubs (by ``hub_rank``) of each disease
        module, expressed in ``min_cells`` or more case cells; ``"list"``: ``genes``, those
        expressed in ``min_cells`` case cells; ``"expressed"``: the genes expressed in most
        case cells (ties by token id).
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
        The module table (``gene_id``, ``module``, ``hub_rank``; ``genes_from="hubs"``).
    differential
        The differential table, which decides the disease modules (None: every module).
    hubs_per_module, disease_fdr, max_genes, min_cells
        As in the workflow's ``perturb`` config.
    hubs_source, differential_source
        Files of ``hubs`` and ``differential``, named in errors.

    Returns
    -------
    np.ndarray
        int64 tokens, at most ``max_genes``.

    Raises
    ------
    InputError
        ``genes_from="list"`` without genes or with a gene that has no token;
        ``genes_from="hubs"`` without a module table.
    """
    token_of = {g: t for t, g in enumerate(np.asarray(vocabulary).astype(str))}
    if genes_from == "expressed":
        order = sorted(expressed.tolist(), key=lambda t: (-presence[t], t))
        return np.array(order[:max_genes], dtype=np.int64)
    if genes_from == "list":
        if not genes:
            raise InputError("genes_from 'list' needs genes")
        chosen, unknown = [], []
        for g in genes:
            ens = g.split(".")[0] if g.startswith("ENS") else name_map.get(g, "")
            t = token_of.get(ens)
            (unknown if t is None else chosen).append(g if t is None else t)
        if unknown:
            raise InputError(f"genes without a token in the vocabulary: {', '.join(unknown)}")
        kept = [t for t in dict.fromkeys(chosen) if presence[t] >= min_cells]
        if len(kept) < len(set(chosen)):
            log.warning(
                "%d listed genes are expressed in fewer than %d case cells; skipped",
                len(set(chosen)) - len(kept),
                min_cells,
            )
        return np.array(kept[:max_genes], dtype=np.int64)
    if genes_from != "hubs":
        raise InputError(f"genes_from must be hubs, list or expressed, got {genes_from!r}")
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
    chosen = []
    for _, group in table.groupby("module", sort=True):
        found = [token_of.get(str(g)) for g in group["gene_id"]]
        found = [t for t in found if t is not None and presence[t] >= min_cells]
        chosen.extend(found[:hubs_per_module])
    return np.array(list(dict.fromkeys(chosen))[:max_genes], dtype=np.int64)


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
    return PerturbPlan(
        tokens=tokens,
        roles=np.array(["target"] * len(targets) + ["null"] * len(null)),
        bins=np.array([bin_of.get(int(t), -1) for t in tokens], dtype=np.int64),
        goal=np.zeros(0, dtype=np.float64) if goal is None else goal,
    )


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

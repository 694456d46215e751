"""In-silico perturbation with Geneformer's own definitions, for any model with token states.

``perturb.definition: geneformer`` (the default for checkpoints): each listed gene is
perturbed in each cell as Geneformer's ``InSilicoPerturber(genes_to_perturb=[gene])`` does
(:func:`geneattn.geneformer_shifts.group_edit`: ``delete`` skips cells without the gene;
``overexpress`` moves or inserts it first, truncating as Geneformer does), the model encodes
the original and the perturbed input ids (:meth:`AttentionModel.token_states`), and
:mod:`geneattn.geneformer_shifts` gives:

- ``cos_sim``: Geneformer's ``cos_sims`` (mean over the unperturbed genes of the cosine of
  each gene's state in the perturbed vs the original run; ``<cls>`` cosine with
  ``pooling: cls``); the table's ``cosine_shift`` is ``1 - cos_sim``;
- ``goal_shift`` and ``shift_to_{state}``: ``cos(mean(p), s) - cos(mean(o), s)``, every
  token of each run pooled (with ``<cls>``/``<eos>``: the gene tokens, or the ``<cls>``
  state with ``pooling: cls``);
- gene-level shifts (Geneformer's ``cell_and_gene``): per perturbed gene and affected gene,
  the cosine's sum, sum of squares and count over cells (:class:`GeneShiftSums`, memory
  bounded by the number of perturbed genes times the universe of affected genes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from geneattn import geneformer_shifts as gs
from geneattn.errors import InputError

if TYPE_CHECKING:
    from geneattn.models.protocol import AttentionModel
    from geneattn.tokenize import TokenizedCells

__all__ = [
    "GeneShiftSums",
    "gene_token",
    "geneformer_perturbation_shifts",
    "geneformer_shift_table",
    "group_table",
    "load_gene_shifts",
]

#: Tokens per ``token_states`` call (bounds the memory of one call's states).
TOKENS_PER_CALL = 1 << 18


@dataclasses.dataclass
class GeneShiftSums:
    """Running sums of gene-level cosines: perturbed gene x affected gene (our token ids).

    Attributes
    ----------
    perturbed
        int64 tokens perturbed (rows).
    universe
        int64 affected tokens counted (columns); others are ignored.
    total, total_sq
        float64 ``(rows, columns)`` sums of the cosines and of their squares.
    count
        int64 ``(rows, columns)`` number of cells.
    """

    perturbed: np.ndarray
    universe: np.ndarray
    total: np.ndarray
    total_sq: np.ndarray
    count: np.ndarray

    @classmethod
    def empty(cls, perturbed: Sequence[int], universe: Sequence[int]) -> GeneShiftSums:
        """Zero sums for these perturbed and affected tokens."""
        p = np.asarray(perturbed, dtype=np.int64)
        u = np.unique(np.asarray(universe, dtype=np.int64))
        shape = (len(p), len(u))
        return cls(p, u, np.zeros(shape), np.zeros(shape), np.zeros(shape, dtype=np.int64))

    def add(self, row: int, affected: np.ndarray, values: np.ndarray) -> None:
        """Add one cell's cosines of the genes ``affected`` under perturbed row ``row``."""
        col = np.searchsorted(self.universe, affected)
        col = np.minimum(col, len(self.universe) - 1) if len(self.universe) else col
        hit = (affected >= 0) & (len(self.universe) > 0)
        if len(self.universe):
            hit &= self.universe[col] == affected
        np.add.at(self.total[row], col[hit], values[hit])
        np.add.at(self.total_sq[row], col[hit], values[hit] ** 2)
        np.add.at(self.count[row], col[hit], 1)

    def merge(self, other: GeneShiftSums) -> None:
        """Add another shard's sums (same perturbed and universe tokens)."""
        if not (
            np.array_equal(self.perturbed, other.perturbed)
            and np.array_equal(self.universe, other.universe)
        ):
            raise InputError("gene shift sums of different genes cannot be merged")
        self.total += other.total
        self.total_sq += other.total_sq
        self.count += other.count

    def save(self, path: str | Path) -> None:
        """Write the sums (``.npz``, atomically; only the pairs seen, as coordinates)."""
        from geneattn.io.atomic import atomic_path

        r, c = np.nonzero(self.count)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(
                fh,
                perturbed=self.perturbed,
                universe=self.universe,
                row=r.astype(np.int64),
                col=c.astype(np.int64),
                total=self.total[r, c],
                total_sq=self.total_sq[r, c],
                count=self.count[r, c],
            )

    def table(self, vocabulary: np.ndarray) -> pd.DataFrame:
        """Geneformer's ``aggregate_gene_shifts`` per pair seen: mean, population std, n.

        Columns ``perturbed``, ``affected`` (gene ids), ``cosine_sim_mean``,
        ``cosine_sim_stdev``, ``n_detections``; sorted by perturbed gene, then by mean
        (smallest similarity, i.e. largest effect, first), as Geneformer sorts.
        """
        r, c = np.nonzero(self.count)
        n = self.count[r, c]
        mean = self.total[r, c] / n
        var = np.maximum(self.total_sq[r, c] / n - mean**2, 0.0)
        vocab = np.asarray(vocabulary).astype(str)
        table = pd.DataFrame(
            {
                "perturbed": vocab[self.perturbed[r]],
                "affected": vocab[self.universe[c]],
                "cosine_sim_mean": mean,
                "cosine_sim_stdev": np.sqrt(var),
                "n_detections": n,
            }
        )
        return table.sort_values(
            ["perturbed", "cosine_sim_mean", "affected"], kind="mergesort"
        ).reset_index(drop=True)


def load_gene_shifts(path: str | Path) -> GeneShiftSums:
    """Read sums written by :meth:`GeneShiftSums.save`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            sums = GeneShiftSums.empty(z["perturbed"], z["universe"])
            r, c = z["row"], z["col"]
            sums.total[r, c] = z["total"]
            sums.total_sq[r, c] = z["total_sq"]
            sums.count[r, c] = z["count"]
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except (KeyError, ValueError, IndexError, OSError) as err:
        raise InputError(f"not a gene shift sums file ({err})", path) from None
    return sums


def _pooled(states: np.ndarray, special: bool) -> np.ndarray:
    """The rows a goal shift pools: all, or the gene tokens between ``<cls>`` and ``<eos>``."""
    return states[1:-1] if special else states


def geneformer_perturbation_shifts(
    model: AttentionModel,
    cells: TokenizedCells,
    tokens: Sequence[int],
    mode: str,
    *,
    states: Mapping[str, np.ndarray] | None = None,
    goal: str | None = None,
    gene_sums: GeneShiftSums | None = None,
    anchor: int | None = None,
    groups: Sequence[Sequence[int]] | None = None,
    n_threads: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Geneformer's shifts of each listed gene perturbed in each cell it applies to.

    Parameters
    ----------
    model
        Any model with :meth:`token_inputs` and :meth:`token_states`.
    cells
        The cells perturbed.
    tokens
        Our token ids of the genes, each perturbed on its own (as
        ``genes_to_perturb=[gene]``).
    mode
        ``delete`` or ``overexpress``.
    states
        State embeddings (Geneformer's ``state_embs_dict``), each ``(d_model,)``; a column
        ``shift_to_{state}`` per state.
    goal
        The key of ``states`` copied into ``goal_shift`` (None: NaN).
    gene_sums
        When given, the gene-level cosines are added into it (its ``perturbed`` tokens are
        the rows; perturbations of other tokens are not added).
    anchor
        Our token of an anchor gene (Geneformer's ``anchor_gene`` with ``combos=1``): each
        of ``tokens`` other than it is perturbed together with it (rows are labelled by the
        partner; cells without the anchor are skipped for ``delete``).
    groups
        Instead of single genes, these groups of our tokens are each perturbed together
        (Geneformer's ``genes_to_perturb=[...]``); ``token`` then holds the group's index
        and ``tokens`` is ignored.
    n_threads
        Rayon threads.
    progress
        Called with ``(done, total)`` cells.

    Returns
    -------
    pandas.DataFrame
        ``token``, ``cell`` (index in ``cells``), ``cos_sim``, ``cosine_shift``
        (``1 - cos_sim``), ``goal_shift`` and ``shift_to_{state}`` per state.
    """
    if mode not in gs.EDIT_MODES:
        raise InputError(
            f"perturb.definition geneformer covers delete and overexpress, not {mode!r} "
            "(use definition geneattn for rank shifts)"
        )
    states = {str(k): np.asarray(v, dtype=np.float64) for k, v in (states or {}).items()}
    if goal is not None and goal not in states:
        raise InputError(f"goal state {goal!r} is not among the states {sorted(states)}")
    inputs = model.token_inputs(cells)
    units = _units(inputs.model_id, tokens, anchor, groups)
    size = max(int(inputs.ids.max(initial=0)), int(inputs.model_id.max(initial=0))) + 1
    to_ours = np.full(size, -1, dtype=np.int64)
    known = inputs.model_id >= 0
    to_ours[inputs.model_id[known]] = np.flatnonzero(known)
    row_of = {}
    if gene_sums is not None and groups is None:  # gene-level sums of single genes or pairs
        row_of = {int(t): i for i, t in enumerate(gene_sums.perturbed)}
    max_len = inputs.max_len if inputs.max_len is not None else np.iinfo(np.int64).max
    rows: list[dict] = []
    for c in range(len(inputs.offsets) - 1):
        seq = inputs.ids[inputs.offsets[c] : inputs.offsets[c + 1]].astype(np.int64)
        edits = []
        for label, group in units:
            e = gs.group_edit(seq, group, mode, max_len=int(max_len), special=inputs.special)
            if e is not None:
                edits.append((label, group, e))
        if edits:
            rows += _cell_shifts(
                model, c, edits, states, goal, inputs, (to_ours, gene_sums, row_of), n_threads
            )
        if progress is not None:
            progress(c + 1, len(inputs.offsets) - 1)
    columns = ["token", "cell", "cos_sim", "cosine_shift", "goal_shift"]
    columns += [f"shift_to_{k}" for k in states]
    return pd.DataFrame(rows, columns=columns).astype({"token": np.int64, "cell": np.int64})


def _units(
    model_id: np.ndarray,
    tokens: Sequence[int],
    anchor: int | None,
    groups: Sequence[Sequence[int]] | None,
) -> list[tuple[int, list[int]]]:
    """(label, model ids perturbed together) of each perturbation unit the model knows."""

    def ids(group: Sequence[int]) -> list[int] | None:
        g = np.asarray(list(group), dtype=np.int64)
        if g.size == 0:
            raise InputError("a perturbation group needs at least one gene")
        if g.min() < 0 or g.max() >= len(model_id):
            raise InputError("a token to perturb is outside the cells' vocabulary")
        m = model_id[g]
        return None if (m < 0).any() else [int(x) for x in m]

    if groups is not None:
        found = [(i, ids(g)) for i, g in enumerate(groups)]
    elif anchor is not None:
        found = [(int(t), ids([anchor, t])) for t in tokens if int(t) != int(anchor)]
    else:
        found = [(int(t), ids([t])) for t in tokens]
    return [(label, group) for label, group in found if group is not None]


def _encode(model: AttentionModel, seqs: list[np.ndarray], n_threads: int) -> list[np.ndarray]:
    """Per-token states of each sequence, in calls of at most TOKENS_PER_CALL tokens."""
    out: list[np.ndarray] = []
    start = 0
    while start < len(seqs):
        stop, total = start, 0
        while stop < len(seqs) and (stop == start or total + len(seqs[stop]) <= TOKENS_PER_CALL):
            total += len(seqs[stop])
            stop += 1
        batch = seqs[start:stop]
        offsets = np.concatenate([[0], np.cumsum([len(s) for s in batch])]).astype(np.int64)
        ids = np.concatenate(batch).astype(np.int32)
        states = np.asarray(model.token_states(ids, offsets, n_threads=n_threads))
        out += [states[offsets[i] : offsets[i + 1]] for i in range(len(batch))]
        start = stop
    return out


def _cell_shifts(model, c, edits, states, goal, inputs, gene_level, n_threads) -> list[dict]:
    """The shifts of one cell's edits: its original run(s) once, then the perturbed runs in
    calls of at most TOKENS_PER_CALL tokens, each call's states dropped after use (memory
    does not grow with the number of genes perturbed)."""
    to_ours, gene_sums, row_of = gene_level
    originals = {e.original.tobytes(): e.original for _, _, e in edits}
    by_original = dict(
        zip(originals, _encode(model, list(originals.values()), n_threads), strict=True)
    )
    rows = []
    start = 0
    while start < len(edits):
        stop, total = start, 0
        while stop < len(edits) and (
            stop == start or total + len(edits[stop][2].perturbed) <= TOKENS_PER_CALL
        ):
            total += len(edits[stop][2].perturbed)
            stop += 1
        chunk = edits[start:stop]
        encoded = _encode(model, [e.perturbed for _, _, e in chunk], n_threads)
        for (tok, group, edit), p in zip(chunk, encoded, strict=True):
            o = by_original[edit.original.tobytes()]
            rows.append(_shift_row(c, tok, o, p, edit, states, goal, inputs))
            if gene_sums is not None and tok in row_of:
                values = gs.gene_cosines(o, p, edit)
                labels = gs.affected_genes(edit, len(values), group=group)
                ok = (labels >= 0) & (labels < len(to_ours))
                affected = np.full(len(labels), -1, dtype=np.int64)
                affected[ok] = to_ours[labels[ok]]
                gene_sums.add(row_of[tok], affected, values)
        start = stop
    return rows


def _shift_row(c, tok, o, p, edit, states, goal, inputs) -> dict:
    """One perturbation's row: Geneformer's cos_sims and shifts toward each state."""
    cos = gs.cell_cos_sim(o, p, edit, cls=inputs.cls)
    shifts = gs.goal_shifts(
        o if inputs.cls else _pooled(o, inputs.special),
        p if inputs.cls else _pooled(p, inputs.special),
        states,
        cls=inputs.cls,
    )
    row = {
        "token": tok,
        "cell": c,
        "cos_sim": cos,
        "cosine_shift": 1.0 - cos,
        "goal_shift": shifts[goal] if goal is not None else float("nan"),
    }
    row.update({f"shift_to_{k}": v for k, v in shifts.items()})
    return row


def gene_token(gene: str, vocabulary: np.ndarray, name_map: Mapping[str, str] | None = None) -> int:
    """Our token id of a gene given by Ensembl ID (or by symbol through ``name_map``).

    Raises
    ------
    InputError
        The gene is not in the vocabulary.
    """
    vocab = np.asarray(vocabulary).astype(str)
    gene = gene.strip()
    for candidate in (gene, (name_map or {}).get(gene, "")):
        hit = np.flatnonzero(vocab == candidate)
        if candidate and hit.size:
            return int(hit[0])
    raise InputError(f"gene {gene!r} is not in the token vocabulary")


def geneformer_shift_table(
    table: pd.DataFrame,
    cells: TokenizedCells,
    mode: str,
    *,
    anchor: int | None = None,
    groups: Sequence[Sequence[int]] = (),
    group_shifts: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """A shard table (:func:`geneattn.perturb.shift_table`) with Geneformer's extras.

    Parameters
    ----------
    table
        The shard's table of single-gene (or anchor-pair) perturbations.
    cells
        The shard's cells.
    mode
        The perturbation mode.
    anchor
        The anchor's token: every row gets ``anchor`` = its gene ID ("" without one).
    groups, group_shifts
        Groups perturbed together and their :func:`geneformer_perturbation_shifts`
        (``token`` = group index): one planned row per group and one row per (group, cell),
        role ``group``, gene ID the members' IDs joined by ``+``.

    Returns
    -------
    pandas.DataFrame
        The shard table with an ``anchor`` column and the group rows.
    """
    vocabulary = np.asarray(cells.vocabulary).astype(str)
    table = table.assign(anchor="" if anchor is None else vocabulary[anchor])
    if not groups:
        return table
    names = ["+".join(vocabulary[list(g)]) for g in groups]
    planned = pd.DataFrame(
        {"gene_id": names, "role": "group", "bin": -1, "cell": "", "mode": mode}
    ).assign(cosine_shift=np.nan, goal_shift=np.nan, anchor="")
    parts = [table, planned]
    if group_shifts is not None and len(group_shifts):
        parts.append(
            pd.DataFrame(
                {
                    "gene_id": [names[i] for i in group_shifts["token"].tolist()],
                    "role": "group",
                    "bin": -1,
                    "cell": cells.cell_ids.astype(str)[group_shifts["cell"].to_numpy()],
                    "mode": mode,
                    "cosine_shift": group_shifts["cosine_shift"].to_numpy(),
                    "goal_shift": group_shifts["goal_shift"].to_numpy(),
                    "anchor": "",
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def group_table(table: pd.DataFrame, *, name_map: Mapping[str, str]) -> pd.DataFrame:
    """Per group perturbed together (rows of role ``group``): its cells and mean shifts.

    Returns
    -------
    pandas.DataFrame
        ``group`` (symbols joined by ``+``), ``ensembl_ids``, ``n_cells``,
        ``mean_cosine_shift``, ``mean_goal_shift`` (Geneformer's ``aggregate_data``).
    """
    symbol_of: dict[str, str] = {}
    for symbol, ens in sorted(name_map.items()):
        symbol_of.setdefault(ens, symbol)
    grouped = table[table["role"] == "group"]
    rows = []
    for name in sorted(set(grouped["gene_id"])):
        g = grouped[(grouped["gene_id"] == name) & (grouped["cell"] != "")]
        rows.append(
            {
                "group": "+".join(symbol_of.get(x, x) for x in name.split("+")),
                "ensembl_ids": name,
                "n_cells": len(g),
                "mean_cosine_shift": g["cosine_shift"].mean() if len(g) else float("nan"),
                "mean_goal_shift": g["goal_shift"].mean() if len(g) else float("nan"),
            }
        )
    columns = ["group", "ensembl_ids", "n_cells", "mean_cosine_shift", "mean_goal_shift"]
    return pd.DataFrame(rows, columns=columns)

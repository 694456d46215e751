"""Reading and writing.

As ``ga.io``: the readers and writers of every file the workflow reads or writes, by
format (loaded on first use):

================================= =============================================================
:func:`read_counts`               raw counts (.h5ad, 10x .h5 / mtx, .loom, .csv/.tsv), checked
:func:`read_tokens`,              ``tokens.npz`` (:class:`~geneattn.tokenize.TokenizedCells`)
:func:`write_tokens`
:func:`read_model`,               ``model.npz`` / ``model.json`` (an attention model)
:func:`write_model`
:func:`read_universe`,            ``universe.tsv``
:func:`write_universe`
:func:`read_attention_sums`,      attention sums of one condition (``attention/*.npz``)
:func:`write_attention_sums`
:func:`read_network`,             a gene network (``network/*.npz``), its GraphML and edge
:func:`write_network`,            list
:func:`write_graphml`,
:func:`write_edge_list`
:func:`read_gene_sets`            ``.gmt`` gene sets
:func:`read_plan`, :func:`write_plan` the perturbation plan (``perturbation/plan.npz``)
:func:`write_table`               a TSV table with the workflow's number format (atomically)
================================= =============================================================

Beneath them: :mod:`~geneattn.io.readers` (raw counts in every supported format),
:mod:`~geneattn.io.atomic` (atomic writes) and :mod:`~geneattn.io.npz` (checked ``.npz``).
"""

from __future__ import annotations

import importlib

#: name -> (module, attribute) of the readers and writers above.
_LAZY = {
    "read_counts": ("geneattn.io.readers", "read_counts"),
    "read_tokens": ("geneattn.tokenize", "load_tokens"),
    "write_tokens": ("geneattn.tokenize", "save_tokens"),
    "read_model": ("geneattn.models", "load_model"),
    "write_model": ("geneattn.models.study", "save_study_model"),
    "read_universe": ("geneattn.universe", "load_universe"),
    "write_universe": ("geneattn.universe", "save_universe"),
    "read_attention_sums": ("geneattn.attention_sums", "load_attention_sums"),
    "write_attention_sums": ("geneattn.attention_sums", "save_attention_sums"),
    "read_network": ("geneattn.network", "load_network"),
    "write_network": ("geneattn.network", "save_network"),
    "write_graphml": ("geneattn.network", "save_graphml"),
    "read_gene_sets": ("geneattn.enrichment", "load_gene_sets"),
    "read_plan": ("geneattn.perturb", "load_plan"),
    "write_plan": ("geneattn.perturb", "save_plan"),
    "write_edge_list": ("geneattn.network", "save_edge_list"),
    "write_table": ("geneattn.network", "save_table"),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> object:
    if name in _LAZY:
        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'geneattn.io' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])

"""What the Python API uses when an option is left at None: the pinned reference files
(fetched into :func:`geneattn.datasets.data_dir`) and every core."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from geneattn.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "GENE_SETS",
    "gene_medians",
    "gene_sets",
    "name_map",
    "ppi",
    "threads",
    "token_dictionary",
]

#: The gene-set files of the workflow's default ``modules.gene_sets``.
GENE_SETS = ("hallmark.gmt", "canonical_pathways.gmt", "human_t_cell_markers.gmt")


def threads(n_threads: int | None) -> int:
    """``n_threads``, or every core when None."""
    if n_threads is None:
        return os.cpu_count() or 1
    if n_threads < 1:
        raise InputError(f"n_threads must be >= 1, got {n_threads}")
    return int(n_threads)


def _read(value, name: str, load):
    """``value`` when it is a mapping, else the file it names (None: the pinned resource
    ``name``) read with ``load``."""
    from geneattn.datasets import resource

    if isinstance(value, Mapping):
        return value
    return load(resource(name) if value is None else value)


def token_dictionary(value: str | Path | Mapping[str, int] | None) -> Mapping[str, int]:
    """A Geneformer token dictionary: given, read from a file, or the pinned V1 one."""
    from geneattn.resources.load import load_token_dictionary

    return _read(value, "geneformer_v1/token_dictionary.tsv", load_token_dictionary)


def gene_medians(value: str | Path | Mapping[str, float] | None) -> Mapping[str, float]:
    """Geneformer gene medians: given, read from a file, or the pinned V1 ones."""
    from geneattn.resources.load import load_gene_medians

    return _read(value, "geneformer_v1/gene_median_dictionary.tsv", load_gene_medians)


def name_map(value: str | Path | Mapping[str, str] | None) -> Mapping[str, str]:
    """A symbol -> Ensembl map: given, read from a file, or the pinned one."""
    from geneattn.resources.load import load_gene_name_map

    return _read(value, "geneformer_v1/gene_name_id.tsv", load_gene_name_map)


def ppi(value: str | Path | pd.DataFrame | None) -> pd.DataFrame:
    """A PPI edge list: given, read from a file, or the pinned human PPI."""
    import pandas as pd

    from geneattn.datasets import resource
    from geneattn.resources.load import load_ppi

    if isinstance(value, pd.DataFrame):
        return value
    return load_ppi(resource("ppi/h_sapiens.tsv") if value is None else value)


def gene_sets(values: Sequence[str | Path]) -> dict:
    """Gene sets of ``.gmt`` files: paths, or names of the pinned files under ``genesets/``
    (e.g. ``"hallmark.gmt"``, as the workflow's ``modules.gene_sets``)."""
    from geneattn.datasets import resource
    from geneattn.enrichment import load_gene_sets
    from geneattn.resources.pinned import RESOURCES

    pinned = {Path(r.path).name for r in RESOURCES if r.path.startswith("genesets/")}
    paths = [
        resource(f"genesets/{v}") if isinstance(v, str) and v in pinned else Path(v) for v in values
    ]
    return load_gene_sets(paths)

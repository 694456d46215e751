"""geneattn: gene modules and perturbation targets from single-cell data with attention.

The public contract (seed 000): :func:`rank_value_encode`, :class:`ScKGBERTInterface` and
:class:`GeneformerInterface`. Pipeline stages live in their own modules and are driven by the
``geneattn`` command line (:mod:`geneattn.cli`) and, over an AnnData in scanpy's idiom, by
``import geneattn as ga``: :mod:`ga.pp <geneattn.pp>` (qc, tokenize), :mod:`ga.tl
<geneattn.tl>` (model, embed, attention, network, modules, differential, evaluate,
perturb), :mod:`ga.pl <geneattn.pl>` (the report's figures), :mod:`ga.io <geneattn.io>`
(readers and writers) and :mod:`ga.datasets <geneattn.datasets>` (the demo study). Every
name is loaded on first use, so ``geneattn --help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from geneattn.encoding import rank_value_encode

if TYPE_CHECKING:
    from geneattn.models.geneformer import GeneformerInterface
    from geneattn.models.sckgbert import ScKGBERTInterface

__version__ = "0.1.0"

__all__ = [
    "GeneformerInterface",
    "ScKGBERTInterface",
    "__version__",
    "datasets",
    "io",
    "pl",
    "pp",
    "rank_value_encode",
    "tl",
]

# The interfaces pull in scipy; load them on first use so `geneattn --help` stays fast.
_LAZY = {
    "ScKGBERTInterface": "geneattn.models.sckgbert",
    "GeneformerInterface": "geneattn.models.geneformer",
}
#: Subpackages of the Python API, imported on first use.
_SUBMODULES = ("datasets", "io", "pl", "pp", "tl")


def __getattr__(name: str) -> object:
    import importlib

    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"geneattn.{name}")
    else:
        raise AttributeError(f"module 'geneattn' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

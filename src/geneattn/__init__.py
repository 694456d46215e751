"""geneattn: gene modules and perturbation targets from single-cell data with attention.

The public contract (seed 000): :func:`rank_value_encode`, :class:`ScKGBERTInterface` and
:class:`GeneformerInterface`. Pipeline stages live in their own modules and are driven by the
``geneattn`` command line (:mod:`geneattn.cli`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from geneattn.encoding import rank_value_encode

if TYPE_CHECKING:
    from geneattn.models.geneformer import GeneformerInterface
    from geneattn.models.sckgbert import ScKGBERTInterface

__version__ = "0.1.0"

__all__ = ["GeneformerInterface", "ScKGBERTInterface", "__version__", "rank_value_encode"]

# The interfaces pull in scipy; load them on first use so `geneattn --help` stays fast.
_LAZY = {
    "ScKGBERTInterface": "geneattn.models.sckgbert",
    "GeneformerInterface": "geneattn.models.geneformer",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'geneattn' has no attribute {name!r}")

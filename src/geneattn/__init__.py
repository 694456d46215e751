"""geneattn: gene modules and perturbation targets from single-cell data with attention.

The public contract (seed 000): :func:`rank_value_encode`, :class:`ScKGBERTInterface` and
:class:`GeneformerInterface`. Pipeline stages live in their own modules and are driven by the
``geneattn`` command line (:mod:`geneattn.cli`).
"""

from __future__ import annotations

from geneattn.encoding import rank_value_encode

__version__ = "0.1.0"

__all__ = ["__version__", "rank_value_encode"]

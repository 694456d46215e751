"""Tools over an AnnData, in scanpy's idiom: ``ga.tl.model``, ``ga.tl.embed``,
``ga.tl.attention``, ``ga.tl.network``, ``ga.tl.modules``, ``ga.tl.differential``,
``ga.tl.evaluate``, ``ga.tl.module_analysis`` and ``ga.tl.perturb``, in the order of the
workflow.

Each takes the AnnData :func:`geneattn.pp.tokenize` made, writes its results into it (or a
copy with ``copy=True``, which it returns) with a ``params`` record in ``uns``, has
keyword-only options with the workflow's defaults (``workflow/schemas/config.schema.yaml``),
and calls the library functions the workflow's rules call. What is stored where is listed
in :mod:`geneattn.store`.
"""

from __future__ import annotations

from geneattn.tl._attention import attention, network
from geneattn.tl._model import embed, model
from geneattn.tl._modules import differential, evaluate, module_analysis, modules
from geneattn.tl._perturb import perturb

__all__ = [
    "attention",
    "differential",
    "embed",
    "evaluate",
    "model",
    "module_analysis",
    "modules",
    "network",
    "perturb",
]

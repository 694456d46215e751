"""Where the Python API (:mod:`geneattn.pp`, :mod:`geneattn.tl`) keeps its results in an
AnnData, and how they are turned back into the library's objects.

Everything stored is plain arrays, sparse matrices, data frames, strings and numbers, so
``adata.write_h5ad`` keeps it:

============================== ==============================================================
``obsm["geneattn_tokens"]``    the rank-value tokens (:func:`put_tokens`): cells x vocabulary
                               CSR int32, entry ``[c, t]`` = rank of token ``t`` in cell ``c``
                               (1 = first); follows the cells when the AnnData is subset
``uns["tokenize"]``            ``vocabulary`` (Ensembl ID of each token id), ``summary``,
                               ``params``
``uns["attention_model"]``     the model (:func:`model_to_uns`): a study model's weights, or a
                               checkpoint's manifest
``obsm["X_geneattn"]``         cell embeddings (:func:`geneattn.tl.embed`)
``uns["attention"]``           the universe and the attention sums per condition
``uns["network"]``             the gene network per condition
``uns["modules"]``             module, enrichment (and gene-set test) tables; ``var["module"]``
``uns["differential"]``        the cell-label test; ``obsm["module_attention"]``
``uns["module_analysis"]``     kME, eigengene, trait and preservation tables;
                               ``obsm["X_module_eigengenes"]``, ``var["module_kme"]``
``uns["perturbation"]``        the perturbation and skipped-gene tables
============================== ==============================================================

Each ``uns`` entry has a ``params`` record of the options it was made with (options left
at None are not recorded), as scanpy's tools have.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from geneattn.errors import InputError

if TYPE_CHECKING:
    import anndata as ad

    from geneattn.attention_sums import AttentionSums
    from geneattn.models.protocol import AttentionModel
    from geneattn.network import GeneNetwork
    from geneattn.tokenize import TokenizedCells

__all__ = [
    "MODEL_KEY",
    "TOKENS_KEY",
    "conditions",
    "get_model",
    "get_tokens",
    "model_to_uns",
    "network_from_uns",
    "network_to_uns",
    "put_tokens",
    "record",
    "require",
    "sums_from_uns",
    "sums_to_uns",
]

#: ``obsm`` key of the tokens.
TOKENS_KEY = "geneattn_tokens"
#: ``uns`` key of the attention model.
MODEL_KEY = "attention_model"

#: The step that makes each ``uns`` entry, for "run it first" errors.
_MADE_BY = {
    "qc": "geneattn.pp.qc",
    "tokenize": "geneattn.pp.tokenize",
    MODEL_KEY: "geneattn.tl.model",
    "attention": "geneattn.tl.attention",
    "network": "geneattn.tl.network",
    "modules": "geneattn.tl.modules",
    "differential": "geneattn.tl.differential",
    "module_analysis": "geneattn.tl.module_analysis",
}


def require(adata: ad.AnnData, key: str) -> dict:
    """``adata.uns[key]``, or an :class:`InputError` naming the step that makes it."""
    if key not in adata.uns:
        raise InputError(f"adata.uns has no {key!r}: run {_MADE_BY.get(key, key)} first")
    return adata.uns[key]


def record(adata: ad.AnnData, key: str, params: Mapping[str, Any], **results: Any) -> None:
    """Store ``uns[key] = {"params": params, **results}``; options that are None are left
    out of ``params`` and tuples become lists (h5ad cannot hold None)."""
    clean = {k: list(v) if isinstance(v, tuple) else v for k, v in params.items() if v is not None}
    adata.uns[key] = {"params": clean, **results}


# -- tokens ---------------------------------------------------------------------------------


def put_tokens(adata: ad.AnnData, cells: TokenizedCells) -> None:
    """Store the tokens of every cell of ``adata`` in ``obsm["geneattn_tokens"]``.

    Raises
    ------
    ValueError
        The cells are not those of ``adata``, in its order.
    """
    if not np.array_equal(np.asarray(cells.cell_ids).astype(str), adata.obs_names.astype(str)):
        raise ValueError("the tokenized cells must be the cells of adata, in its order")
    lengths = np.diff(cells.offsets)
    ranks = np.arange(len(cells.tokens)) - np.repeat(cells.offsets[:-1], lengths) + 1
    matrix = sp.csr_matrix(
        (ranks.astype(np.int32), cells.tokens.astype(np.int32), cells.offsets.copy()),
        shape=(cells.n_cells, len(cells.vocabulary)),
    )
    adata.obsm[TOKENS_KEY] = matrix
    adata.obs["n_tokens"] = lengths.astype(np.int64)


def get_tokens(adata: ad.AnnData) -> TokenizedCells:
    """The tokens of the cells of ``adata`` (of :func:`geneattn.pp.tokenize`), in its order.

    Raises
    ------
    InputError
        ``adata`` has no tokens.
    """
    from geneattn.tokenize import TokenizedCells

    if TOKENS_KEY not in adata.obsm:
        raise InputError(f"adata.obsm has no {TOKENS_KEY!r}: run geneattn.pp.tokenize first")
    vocabulary = np.asarray(require(adata, "tokenize")["vocabulary"]).astype(str)
    matrix = sp.csr_matrix(adata.obsm[TOKENS_KEY])
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    order = np.lexsort((matrix.data, rows))
    return TokenizedCells(
        tokens=np.ascontiguousarray(matrix.indices[order], dtype=np.int32),
        offsets=matrix.indptr.astype(np.int64),
        cell_ids=adata.obs_names.to_numpy().astype(str),
        vocabulary=vocabulary,
    )


# -- the model ------------------------------------------------------------------------------


def model_to_uns(model: AttentionModel, *, manifest: dict | None = None) -> dict[str, Any]:
    """What ``uns["attention_model"]`` holds of a model: a study model's weights, or a
    checkpoint's ``manifest`` (its paths and sha256; the weights stay in their files)."""
    from geneattn.models.study import StudyModel

    if manifest is not None:
        return {"kind": "checkpoint", "manifest": json.dumps(manifest, sort_keys=True)}
    if not isinstance(model, StudyModel) or model.genohoption is not None:
        raise TypeError(
            "only a dense study model or a checkpoint (with its manifest) can be stored; "
            "give other models to the tools as model="
        )
    return {
        "kind": "study_pca",
        "model_params": json.dumps(model.params, sort_keys=True),
        "n_heads": int(model.n_heads),
        "gene_embeddings": model.gene_embeddings,
        "w_q": model.w_q,
        "w_k": model.w_k,
        "w_v": model.w_v,
        "w_o": model.w_o,
    }


def get_model(adata: ad.AnnData, model: AttentionModel | str | Path | None = None):
    """The model a tool uses: ``model`` itself, the model file it names
    (:func:`geneattn.models.load_model`), or the one :func:`geneattn.tl.model` stored."""
    from geneattn.models import load_model

    if model is None:
        stored = require(adata, MODEL_KEY)
        if str(stored["kind"]) == "checkpoint":
            from geneattn.models.checkpoint import model_from_manifest

            return model_from_manifest(
                json.loads(str(stored["manifest"])), source="adata.uns['attention_model']"
            )
        from geneattn.models.study import StudyModel

        return StudyModel(
            gene_embeddings=np.asarray(stored["gene_embeddings"], dtype=np.float64),
            w_q=np.asarray(stored["w_q"], dtype=np.float64),
            w_k=np.asarray(stored["w_k"], dtype=np.float64),
            w_v=np.asarray(stored["w_v"], dtype=np.float64),
            w_o=np.asarray(stored["w_o"], dtype=np.float64),
            n_heads=int(stored["n_heads"]),
            params=json.loads(str(stored["model_params"])),
        )
    if isinstance(model, str | Path):
        return load_model(model)
    return model


# -- conditions -----------------------------------------------------------------------------


def conditions(
    adata: ad.AnnData,
    groupby: str | None = None,
    case: str | None = None,
    control: str | None = None,
) -> tuple[str, str, str | None]:
    """The condition column, the case label and the control label (None: a
    single-condition study), by default those :func:`geneattn.pp.qc` kept.

    Raises
    ------
    InputError
        The column is missing, or no case is given and :func:`geneattn.pp.qc` did not run.
    """
    from geneattn.qc import SINGLE_COLUMN

    qc = adata.uns.get("qc", {}).get("params", {})
    kept = [str(k) for k in qc.get("keep", [])]
    if groupby is None:
        groupby = str(qc.get("condition_column", SINGLE_COLUMN))
    if case is None:
        if not kept:
            raise InputError("give case (and control), or run geneattn.pp.qc first")
        case = kept[0]
        if control is None and len(kept) > 1:
            control = kept[1]
    if groupby not in adata.obs.columns:
        raise InputError(f"no obs column {groupby!r} (columns: {', '.join(adata.obs.columns)})")
    return groupby, str(case), None if control is None else str(control)


# -- attention sums and networks ------------------------------------------------------------


def sums_to_uns(data: AttentionSums) -> dict[str, Any]:
    """An :class:`~geneattn.attention_sums.AttentionSums` as a dict of arrays."""
    return {
        "gene_ids": np.asarray(data.gene_ids).astype(str),
        "gene_symbols": np.asarray(data.gene_symbols).astype(str),
        "sums": data.sums,
        "counts": data.counts,
        "incoming": data.incoming,
        "gene_cells": data.gene_cells,
        "n_cells": int(data.n_cells),
        "condition": str(data.condition),
    }


def sums_from_uns(stored: Mapping[str, Any]) -> AttentionSums:
    """The :class:`~geneattn.attention_sums.AttentionSums` of :func:`sums_to_uns`, checked."""
    from geneattn.attention_sums import AttentionSums, check_attention_sums

    return check_attention_sums(
        AttentionSums(
            gene_ids=np.asarray(stored["gene_ids"]).astype(str),
            gene_symbols=np.asarray(stored["gene_symbols"]).astype(str),
            sums=np.asarray(stored["sums"], dtype=np.float64),
            counts=np.asarray(stored["counts"], dtype=np.int64),
            incoming=np.asarray(stored["incoming"], dtype=np.float64),
            gene_cells=np.asarray(stored["gene_cells"], dtype=np.int64),
            n_cells=int(stored["n_cells"]),
            condition=str(stored["condition"]),
        ),
        "adata.uns['attention']",
    )


def network_to_uns(network: GeneNetwork) -> dict[str, Any]:
    """A :class:`~geneattn.network.GeneNetwork` as a dict of arrays (params as JSON)."""
    prior = {} if network.prior is None else {"prior": sp.csr_matrix(network.prior)}
    return prior | {
        "gene_ids": np.asarray(network.gene_ids).astype(str),
        "gene_symbols": np.asarray(network.gene_symbols).astype(str),
        "adjacency": sp.csr_matrix(network.adjacency),
        "mean_attention": sp.csr_matrix(network.mean_attention),
        "incoming": np.asarray(network.incoming),
        "gene_cells": np.asarray(network.gene_cells),
        "n_cells": int(network.n_cells),
        "condition": str(network.condition),
        "directed": bool(network.directed),
        "params": json.dumps(network.params, sort_keys=True),
    }


def network_from_uns(stored: Mapping[str, Any]) -> GeneNetwork:
    """The :class:`~geneattn.network.GeneNetwork` of :func:`network_to_uns`."""
    from geneattn.network import GeneNetwork

    return GeneNetwork(
        gene_ids=np.asarray(stored["gene_ids"]).astype(str),
        gene_symbols=np.asarray(stored["gene_symbols"]).astype(str),
        adjacency=sp.csr_matrix(stored["adjacency"], dtype=np.float64),
        mean_attention=sp.csr_matrix(stored["mean_attention"], dtype=np.float64),
        incoming=np.asarray(stored["incoming"], dtype=np.float64),
        gene_cells=np.asarray(stored["gene_cells"], dtype=np.int64),
        n_cells=int(stored["n_cells"]),
        condition=str(stored["condition"]),
        directed=bool(stored["directed"]),
        params=json.loads(str(stored["params"])),
        prior=sp.csr_matrix(stored["prior"], dtype=np.float64) if "prior" in stored else None,
    )

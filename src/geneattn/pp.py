"""Preprocessing of an AnnData, in scanpy's idiom: ``ga.pp.qc`` and ``ga.pp.tokenize``.

Each function takes an AnnData of raw counts, changes it in place (or a copy with
``copy=True``, which it returns) and records its options in ``uns[...]["params"]``. They
call the library functions the workflow's ``qc`` and ``tokenize`` rules call, with the
workflow's defaults (``workflow/schemas/config.schema.yaml``); what is stored where is
listed in :mod:`geneattn.store`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from geneattn.errors import InputError
from geneattn.store import put_tokens, record

if TYPE_CHECKING:
    import anndata as ad

__all__ = ["qc", "tokenize"]

log = logging.getLogger(__name__)


def qc(
    adata: ad.AnnData,
    *,
    condition_column: str | None,
    keep: Sequence[str] | None,
    min_genes: int = 200,
    min_cells: int = 3,
    max_pct_mito: float = 20.0,
    max_counts: float | None = None,
    mito_prefix: str = "auto",
    allow_non_integer: bool = False,
    copy: bool = False,
) -> ad.AnnData | None:
    """Quality control with scanpy's metrics: keep the compared conditions, filter cells
    and genes (:func:`geneattn.qc.run_qc`, the ``qc`` rule).

    Parameters
    ----------
    adata
        Raw counts in ``X`` (non-negative integers), unique cell and gene names.
    condition_column
        ``obs`` column of the conditions; None for a single-condition study (every cell is
        labelled ``"all"`` in ``obs["condition"]``).
    keep
        The condition labels to keep, case first, then control (None with
        ``condition_column`` None).
    min_genes, min_cells, max_pct_mito, max_counts, mito_prefix
        The filters (config ``qc``).
    allow_non_integer
        Accept non-integer counts (config ``input.allow_non_integer``).
    copy
        Return a filtered copy instead of filtering ``adata``.

    Returns
    -------
    anndata.AnnData or None
        The copy when ``copy``; otherwise ``adata`` is changed: cells and genes filtered,
        ``X`` CSR float32, ``obs[condition_column]`` categorical with the kept labels,
        ``obs["n_counts"]`` (total counts over all genes of the input, which the tokenizer
        normalises by) and scanpy's per-cell metrics, ``var["mt"]`` and per-gene metrics,
        ``uns["qc_cells"]`` (every cell of the kept conditions with its metrics and the
        filter that removed it) and ``uns["qc"]`` (``params``, and ``summary``: the
        workflow's ``qc_summary.json`` as a JSON string).

    Raises
    ------
    InputError
        Bad counts, repeated names, an unknown column or label, or a filter leaving
        nothing.
    """
    from geneattn.io.readers import check_counts
    from geneattn.qc import run_qc

    adata = adata.copy() if copy else adata
    for axis, names in (("cell", adata.obs_names), ("gene", adata.var_names)):
        if names.has_duplicates:
            raise InputError(
                f"repeated {axis} names (e.g. {names[names.duplicated()][0]!r}); make them "
                f"unique first (adata.{'obs' if axis == 'cell' else 'var'}_names_make_unique())"
            )
    check_counts(adata, allow_non_integer=allow_non_integer)
    result, summary = run_qc(
        adata,
        condition_column=condition_column,
        keep=keep,
        min_genes=min_genes,
        min_cells=min_cells,
        max_pct_mito=max_pct_mito,
        max_counts=max_counts,
        mito_prefix=mito_prefix,
    )
    adata._inplace_subset_obs(adata.obs_names.get_indexer(result.obs_names))
    adata._inplace_subset_var(adata.var_names.get_indexer(result.var_names))
    adata.X = result.X
    adata.obs = result.obs
    adata.var = result.var
    adata.uns["qc_cells"] = result.uns["qc_cells"]
    record(
        adata,
        "qc",
        {
            "condition_column": summary["condition_column"],
            "keep": [str(k) for k in summary["keep"]],
            "min_genes": min_genes,
            "min_cells": min_cells,
            "max_pct_mito": max_pct_mito,
            "max_counts": max_counts,
            "mito_prefix": mito_prefix,
            "allow_non_integer": allow_non_integer,
        },
        summary=json.dumps(summary, sort_keys=True),
    )
    return adata if copy else None


def tokenize(
    adata: ad.AnnData,
    *,
    token_dictionary: str | Path | Mapping[str, int] | None = None,
    gene_medians: str | Path | Mapping[str, float] | None = None,
    gene_names: str | Path | Mapping[str, str] | None = None,
    gene_id: str = "symbol",
    medians: str = "geneformer_v1",
    max_len: int = 2048,
    n_threads: int | None = None,
    copy: bool = False,
) -> ad.AnnData | None:
    """Geneformer V1 rank-value tokens of every cell (:func:`geneattn.tokenize.tokenize_anndata`,
    the ``tokenize`` rule).

    The tokens are kept in ``obsm["geneattn_tokens"]``: a cells x vocabulary CSR int32
    matrix whose entry ``[c, t]`` is the rank of token ``t`` in cell ``c`` (1 for the first
    token), so they follow the cells when the AnnData is subset and are written with it to
    ``.h5ad``; :func:`geneattn.store.get_tokens` returns them as
    :class:`~geneattn.tokenize.TokenizedCells`.

    Parameters
    ----------
    adata
        QC'd raw counts (:func:`qc`): ``X`` and, for the depth, ``obs["n_counts"]``.
    token_dictionary, gene_medians, gene_names
        The Geneformer token dictionary, gene medians and symbol -> Ensembl map: a file, a
        mapping, or None for the pinned V1 files (:func:`geneattn.datasets.resource`).
    gene_id
        ``"symbol"`` or ``"ensembl"``: what the var names are (config ``input.gene_id``).
    medians
        ``"geneformer_v1"``, ``"corpus"`` or ``"none"`` (config ``tokenize.medians``).
    max_len
        Tokens per cell (config ``tokenize.max_len``).
    n_threads
        Rayon threads (None: every core); the tokens do not depend on it.
    copy
        Return a tokenized copy instead of changing ``adata``.

    Returns
    -------
    anndata.AnnData or None
        The copy when ``copy``; otherwise ``adata`` is changed: cells without any token are
        removed (as the workflow leaves them out), ``obsm["geneattn_tokens"]``,
        ``obs["n_tokens"]`` and ``uns["tokenize"]`` (``vocabulary``: the Ensembl ID of each
        token id; ``summary``: the workflow's ``tokenize_summary.json``; ``params``).
    """
    from geneattn import defaults
    from geneattn.tokenize import tokenize_anndata

    adata = adata.copy() if copy else adata
    needs_medians = medians == "geneformer_v1"
    cells, summary = tokenize_anndata(
        adata,
        token_dictionary=defaults.token_dictionary(token_dictionary),
        gene_medians=(
            defaults.gene_medians(gene_medians)
            if needs_medians or gene_medians is not None
            else None
        ),
        name_map=(
            defaults.name_map(gene_names) if gene_id == "symbol" or gene_names is not None else None
        ),
        gene_id=gene_id,
        medians=medians,
        max_len=max_len,
        n_threads=defaults.threads(n_threads),
    )
    if cells.n_cells < adata.n_obs:
        log.warning("%d cells have no token and are removed", adata.n_obs - cells.n_cells)
        adata._inplace_subset_obs(adata.obs_names.get_indexer(cells.cell_ids))
    put_tokens(adata, cells)
    record(
        adata,
        "tokenize",
        {"gene_id": gene_id, "medians": medians, "max_len": max_len},
        vocabulary=np.asarray(cells.vocabulary).astype(str),
        summary=_h5ad_safe(summary),
    )
    return adata if copy else None


def _h5ad_safe(summary: dict) -> dict:
    """``summary`` without None values (h5ad cannot hold them)."""
    return {
        k: _h5ad_safe(v) if isinstance(v, dict) else v for k, v in summary.items() if v is not None
    }

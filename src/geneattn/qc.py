"""Quality control of raw counts with scanpy, before tokenisation.

:func:`run_qc` keeps the cells of the two compared conditions, filters cells by detected
genes, mitochondrial fraction and (optionally) total counts, then genes by the number of
cells they are detected in. ``X`` keeps the raw counts: Geneformer's tokenizer does its own
normalisation, by ``obs["n_counts"]``, the total counts of each cell over *all* genes of the
input (so genes removed here still count towards a cell's depth, as in Geneformer, which
normalises before dropping genes outside its vocabulary). :func:`plot_qc` draws the
distributions behind each threshold.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from geneattn.column_sums import ColumnMoments, ColumnTotals
from geneattn.errors import InputError

if TYPE_CHECKING:
    from geneattn.io.chunks import ChunkedCounts

logger = logging.getLogger(__name__)

#: Mitochondrial gene-name prefixes tried by ``mito_prefix="auto"``: human, mouse.
MITO_PREFIXES = ("MT-", "mt-")

#: Value of the ``qc`` column of ``uns["qc_cells"]`` for a cell that passed every filter.
PASSED = "passed"

_CELL_METRICS = ["n_genes_by_counts", "total_counts", "total_counts_mt", "pct_counts_mt"]
_VAR_METRICS = ["n_cells_by_counts", "mean_counts", "pct_dropout_by_counts", "total_counts"]


#: Column and label that single-condition studies (no case and control) give every cell.
SINGLE_COLUMN = "condition"
SINGLE_LABEL = "all"


def run_qc(
    adata: ad.AnnData,
    *,
    condition_column: str | None,
    keep: Sequence[str] | None,
    min_genes: int = 200,
    min_cells: int = 3,
    max_pct_mito: float = 20.0,
    max_counts: float | None = None,
    mito_prefix: str = "auto",
    source: str | Path | None = None,
) -> tuple[ad.AnnData, dict[str, Any]]:
    """Filter cells and genes of raw counts with scanpy's QC metrics.

    Filters run in this order: condition labels, ``min_genes``, ``max_pct_mito``,
    ``max_counts`` (cells), then ``min_cells`` (genes, on the cells that are left).

    Parameters
    ----------
    adata
        Cells x genes with raw counts in ``X`` (e.g. from :func:`geneattn.io.readers.read_counts`).
        It is not modified.
    condition_column
        ``obs`` column holding the condition of each cell; None for a single-condition
        study, where every cell gets the label :data:`SINGLE_LABEL` in a column
        :data:`SINGLE_COLUMN` (replacing an input column of that name).
    keep
        The condition labels to keep, case first, then control. Cells with other labels
        are dropped. Labels are compared as strings. None with ``condition_column`` None.
    min_genes
        Minimum number of detected genes per cell.
    min_cells
        Minimum number of cells a gene is detected in.
    max_pct_mito
        Maximum percentage of a cell's counts in mitochondrial genes.
    max_counts
        Maximum total counts per cell; ``None`` for no limit.
    mito_prefix
        Prefix of mitochondrial gene names; ``"auto"`` picks ``MT-`` (human) or ``mt-``
        (mouse), whichever names more genes. With no mitochondrial gene found, a warning is
        logged and every cell has 0 % mito.
    source
        The file the counts came from, named in errors and warnings.

    Returns
    -------
    tuple[AnnData, dict]
        The filtered data and a JSON-serialisable summary. In the data, ``X`` is a CSR
        ``float32`` matrix of the raw counts; ``obs[condition_column]`` is categorical with
        the ``keep`` labels in order; ``obs["n_counts"]`` holds the total counts of each
        cell over all genes of the input (computed before any gene filter: the tokenizer
        normalises by it); ``obs`` also gets scanpy's ``n_genes_by_counts``,
        ``total_counts``, ``total_counts_mt`` and ``pct_counts_mt``, and ``var`` gets
        ``mt`` and scanpy's per-gene metrics over the cells kept. ``uns["qc_cells"]`` lists
        every cell of the kept conditions with its metrics and, in column ``qc``, the
        filter that removed it (or ``"passed"``).

    Raises
    ------
    InputError
        The condition column is missing, a ``keep`` label does not occur in it, or a
        filter leaves no cell or no gene (the error names that filter).
    """
    if condition_column is None:
        if keep:
            raise ValueError("keep needs a condition_column")
        adata, condition_column, keep = _single_condition(adata, source)
    keep = _check_keep(keep, source)
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(f"empty count matrix ({adata.n_obs} cells x {adata.n_vars} genes)", source)
    labels = _condition_labels(adata, condition_column, keep, source)
    data = _working_copy(adata)
    data.obs[condition_column] = pd.Categorical(labels, categories=list(keep))
    data.obs["n_counts"] = np.asarray(data.X.sum(axis=1, dtype=np.float64)).ravel()
    prefix, mito = _mito_genes(data.var_names, mito_prefix, source)
    data.var["mt"] = mito

    summary = _summary_head(adata, condition_column, keep, labels, source)
    cell_steps: list[dict[str, Any]] = []
    in_keep = labels.isin(keep).to_numpy()
    data = _apply_cell_filter(data, in_keep, "condition", list(keep), cell_steps, source)

    logger.info("QC metrics of %d cells x %d genes", data.n_obs, data.n_vars)
    obs_metrics, _ = _qc_metrics(data)
    for metric in _CELL_METRICS:
        data.obs[metric] = obs_metrics[metric].to_numpy()
    log = data.obs[[condition_column, *_CELL_METRICS]].copy()
    removed_by = np.full(data.n_obs, PASSED, dtype=object)
    position = np.arange(data.n_obs)
    for name, threshold, passing in _cell_filters(min_genes, max_pct_mito, max_counts):
        mask = np.asarray(passing(data), dtype=bool)
        removed_by[position[~mask]] = name
        data = _apply_cell_filter(data, mask, name, threshold, cell_steps, source)
        position = position[mask]

    logger.info("cell filters kept %d cells; gene metrics and the min_cells filter", data.n_obs)
    _, var_metrics = _qc_metrics(data)
    gene_mask = np.asarray(_min_cells_mask(data, min_cells), dtype=bool)
    n_genes = int(gene_mask.sum())
    if n_genes == 0:
        raise InputError(
            f"no gene left after the min_cells filter (detected in at least {min_cells} "
            f"cells), which removed all {data.n_vars} genes",
            source,
        )
    for metric in _VAR_METRICS:
        data.var[metric] = var_metrics[metric].to_numpy()
    gene_steps = [_step("min_cells", min_cells, data.n_vars - n_genes, n_genes)]
    data = data[:, gene_mask].copy()
    log["qc"] = pd.Categorical(removed_by, categories=[PASSED, *(s["filter"] for s in cell_steps)])
    data.uns["qc_cells"] = log

    summary.update(
        _outcome(
            cells=(adata.n_obs, data.n_obs),
            genes=(adata.n_vars, data.n_vars),
            steps=(cell_steps, gene_steps),
            conditions=_label_counts(data.obs[condition_column], order=keep),
            thresholds=(min_genes, max_pct_mito, max_counts, min_cells),
            mito=(mito_prefix, prefix, int(mito.sum())),
        )
    )
    logger.info(
        "QC kept %d of %d cells and %d of %d genes",
        data.n_obs,
        adata.n_obs,
        data.n_vars,
        adata.n_vars,
    )
    return data, summary


def plot_qc(adata: ad.AnnData, summary: dict[str, Any], path: str | Path) -> None:
    """Draw the per-cell QC distributions with the thresholds, as one PNG.

    Three panels (detected genes, total counts, % mitochondrial counts), one histogram per
    condition, over the cells of the kept conditions before the cell filters
    (``uns["qc_cells"]`` from :func:`run_qc`; the kept cells in ``obs`` if it is missing).
    The bytes depend only on the data: fixed size and dpi, no software or date metadata.

    Parameters
    ----------
    adata
        The output of :func:`run_qc`.
    summary
        The summary from :func:`run_qc`.
    path
        Where to write the PNG.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    logger.info("drawing the QC plot")
    column = summary["condition_column"]
    table = adata.uns["qc_cells"] if "qc_cells" in adata.uns else adata.obs
    removed = {step["filter"]: step for step in summary["cell_filters"]}
    panels = [
        ("n_genes_by_counts", "detected genes per cell", "min_genes"),
        ("total_counts", "total counts per cell", "max_counts"),
        ("pct_counts_mt", "% counts in mitochondrial genes", "max_pct_mito"),
    ]
    fig = Figure(figsize=(13.5, 4.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels))
    conditions = table[column].astype(str).to_numpy()
    for ax, (metric, title, name) in zip(axes, panels, strict=True):
        values = table[metric].to_numpy(dtype=np.float64)
        bins = np.histogram_bin_edges(values, bins=40)
        for label in summary["keep"]:
            chosen = values[conditions == label]
            ax.hist(
                chosen,
                bins=bins,
                histtype="step",
                linewidth=1.5,
                label=f"{label} (n={chosen.size})",
            )
        step = removed.get(name)
        if step is not None and step["threshold"] is not None:
            ax.axvline(
                step["threshold"],
                color="black",
                linestyle="--",
                linewidth=1,
                label=f"{name} {step['threshold']:g}: {step['removed']} removed",
            )
        ax.set_title(title)
        ax.set_xlabel(metric)
        ax.set_ylabel("cells")
        ax.legend(fontsize="small", frameon=False)
    mito = summary["mito"]
    mito_text = (
        f"{mito['n_genes']} mito genes ({mito['prefix']})" if mito["prefix"] else "no mito genes"
    )
    fig.suptitle(
        f"QC: {summary['cells_before']} -> {summary['cells_after']} cells, "
        f"{summary['genes_before']} -> {summary['genes_after']} genes, {mito_text}"
    )
    fig.savefig(path, format="png", metadata={"Software": None})


# -- steps --------------------------------------------------------------------------------


def _single_condition(
    adata: ad.AnnData, source: str | Path | None
) -> tuple[ad.AnnData, str, tuple[str, ...]]:
    """A shallow copy of ``adata`` whose every cell has the label :data:`SINGLE_LABEL`."""
    obs = _single_label_obs(adata.obs, source)
    single = ad.AnnData(X=adata.X, obs=obs, var=adata.var, layers=dict(adata.layers))
    return single, SINGLE_COLUMN, (SINGLE_LABEL,)


def _single_label_obs(obs: pd.DataFrame, source: str | Path | None) -> pd.DataFrame:
    """A copy of ``obs`` with the column :data:`SINGLE_COLUMN` set to :data:`SINGLE_LABEL`
    (with a warning when ``obs`` had such a column)."""
    obs = obs.copy()
    if SINGLE_COLUMN in obs.columns:
        logger.warning(
            "%s: obs column %r is replaced by the single-condition label %r",
            source,
            SINGLE_COLUMN,
            SINGLE_LABEL,
        )
    obs[SINGLE_COLUMN] = SINGLE_LABEL
    return obs


def _check_keep(keep: Sequence[str], source: str | Path | None) -> tuple[str, ...]:
    if isinstance(keep, str):
        keep = [keep]
    labels = tuple(str(k) for k in keep)
    if not labels:
        raise InputError("no condition label to keep", source)
    if len(set(labels)) != len(labels):
        raise InputError(f"condition labels to keep repeat a label: {list(labels)}", source)
    return labels


def _condition_labels(
    adata: ad.AnnData, column: str, keep: tuple[str, ...], source: str | Path | None
) -> pd.Series:
    """The condition of each cell as strings, after checking the column and labels."""
    if column not in adata.obs.columns:
        available = ", ".join(map(str, adata.obs.columns)) or "none"
        raise InputError(
            f"no obs column {column!r} for the conditions; available columns: {available}", source
        )
    labels = adata.obs[column].astype(str)
    present = _label_counts(labels)
    unknown = [k for k in keep if k not in present]
    if unknown:
        listing = ", ".join(f"{name} ({n})" for name, n in present.items())
        raise InputError(
            f"unknown condition labels {unknown} in obs column {column!r}; "
            f"labels present: {listing}",
            source,
        )
    return labels


def _label_counts(labels: pd.Series, *, order: Sequence[str] | None = None) -> dict[str, int]:
    """Cells per label: in ``order`` if given, else most frequent first, ties by name."""
    counts = labels.astype(str).value_counts()
    if order is not None:
        return {label: int(counts.get(label, 0)) for label in order}
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return {label: int(n) for label, n in ranked}


def _working_copy(adata: ad.AnnData) -> ad.AnnData:
    """A copy with ``X`` as CSR ``float32`` (raw counts, unchanged values)."""
    data = adata.copy()
    data.X = sparse.csr_matrix(data.X, dtype=np.float32)
    return data


def _mito_genes(
    names: pd.Index, mito_prefix: str, source: str | Path | None
) -> tuple[str | None, np.ndarray]:
    """The prefix used and a mask of mitochondrial genes (logs a warning when none)."""
    names = pd.Index(names.astype(str))
    if mito_prefix == "auto":
        found = {p: int(names.str.startswith(p).sum()) for p in MITO_PREFIXES}
        prefix = max(MITO_PREFIXES, key=lambda p: found[p])
        if found[prefix] == 0:
            logger.warning(
                "%s: no mitochondrial genes (names starting with %s); %% mito is 0 for all cells",
                source if source is not None else "counts",
                " or ".join(MITO_PREFIXES),
            )
            return None, np.zeros(len(names), dtype=bool)
    else:
        prefix = mito_prefix
    mask = np.asarray(names.str.startswith(prefix), dtype=bool)
    if not mask.any():
        logger.warning(
            "%s: no mitochondrial genes (names starting with %s); %% mito is 0 for all cells",
            source if source is not None else "counts",
            prefix,
        )
    return prefix, mask


def _qc_metrics(data: ad.AnnData) -> tuple[pd.DataFrame, pd.DataFrame]:
    """scanpy's per-cell and per-gene metrics; % mito of a cell without counts is 0."""
    import scanpy as sc

    obs, var = sc.pp.calculate_qc_metrics(
        data, qc_vars=["mt"], percent_top=None, log1p=False, inplace=False
    )
    obs["pct_counts_mt"] = obs["pct_counts_mt"].fillna(0.0)
    return obs, var


def _cell_filters(
    min_genes: int, max_pct_mito: float, max_counts: float | None
) -> list[tuple[str, Any, Callable[[ad.AnnData], np.ndarray]]]:
    """(name, threshold, mask function) of each cell filter, in the order applied."""
    import scanpy as sc

    def genes_ok(data: ad.AnnData) -> np.ndarray:
        return sc.pp.filter_cells(data, min_genes=min_genes, inplace=False)[0]

    def mito_ok(data: ad.AnnData) -> np.ndarray:
        return data.obs["pct_counts_mt"].to_numpy() <= max_pct_mito

    def counts_ok(data: ad.AnnData) -> np.ndarray:
        if max_counts is None:
            return np.ones(data.n_obs, dtype=bool)
        return sc.pp.filter_cells(data, max_counts=max_counts, inplace=False)[0]

    return [
        ("min_genes", int(min_genes), genes_ok),
        ("max_pct_mito", float(max_pct_mito), mito_ok),
        ("max_counts", None if max_counts is None else float(max_counts), counts_ok),
    ]


def _min_cells_mask(data: ad.AnnData, min_cells: int) -> np.ndarray:
    import scanpy as sc

    return sc.pp.filter_genes(data, min_cells=min_cells, inplace=False)[0]


_FILTER_WORDS = {
    "condition": "cells of the kept condition labels",
    "min_genes": "at least {} detected genes",
    "max_pct_mito": "at most {}% mitochondrial counts",
    "max_counts": "at most {} total counts",
}


def _apply_cell_filter(
    data: ad.AnnData,
    mask: np.ndarray,
    name: str,
    threshold: Any,
    steps: list[dict[str, Any]],
    source: str | Path | None,
) -> ad.AnnData:
    """Keep the cells in ``mask``, record the step, refuse an empty result."""
    mask = np.asarray(mask, dtype=bool)
    kept = int(mask.sum())
    removed = data.n_obs - kept
    if kept == 0:
        rule = _FILTER_WORDS[name].format(threshold)
        raise InputError(
            f"no cell left after the {name} filter ({rule}), which removed the last "
            f"{removed} cells",
            source,
        )
    steps.append(_step(name, threshold, removed, kept))
    return data if removed == 0 else data[mask].copy()


def _step(name: str, threshold: Any, removed: int, remaining: int) -> dict[str, Any]:
    return {"filter": name, "threshold": threshold, "removed": removed, "remaining": remaining}


def _summary_head(
    adata: ad.AnnData,
    column: str,
    keep: tuple[str, ...],
    labels: pd.Series,
    source: str | Path | None,
) -> dict[str, Any]:
    return {
        "source": None if source is None else str(source),
        "cells_before": adata.n_obs,
        "genes_before": adata.n_vars,
        "condition_column": column,
        "keep": list(keep),
        "cells_per_condition_before": _label_counts(labels),
    }


# -- streaming ----------------------------------------------------------------------------


def run_qc_chunked(
    counts: ChunkedCounts,
    out: str | Path,
    *,
    condition_column: str | None,
    keep: Sequence[str] | None,
    min_genes: int = 200,
    min_cells: int = 3,
    max_pct_mito: float = 20.0,
    max_counts: float | None = None,
    mito_prefix: str = "auto",
    chunk_cells: int = 10_000,
    source: str | Path | None = None,
) -> tuple[ad.AnnData, dict[str, Any]]:
    """:func:`run_qc` over blocks of cells, writing the filtered counts to ``out``.

    Three passes over ``counts``, ``chunk_cells`` cells at a time: the per-cell metrics and
    filters; the per-gene metrics over the cells kept; then the kept cells' counts of the
    kept genes, appended to ``X`` of ``out`` block by block. Peak memory is set by the block
    and the number of genes (plus the per-cell tables), not by the number of cells.

    The result equals :func:`run_qc` on the same counts bit for bit: the per-cell metrics
    are scanpy's on each block (they are row-wise), the per-gene sums are added in the
    order scanpy and scipy add them (:mod:`geneattn.column_sums`), and ``out`` holds the
    same ``X``, ``obs``, ``var``, ``obsm``, ``obsp`` and ``uns`` (the file's bytes differ:
    ``X`` is written last, in appendable datasets).

    Parameters
    ----------
    counts
        The raw counts (:func:`geneattn.io.chunks.open_counts`).
    out
        The ``.h5ad`` to write (write it to a temporary name; see :mod:`geneattn.io.atomic`).
    condition_column, keep, min_genes, min_cells, max_pct_mito, max_counts, mito_prefix
        As for :func:`run_qc`.
    chunk_cells
        Cells per block.
    source
        The file named in errors and warnings (default: ``counts.path``).

    Returns
    -------
    tuple[AnnData, dict]
        The filtered data without ``X`` (``obs``, ``var``, ``uns`` with ``qc_cells``: what
        :func:`plot_qc` needs) and the summary, as :func:`run_qc` returns them.
    """
    from geneattn.io.chunks import chunk_bounds

    source = counts.path if source is None else source
    obs = counts.obs
    obsm, obsp, uns = counts.obsm, counts.obsp, dict(counts.uns)
    if condition_column is None:
        obsm, obsp, uns = {}, {}, {}  # as _single_condition: only X, obs and var
        if keep:
            raise ValueError("keep needs a condition_column")
        obs = _single_label_obs(obs, source)
        condition_column, keep = SINGLE_COLUMN, (SINGLE_LABEL,)
    keep = _check_keep(keep, source)
    shell = ad.AnnData(obs=obs, var=counts.var)
    labels = _condition_labels(shell, condition_column, keep, source)
    obs = obs.copy()
    obs[condition_column] = pd.Categorical(labels, categories=list(keep))
    prefix, mito = _mito_genes(counts.var.index, mito_prefix, source)
    var = counts.var.copy()
    var["mt"] = mito
    summary = _summary_head(shell, condition_column, keep, labels, source)
    in_keep = labels.isin(keep).to_numpy()
    bounds = chunk_bounds(counts.n_cells, chunk_cells)

    # pass 1: per-cell metrics and filters
    n_counts = np.zeros(counts.n_cells)
    metric_parts: list[pd.DataFrame] = []
    removed_parts: list[np.ndarray] = []
    for start, stop in bounds:
        x = counts.chunk(start, stop)
        n_counts[start:stop] = np.asarray(x.sum(axis=1, dtype=np.float64)).ravel()
        rows = np.flatnonzero(in_keep[start:stop])
        if len(rows) == 0:
            continue
        block = ad.AnnData(X=x[rows], var=var[["mt"]])
        block.obs_names = obs.index[start + rows]
        metrics, _ = _qc_metrics(block)
        block.obs["pct_counts_mt"] = metrics["pct_counts_mt"].to_numpy()
        removed = np.full(len(rows), PASSED, dtype=object)
        still = np.ones(len(rows), dtype=bool)
        for name, _, passing in _cell_filters(min_genes, max_pct_mito, max_counts):
            ok = np.asarray(passing(block), dtype=bool)
            removed[still & ~ok] = name
            still &= ok
        metric_parts.append(metrics[_CELL_METRICS])
        removed_parts.append(removed)
    obs["n_counts"] = n_counts

    cell_steps: list[dict[str, Any]] = []
    n_in = int(in_keep.sum())
    _record_cell_step("condition", list(keep), counts.n_cells, n_in, cell_steps, source)
    metrics = pd.concat(metric_parts) if metric_parts else pd.DataFrame(columns=_CELL_METRICS)
    removed_by = np.concatenate(removed_parts) if removed_parts else np.array([], dtype=object)
    remaining = n_in
    for name, threshold, _ in _cell_filters(min_genes, max_pct_mito, max_counts):
        gone = int((removed_by == name).sum())
        _record_cell_step(name, threshold, remaining, remaining - gone, cell_steps, source)
        remaining -= gone
    log_obs = obs.loc[in_keep, [condition_column]].copy()
    for metric in _CELL_METRICS:
        log_obs[metric] = metrics[metric].to_numpy()
    log = log_obs
    log["qc"] = pd.Categorical(removed_by, categories=[PASSED, *(s["filter"] for s in cell_steps)])
    kept = np.zeros(counts.n_cells, dtype=bool)
    kept[np.flatnonzero(in_keep)[removed_by == PASSED]] = True
    n_kept = int(kept.sum())

    # pass 2: per-gene metrics over the kept cells
    n_genes = counts.n_genes
    moments = ColumnMoments(n_genes, squares=False)
    totals = ColumnTotals(n_genes, dtype=np.float32)
    detected = np.zeros(n_genes, dtype=np.int64)
    positive = np.zeros(n_genes, dtype=np.int64)
    for start, stop in bounds:
        rows = np.flatnonzero(kept[start:stop])
        if len(rows) == 0:
            continue
        x = counts.chunk(start, stop)[rows]
        x.eliminate_zeros()
        moments.add(x)
        totals.add(x)
        detected += np.bincount(x.indices, minlength=n_genes)
        positive += np.bincount(x.indices[x.data > 0], minlength=n_genes)
    mean, _ = moments.mean_var()
    var_metrics = pd.DataFrame(index=var.index)
    var_metrics["n_cells_by_counts"] = detected
    var_metrics["mean_counts"] = mean
    var_metrics["pct_dropout_by_counts"] = (1 - var_metrics["n_cells_by_counts"] / n_kept) * 100
    var_metrics["total_counts"] = totals.total
    gene_mask = positive >= min_cells
    n_genes_after = int(gene_mask.sum())
    if n_genes_after == 0:
        raise InputError(
            f"no gene left after the min_cells filter (detected in at least {min_cells} "
            f"cells), which removed all {n_genes} genes",
            source,
        )
    for metric in _VAR_METRICS:
        var[metric] = var_metrics[metric].to_numpy()
    gene_steps = [_step("min_cells", min_cells, n_genes - n_genes_after, n_genes_after)]

    obs_out = obs.loc[kept].copy()
    for metric in _CELL_METRICS:
        obs_out[metric] = metrics.loc[removed_by == PASSED, metric].to_numpy()
    uns["qc_cells"] = log
    result = ad.AnnData(
        obs=_without_unused_categories(obs_out),
        var=_without_unused_categories(var.loc[gene_mask].copy()),
        uns=uns,
        obsm={k: _rows_of(v, kept) for k, v in obsm.items()},
        obsp={k: v[kept][:, kept] for k, v in obsp.items()},
    )

    # pass 3: the kept cells' counts of the kept genes
    columns = np.flatnonzero(gene_mask)
    result.write_h5ad(out)
    from geneattn.io.csr_append import CsrAppender

    with CsrAppender(out, "X", n_columns=len(columns)) as writer:
        for start, stop in bounds:
            rows = np.flatnonzero(kept[start:stop])
            if len(rows) == 0:
                continue
            x = counts.chunk(start, stop)[rows]
            x.eliminate_zeros()
            writer.append(x[:, columns])

    summary.update(
        _outcome(
            cells=(counts.n_cells, n_kept),
            genes=(n_genes, n_genes_after),
            steps=(cell_steps, gene_steps),
            conditions=_label_counts(obs_out[condition_column], order=keep),
            thresholds=(min_genes, max_pct_mito, max_counts, min_cells),
            mito=(mito_prefix, prefix, int(mito.sum())),
        )
    )
    logger.info(
        "QC kept %d of %d cells and %d of %d genes (in blocks of %d cells)",
        n_kept,
        counts.n_cells,
        n_genes_after,
        n_genes,
        chunk_cells,
    )
    return result, summary


def _outcome(
    *,
    cells: tuple[int, int],
    genes: tuple[int, int],
    steps: tuple[list, list],
    conditions: dict,
    thresholds: tuple,
    mito: tuple,
) -> dict[str, Any]:
    """The summary's keys on what QC kept, the same for the in-memory and the block paths.

    ``cells`` and ``genes`` are (before, after); ``steps`` the cell and gene filter steps;
    ``thresholds`` (min_genes, max_pct_mito, max_counts, min_cells); ``mito`` (requested
    prefix, prefix used, mitochondrial genes).
    """
    min_genes, max_pct_mito, max_counts, min_cells = thresholds
    requested, prefix, n_mito = mito
    return {
        "cells_after": int(cells[1]),
        "genes_after": int(genes[1]),
        "cell_filters": steps[0],
        "gene_filters": steps[1],
        "cells_removed": int(cells[0] - cells[1]),
        "genes_removed": int(genes[0] - genes[1]),
        "cells_per_condition": conditions,
        "thresholds": {
            "min_genes": int(min_genes),
            "max_pct_mito": float(max_pct_mito),
            "max_counts": None if max_counts is None else float(max_counts),
            "min_cells": int(min_cells),
        },
        "mito": {"requested": requested, "prefix": prefix, "n_genes": n_mito},
    }


def _record_cell_step(
    name: str,
    threshold: Any,
    before: int,
    kept: int,
    steps: list[dict[str, Any]],
    source: str | Path | None,
) -> None:
    """The bookkeeping of :func:`_apply_cell_filter` for a filter applied by mask."""
    removed = before - kept
    if kept == 0:
        rule = _FILTER_WORDS[name].format(threshold)
        raise InputError(
            f"no cell left after the {name} filter ({rule}), which removed the last "
            f"{removed} cells",
            source,
        )
    steps.append(_step(name, threshold, removed, kept))


def _without_unused_categories(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop unused categories of categorical columns, as subsetting an AnnData does."""
    for column in frame.columns:
        if isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = frame[column].cat.remove_unused_categories()
    return frame


def _rows_of(value: Any, mask: np.ndarray) -> Any:
    if isinstance(value, pd.DataFrame):
        return value.loc[mask]
    return value[mask]

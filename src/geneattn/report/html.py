"""One self-contained HTML report of a study.

The report gathers the outputs of the workflow into one file that opens offline: the config
and package versions, QC, a UMAP of the cell embeddings, the module network, the enrichment,
differential and evaluation tables, and (when given) the in-silico perturbation ranking.
Figures are embedded PNGs (:mod:`geneattn.report.plots`), tables are HTML, and nothing
refers to an external resource. The report carries no date, and building it twice from the
same inputs gives the same bytes.
"""

from __future__ import annotations

import contextlib
import html
import importlib.metadata
import io
import json
import logging
import platform
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geneattn.errors import InputError
from geneattn.io.atomic import write_text
from geneattn.perturb import TABLE_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

#: Packages whose versions the report lists (distribution name, shown name).
PACKAGES = (
    ("geneattn", "geneattn"),
    ("numpy", "numpy"),
    ("scipy", "scipy"),
    ("pandas", "pandas"),
    ("scanpy", "scanpy"),
    ("anndata", "anndata"),
    ("umap-learn", "umap-learn"),
    ("matplotlib", "matplotlib"),
    ("networkx", "networkx"),
    ("igraph", "igraph"),
    ("leidenalg", "leidenalg"),
    ("snakemake", "snakemake"),
)

#: Columns of ``perturbation.tsv`` (written by the perturbation stage).
PERTURBATION_COLUMNS = TABLE_COLUMNS

_QC_PANELS = (
    ("n_genes_by_counts", "detected genes per cell", "min_genes"),
    ("total_counts", "total counts per cell", "max_counts"),
    ("pct_counts_mt", "% counts in mitochondrial genes", "max_pct_mito"),
)
#: The QC panels (metric, title, threshold name), for :func:`geneattn.pl.qc` too.
QC_PANELS = _QC_PANELS
_QC_SUMMARY_KEYS = (
    "condition_column",
    "keep",
    "cell_filters",
    "gene_filters",
    "cells_before",
    "cells_after",
    "genes_before",
    "genes_after",
)


@dataclass(frozen=True)
class ReportInputs:
    """The workflow outputs the report reads (``perturbation`` is optional)."""

    qc_summary: Path
    qc: Path
    embeddings: Path
    modules: Path
    module_graph: Path
    enrichment: Path
    differential: Path
    evaluation: Path
    perturbation: Path | None = None
    gene_shifts: Path | None = None
    skipped: Path | None = None
    module_traits: Path | None = None
    module_preservation: Path | None = None


@dataclass(frozen=True)
class ReportOptions:
    """How much the report shows, and the seeds of its layouts.

    ``neighbors_method`` is passed to :func:`scanpy.pp.neighbors`: ``"umap"`` (the default,
    UMAP's fuzzy simplicial set) or ``"gauss"`` (a Gaussian kernel; no numba compilation,
    which the tests use to stay fast). Studies of more than ``umap_cells`` cells are drawn
    from a random subsample of that many cells (seeded with ``seed``; the figure says so),
    so the report of an atlas takes seconds, not hours.
    """

    fdr: float = 0.05
    top_enrichment: int = 5
    hubs_per_module: int = 25
    hub_labels: int = 5
    max_module_panels: int = 24
    perturbation_rows: int = 25
    gene_shift_rows: int = 5
    volcano_labels: int = 12
    n_neighbors: int = 15
    neighbors_method: str = "umap"
    seed: int = 0
    umap_cells: int = 20_000


def build_report(
    inputs: ReportInputs,
    *,
    study: str,
    config_text: str | None = None,
    options: ReportOptions | None = None,
) -> str:
    """Build the HTML report.

    Parameters
    ----------
    inputs
        Paths of the workflow outputs.
    study
        The study name shown in the title.
    config_text
        The resolved config as YAML (shown as given, after checking that it is a mapping);
        None leaves the config out.
    options
        What to show (defaults: :class:`ReportOptions`).

    Returns
    -------
    str
        The complete HTML document.

    Raises
    ------
    InputError
        An input is missing, unreadable or lacks a column or key the report needs.
    """
    opts = options or ReportOptions()
    logger.info("report: reading the tables")
    summary = read_qc_summary(inputs.qc_summary)
    modules = read_tsv(
        inputs.modules,
        ("gene", "gene_id", "module", "intramodular_connectivity", "hub_rank"),
        numeric=("module", "intramodular_connectivity", "hub_rank"),
    )
    enrichment = read_tsv(
        inputs.enrichment,
        ("module", "collection", "gene_set", "overlap", "set_size", "p_value", "fdr", "genes"),
        numeric=("module", "overlap", "set_size", "p_value", "fdr"),
    )
    differential = read_tsv(
        inputs.differential,
        ("module", "size", "case_mean", "control_mean", "diff", "p_value", "fdr"),
        numeric=("module", "size", "case_mean", "control_mean", "diff", "p_value", "fdr"),
    )
    evaluation_notes, evaluation = read_evaluation(inputs.evaluation)
    perturbation = None if inputs.perturbation is None else read_perturbation(inputs.perturbation)
    single = _is_single_condition(summary)
    logger.info("report: quality control (violin plots)")
    qc = _qc_section(inputs.qc, summary)
    logger.info("report: cell embeddings (neighbour graph and UMAP)")
    embeddings = _embedding_section(inputs.embeddings, summary, opts)
    logger.info("report: module network")
    module_html = _module_section(
        inputs.module_graph, modules, enrichment, differential, opts, single=single
    )
    logger.info("report: enrichment, differential attention and evaluation tables")
    tables = _tables_section(enrichment, differential, evaluation_notes, evaluation, opts)
    logger.info("report: module analysis")
    analysis_html = _module_analysis_section(inputs.module_traits, inputs.module_preservation, opts)
    logger.info("report: in-silico perturbation")
    perturb_html = _perturbation_section(perturbation, opts, single=single)
    sections = [
        ("qc", "Quality control", qc),
        ("embeddings", "Cell embeddings", embeddings),
        ("modules", "Gene modules", module_html),
        ("enrichment", "Enrichment, differential attention, evaluation", tables),
        ("module_analysis", "Module eigengenes, traits and preservation", analysis_html),
        (
            "perturbation",
            "In-silico perturbation",
            perturb_html
            + _skipped_section(inputs.skipped)
            + _gene_shift_section(inputs.gene_shifts, opts),
        ),
    ]
    return _document(study, _header(study, summary, config_text), sections)


def write_report(
    path: str | Path,
    inputs: ReportInputs,
    *,
    study: str,
    config_text: str | None = None,
    options: ReportOptions | None = None,
    n_threads: int | None = None,
) -> None:
    """Build the report (:func:`build_report`) and write it to ``path`` atomically.

    ``n_threads``: numba threads of the UMAP's neighbour graph for this call (None: as set).
    """
    with numba_threads(n_threads):
        text = build_report(inputs, study=study, config_text=config_text, options=options)
    write_text(path, text)


@contextlib.contextmanager
def numba_threads(n_threads: int | None) -> Iterator[None]:
    """Run the block with ``n_threads`` numba threads (at most numba's pool size), then
    restore the count: numba's pool size is fixed once started, the per-thread count is not."""
    if n_threads is None:
        yield
        return
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        numba.set_num_threads(before)


def read_config_file(path: str | Path) -> str:
    """The resolved config of a YAML file, checked by :func:`read_config_text`."""
    return read_config_text(_read_text(path), path)


# -- inputs -------------------------------------------------------------------------------


def read_tsv(
    path: str | Path, columns: Iterable[str], *, numeric: Iterable[str] = ()
) -> pd.DataFrame:
    """Read a TSV table and check that it has ``columns`` and that ``numeric`` ones are numbers.

    Lines starting with ``#`` before the header are skipped. Empty cells and ``NA`` are
    missing values.
    """
    return _parse_tsv(_read_text(path), path, columns, numeric)[1]


def read_evaluation(path: str | Path) -> tuple[list[str], pd.DataFrame]:
    """Read ``evaluation.tsv``: its leading ``#`` summary lines and its program table.

    Two layouts: the program cohesion of the modules alone (``in_network``, ``together``,
    ``module``, ``p_value``), or, with baselines, attention and co-expression modules side
    by side (``in_universe``, ``attention_fraction``, ``coexpression_fraction``, ...).
    """
    text = _read_text(path)
    if "\tattention_fraction\t" in text:
        columns = ("program", "genes", "in_universe", "attention_fraction", "coexpression_fraction")
        numeric = (
            "genes",
            "in_universe",
            "attention_fraction",
            "attention_p_value",
            "coexpression_fraction",
            "coexpression_p_value",
        )
        return _parse_tsv(text, path, columns, numeric)
    return _parse_tsv(
        text,
        path,
        ("program", "genes", "in_network", "together", "module", "p_value"),
        ("genes", "in_network", "together", "p_value"),
    )


def read_perturbation(path: str | Path) -> pd.DataFrame:
    """Read and check ``perturbation.tsv`` (columns :data:`PERTURBATION_COLUMNS`)."""
    from geneattn.report.plots import MODES

    table = read_tsv(
        path,
        PERTURBATION_COLUMNS,
        numeric=(
            "module",
            "n_cells",
            "mean_cosine_shift",
            "mean_goal_shift",
            "statistic",
            "p_value",
            "fdr",
        ),
    )
    modes = table["mode"].astype(str)
    if bad := sorted(set(modes) - set(MODES)):
        raise InputError(f"unknown mode {bad[0]!r} (expected one of {', '.join(MODES)})", path)
    fdr = table["fdr"].to_numpy(dtype=np.float64)
    if np.any((fdr < 0) | (fdr > 1)):
        raise InputError("column 'fdr' has values outside [0, 1]", path)
    return table


def read_qc_summary(path: str | Path) -> dict[str, Any]:
    """Read ``qc_summary.json`` and check the keys the report uses."""
    try:
        summary = json.loads(_read_text(path))
    except json.JSONDecodeError as err:
        raise InputError(f"not JSON ({err})", path) from None
    if not isinstance(summary, dict):
        raise InputError("not a JSON object", path)
    if missing := [k for k in _QC_SUMMARY_KEYS if k not in summary]:
        raise InputError(f"missing keys {missing}", path)
    step_keys = {"filter", "threshold", "removed", "remaining"}
    for key in ("cell_filters", "gene_filters"):
        steps = summary[key]
        if not isinstance(steps, list) or not all(
            isinstance(s, dict) and step_keys <= s.keys() for s in steps
        ):
            raise InputError(f"{key!r} is not a list of {sorted(step_keys)} records", path)
    if not isinstance(summary["keep"], list) or not summary["keep"]:
        raise InputError("'keep' is not a list of condition labels", path)
    return summary


def read_config_text(text: str, source: str | Path) -> str:
    """Check that ``text`` is a YAML mapping; returns it unchanged."""
    import yaml

    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise InputError(f"not YAML ({' '.join(str(err).split())})", source) from None
    if not isinstance(parsed, dict):
        raise InputError("the config is not a YAML mapping", source)
    return text


def package_versions() -> list[tuple[str, str]]:
    """Versions of Python and of :data:`PACKAGES` (``not installed`` when missing)."""
    rows = [("python", platform.python_version())]
    for dist, shown in PACKAGES:
        try:
            rows.append((shown, importlib.metadata.version(dist)))
        except importlib.metadata.PackageNotFoundError:
            rows.append((shown, "not installed"))
    return rows


#: Cells below which scanpy computes neighbours densely itself (its own threshold).
SMALL_DATA = 4096


def _exact_knn(k: int):
    """sklearn's exact ``KNeighborsTransformer`` (deterministic) returning ``csr_matrix``."""
    import scipy.sparse as sp
    from sklearn.neighbors import KNeighborsTransformer

    class SparseMatrixKNN(KNeighborsTransformer):
        def transform(self, X):
            return sp.csr_matrix(super().transform(X))

        def fit_transform(self, X, y=None):
            return sp.csr_matrix(super().fit_transform(X, y))

    return SparseMatrixKNN(n_neighbors=k, mode="distance")


def umap_coordinates(
    x: np.ndarray, *, n_neighbors: int = 15, seed: int = 0, method: str = "umap"
) -> np.ndarray:
    """2-D UMAP of the rows of ``x`` with scanpy, seeded (same input, same coordinates).

    ``sc.pp.neighbors`` (``n_neighbors`` capped at the number of rows minus one,
    ``random_state=seed``, ``method``; exact neighbours from 4,096 rows on, where scanpy
    would use the approximate, thread-dependent pynndescent) then
    ``sc.tl.umap(random_state=seed)``.
    """
    import anndata as ad
    import pandas as pd
    import scanpy as sc

    n = x.shape[0]
    data = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(n)]))
    data.obsm["X_rep"] = np.ascontiguousarray(x, dtype=np.float32)
    k = max(2, min(n_neighbors, n - 1))
    sc.pp.neighbors(
        data,
        use_rep="X_rep",
        n_neighbors=k,
        random_state=seed,
        method=method,
        # beyond scanpy's small-data path, exact neighbours as a scipy sparse *matrix*:
        # scanpy 1.11 calls .getnnz, which scipy 1.17's sparse arrays no longer have
        transformer=None if n < SMALL_DATA else _exact_knn(k),
    )
    sc.tl.umap(data, random_state=seed)
    return np.asarray(data.obsm["X_umap"], dtype=np.float64)


def _read_text(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except IsADirectoryError:
        raise InputError("is a directory, not a file", path) from None
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text", path) from None


def _parse_tsv(
    text: str, path: str | Path, columns: Iterable[str], numeric: Iterable[str]
) -> tuple[list[str], pd.DataFrame]:
    import pandas as pd

    lines = text.splitlines(keepends=True)
    n_notes = 0
    while n_notes < len(lines) and lines[n_notes].startswith("#"):
        n_notes += 1
    notes = [line.lstrip("#").strip() for line in lines[:n_notes]]
    try:
        table = pd.read_csv(
            io.StringIO("".join(lines[n_notes:])),
            sep="\t",
            keep_default_na=False,
            na_values=["", "NA", "NaN", "nan"],
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise InputError(f"not a TSV table ({' '.join(str(err).split())})", path) from None
    if missing := [c for c in columns if c not in table.columns]:
        raise InputError(f"missing columns {missing}", path)
    for column in numeric:
        values = table[column]
        if table.empty:  # a header-only table reads as text columns
            table[column] = values.astype(np.float64)
        elif not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            converted = pd.to_numeric(values, errors="coerce")
            bad = values[converted.isna() & values.notna()]
            first = bad.iloc[0] if len(bad) else values.iloc[0]
            raise InputError(f"column {column!r} is not numeric (value {first!r})", path)
    return notes, table


# -- sections -----------------------------------------------------------------------------


def _header(study: str, summary: dict[str, Any], config_text: str | None) -> str:
    keep = [str(k) for k in summary["keep"]]
    per = summary.get("cells_per_condition", {})
    cells = ", ".join(f"{_e(k)}: {_e(per.get(k, '?'))}" for k in keep)
    if _is_single_condition(summary):
        lead = (
            "<p>Single-condition study: all cells form one group (no case vs control, so no "
            "differential test and no goal state). After QC: "
            f"{_e(summary['cells_after'])} cells x {_e(summary['genes_after'])} genes.</p>"
        )
    else:
        lead = (
            f"<p>Case vs control: <b>{_e(' vs '.join(keep))}</b> (column "
            f"<code>{_e(summary['condition_column'])}</code>). After QC: "
            f"{_e(summary['cells_after'])} cells ({cells}) x {_e(summary['genes_after'])} "
            "genes.</p>"
        )
    config = (
        "<p>No config given.</p>"
        if config_text is None
        else f"<details open><summary>Resolved config (YAML)</summary><pre>{_e(config_text)}</pre>"
        "</details>"
    )
    versions = _html_table(["package", "version"], package_versions())
    return (
        f"{lead}<div class='cols'><div>{config}</div><div><h3>Package versions</h3>{versions}"
        "</div></div>"
    )


def _qc_section(qc_path: Path, summary: dict[str, Any]) -> str:
    from geneattn.io.readers import read_stage_h5ad
    from geneattn.report.plots import qc_violins

    column = str(summary["condition_column"])
    keep = [str(k) for k in summary["keep"]]
    single = _is_single_condition(summary)
    before = summary.get("cells_per_condition_before", {})
    after = summary.get("cells_per_condition", {})
    per_condition = (
        [] if single else [(f"cells: {k}", before.get(k, "NA"), after.get(k, "NA")) for k in keep]
    )
    counts = _html_table(
        ["", "before", "after"],
        [
            ("cells", summary["cells_before"], summary["cells_after"]),
            ("genes", summary["genes_before"], summary["genes_after"]),
            *per_condition,
        ],
    )
    steps = [("cells", s) for s in summary["cell_filters"]] + [
        ("genes", s) for s in summary["gene_filters"]
    ]
    filters = _html_table(
        ["on", "filter", "threshold", "removed", "remaining"],
        [
            (on, s["filter"], _threshold(s["threshold"]), s["removed"], s["remaining"])
            for on, s in steps
        ],
    )
    thresholds = {s["filter"]: s["threshold"] for _, s in steps}

    adata = read_stage_h5ad(qc_path, backed=True)
    try:
        cells = adata.uns["qc_cells"] if "qc_cells" in adata.uns else adata.obs
        cells = cells.copy()
    finally:
        adata.file.close()
    needed = [column, *(metric for metric, _, _ in _QC_PANELS)]
    if missing := [c for c in needed if c not in cells.columns]:
        raise InputError(f"per-cell QC table (uns['qc_cells'] or obs) lacks {missing}", qc_path)
    panels = []
    for metric, title, name in _QC_PANELS:
        value = thresholds.get(name)
        panels.append((metric, title, float(value) if isinstance(value, int | float) else None))
    image = qc_violins(cells, column, keep, panels)
    mito = summary.get("mito", {})
    mito_note = (
        f"{_e(mito.get('n_genes'))} mitochondrial genes (prefix {_e(mito.get('prefix'))})"
        if mito.get("prefix")
        else "no mitochondrial genes found, so % mito is 0 for every cell"
    )
    whose = "all cells" if single else f"the {_e(' and '.join(keep))} cells"
    return (
        f"<div class='cols'><div><h3>Counts</h3>{counts}</div><div><h3>Filters, in order</h3>"
        f"{filters}</div></div>"
        f"<p>Per-cell metrics of {whose} before the cell filters "
        f"(dashed: threshold; bar: median); {mito_note}.</p>"
        f"{_img(image, 'QC metrics per condition')}"
    )


def _embedding_section(path: Path, summary: dict[str, Any], opts: ReportOptions) -> str:
    from geneattn.io.readers import read_stage_h5ad
    from geneattn.report.plots import embedding_scatter

    column = str(summary["condition_column"])
    keep = [str(k) for k in summary["keep"]]
    adata = read_stage_h5ad(path)
    if "X_geneattn" not in adata.obsm:
        raise InputError("no obsm['X_geneattn'] (cell embeddings)", path)
    if column not in adata.obs.columns:
        raise InputError(f"no condition column {column!r} in obs", path)
    x = np.asarray(adata.obsm["X_geneattn"], dtype=np.float64)
    if x.ndim != 2 or not np.all(np.isfinite(x)):
        raise InputError("obsm['X_geneattn'] is not a finite 2-D array", path)
    labels = adata.obs[column].astype(str).to_numpy()
    if x.shape[0] < 4:
        return f"<p>Only {x.shape[0]} cells: too few for a UMAP.</p>"
    n_cells = x.shape[0]
    drawn = ""
    if n_cells > opts.umap_cells:
        rng = np.random.default_rng(opts.seed)
        keep_rows = np.sort(rng.choice(n_cells, size=opts.umap_cells, replace=False))
        x, labels = x[keep_rows], labels[keep_rows]
        drawn = (
            f" The UMAP shows a random subsample of {opts.umap_cells:,} of the {n_cells:,} "
            f"cells (seed {opts.seed})."
        )
    coords = umap_coordinates(
        x, n_neighbors=opts.n_neighbors, seed=opts.seed, method=opts.neighbors_method
    )
    what = (
        f"{x.shape[0]} cell embeddings"
        if not drawn
        else f"{x.shape[0]:,} of {n_cells:,} cell embeddings (seeded subsample)"
    )
    image = embedding_scatter(coords, labels, keep, title=f"UMAP of {what} (X_geneattn)")
    return (
        f"<p>{n_cells} cells, {x.shape[1]}-dimensional embeddings (mean-pooled attention "
        f"output). scanpy neighbours ({_e(opts.neighbors_method)}, "
        f"{max(2, min(opts.n_neighbors, x.shape[0] - 1))} neighbours) and UMAP, both with "
        f"random_state={opts.seed}.{drawn}</p>{_img(image, 'UMAP of the cell embeddings')}"
    )


def _module_section(
    graph_path: Path,
    modules: pd.DataFrame,
    enrichment: pd.DataFrame,
    differential: pd.DataFrame,
    opts: ReportOptions,
    *,
    single: bool = False,
) -> str:
    from geneattn.report.plots import module_network

    nodes, edges_all = _read_graph(graph_path)
    if nodes and not nodes & set(modules["gene_id"].astype(str)):
        raise InputError("no node is a gene_id of the module table", graph_path)
    assigned = modules[modules["module"] > 0]
    sizes = assigned.groupby("module").size()
    # the largest modules get the panels when there are more modules than panels
    panels = sorted(
        sizes.sort_values(ascending=False, kind="stable").index[: opts.max_module_panels]
    )
    drawn = assigned[
        (assigned["hub_rank"] >= 1)
        & (assigned["hub_rank"] <= opts.hubs_per_module)
        & assigned["module"].isin(panels)
    ].sort_values(["module", "hub_rank"], kind="stable")
    module_of = dict(zip(drawn["gene_id"].astype(str), drawn["module"].astype(int), strict=True))
    edges = [
        (a, b)
        for a, b in edges_all
        if a in module_of and b in module_of and a != b and module_of[a] == module_of[b]
    ]
    n_between = sum(
        1
        for a, b in edges_all
        if a in module_of and b in module_of and module_of[a] != module_of[b]
    )
    # Genes without an edge to another drawn gene of their module would only float apart.
    linked = {g for edge in edges for g in edge}
    n_isolated = len(drawn) - int(drawn["gene_id"].astype(str).isin(linked).sum())
    drawn = drawn[drawn["gene_id"].astype(str).isin(linked)]

    best_set: dict[int, tuple[str, float]] = {}
    rows = []
    diff = differential.set_index("module")
    for module, genes in assigned.groupby("module", sort=True):
        hubs = genes.sort_values("hub_rank", kind="stable")["gene"].astype(str).tolist()[:5]
        sets = enrichment[enrichment["module"] == module].sort_values(
            ["fdr", "p_value", "gene_set"], kind="stable"
        )
        best = ""
        if len(sets):
            name, fdr = str(sets["gene_set"].iloc[0]), float(sets["fdr"].iloc[0])
            best_set[int(module)] = (name, fdr)
            best = _Raw(f"{_gene_set_name(name)} (FDR {_num(fdr)})")
        d = diff.loc[module] if module in diff.index else None
        comparison = (
            ()
            if single
            else (
                np.nan if d is None else float(d["diff"]),
                np.nan if d is None else float(d["fdr"]),
            )
        )
        rows.append((int(module), len(genes), ", ".join(hubs), *comparison, best))
    n_unassigned = int((modules["module"] <= 0).sum())
    header = [
        "module",
        "genes",
        "top hubs",
        *(() if single else ("case - control", "FDR")),
        "best gene set",
    ]
    overview = _html_table(header, rows)
    if drawn.empty:
        picture = "<p class='none'>No module genes to draw.</p>"
    else:
        titles = {}
        for module in panels:
            title = f"module {module}: {int(sizes[module])} genes"
            if module in best_set and best_set[module][1] < opts.fdr:
                title += "\n" + _shorten(best_set[module][0], 38)
            titles[int(module)] = title
        logger.info(
            "report: drawing %d module panels, %d genes, %d edges",
            len(panels),
            len(drawn),
            len(edges),
        )
        image = module_network(drawn, edges, n_labels=opts.hub_labels, titles=titles)
        picture = _img(image, "module network, one panel per module")
    left_out = (
        f" Only the {len(panels)} largest of the {len(sizes)} modules are drawn."
        if len(panels) < len(sizes)
        else ""
    )
    notes = {
        "module": "Leiden module of the gene network (modules.detect_on says of which cells).",
        "genes": "Number of genes in the module.",
        "top hubs": "The 5 genes with the highest intramodular connectivity (summed attention "
        "edge weight to the module's other genes), strongest first.",
        "case - control": "Mean attention between two genes of the module in the case cells "
        "minus that in the control cells (see the differential table below).",
        "FDR": "Benjamini-Hochberg FDR of the permutation test of that difference.",
        "best gene set": "The gene set most enriched in the module (lowest FDR; see the "
        "enrichment table).",
    }
    return (
        f"<p>{len(rows)} modules over {len(modules)} genes ({n_unassigned} in no module). "
        f"One panel per module: its {opts.hubs_per_module} strongest hubs and the "
        f"{len(edges)} network edges among them, node size by hub rank, the top "
        f"{opts.hub_labels} hubs labelled where a label fits. {len(drawn)} genes are drawn "
        f"({n_isolated} without an edge to another drawn gene of their module left out); "
        f"the {n_between} edges between hubs of different modules are not drawn. Kamada-Kawai "
        f"layout; the panel title names the best gene set at FDR &lt; {opts.fdr:g}.{left_out}"
        f"</p>{picture}"
        f"<h3>Modules</h3>{_scroll(overview)}{_column_notes(header, notes)}"
    )


def _tables_section(
    enrichment: pd.DataFrame,
    differential: pd.DataFrame,
    notes: list[str],
    evaluation: pd.DataFrame,
    opts: ReportOptions,
) -> str:
    significant = enrichment["fdr"] < opts.fdr
    ordered = enrichment.assign(_not_sig=~significant).sort_values(
        ["_not_sig", "module", "fdr", "p_value", "gene_set"], kind="stable"
    )
    top = ordered.groupby("module", sort=False).head(opts.top_enrichment)
    enr_rows = [
        (
            r.module,
            r.collection,
            _Raw(_gene_set_name(r.gene_set)),
            r.overlap,
            r.set_size,
            r.p_value,
            r.fdr,
            _Raw(_gene_list(r.genes)),
        )
        for r in top.itertuples(index=False)
    ]
    enr_header = ["module", "collection", "gene set", "overlap", "set size", "p", "FDR", "genes"]
    enr = _html_table(
        enr_header, enr_rows, marked=[bool(x) for x in (top["fdr"] < opts.fdr)], cls="enrichment"
    )
    universe = (
        int(enrichment["universe"].iloc[0])
        if "universe" in enrichment and len(enrichment)
        else None
    )
    in_universe = f" {universe:,}" if universe else ""
    enr_notes = {
        "module": "The module tested.",
        "collection": "The gene-set file (modules.gene_sets in the config).",
        "gene set": "The gene set.",
        "overlap": "Genes of the module in the set.",
        "set size": f"Genes of the set among the{in_universe} genes of the network (the universe "
        "of the test); sets with fewer than 3 are not tested.",
        "p": "One-sided hypergeometric p-value: the chance that a random set of genes as large "
        "as the module overlaps the set at least this much.",
        "FDR": "Benjamini-Hochberg FDR across all module x gene-set tests.",
        "genes": "The overlapping genes (click to see all of a long list).",
    }
    if len(differential):
        diff_columns = [c for c in differential.columns if c != "n_permutations"]
        diff = _scroll(
            _html_table(
                diff_columns,
                differential[diff_columns].itertuples(index=False),
                marked=[bool(x) for x in (differential["fdr"] < opts.fdr)],
            )
        )
        permutations = (
            f"{int(differential['n_permutations'].iloc[0]):,} "
            if "n_permutations" in differential
            else ""
        )
        diff_notes = {
            "module": "The module.",
            "size": "Genes in the module.",
            "n_pairs": "Ordered pairs of module genes present together in a cell, summed over "
            "the cells of both conditions: the weight behind the two means.",
            "case_mean": "Mean attention from one module gene to another in the case cells, "
            "weighted by the pairs each cell holds.",
            "control_mean": "The same in the control cells.",
            "diff": "case_mean - control_mean (positive: the module's genes attend to each "
            "other more in the case cells).",
            "p_value": f"Two-sided permutation p-value: the case and control labels shuffled "
            f"among the cells {permutations}times (group sizes kept).",
            "fdr": "Benjamini-Hochberg FDR across the modules.",
            "test": "cells: labels permuted among cells (modules.differential: cells); genes: "
            "against random gene sets (anti-conservative).",
        }
        diff_html = (
            "<p>Mean attention within each module, case vs control, permutation p-value and BH "
            f"FDR (bold: FDR &lt; {opts.fdr:g}).</p>{diff}{_column_notes(diff_columns, diff_notes)}"
        )
    else:
        diff_html = (
            "<p class='none'>No differential test: a single-condition study has no case and "
            "control cells to compare.</p>"
        )
    eval_columns = list(evaluation.columns)
    eval_table = _html_table(
        eval_columns, (_evaluation_row(r) for r in evaluation.to_dict("records"))
    )
    eval_notes = {
        "program": "A known gene program (evaluation.programs in the config) that meaningful "
        "modules should keep together.",
        "genes": "Genes of the program.",
        "in_network": "Of them, genes in a module of the network (the rest are outside the "
        "network's gene universe or in no module).",
        "together": "The largest number of them in one module.",
        "module": 'That module; "not in the network" when none of the program\'s genes is '
        "in a module.",
        "expected_together": "The same count for random gene sets of the same size (mean).",
        "p_value": "Fraction of random gene sets with at least as many genes together "
        "(permutation p-value); not tested with fewer than 2 genes in the network.",
        "members": "The program's genes in that module.",
    }
    note_html = "".join(f"<li>{_e(n)}</li>" for n in notes)
    n_sig = int(significant.sum())
    return (
        f"<h3>Gene-set enrichment</h3><p>{n_sig} of {len(enrichment)} module x gene-set tests "
        f"at FDR &lt; {opts.fdr:g} (bold). Significant rows first, at most "
        f"{opts.top_enrichment} per module.</p>{_scroll(enr)}"
        f"{_column_notes(enr_header, enr_notes)}"
        f"<h3>Differential attention per module</h3>{diff_html}"
        f"<h3>Evaluation</h3><ul>{note_html}</ul>{_scroll(eval_table)}"
        f"{_column_notes(eval_columns, eval_notes)}"
    )


def _module_analysis_section(
    traits_path: Path | None, preservation_path: Path | None, opts: ReportOptions
) -> str:
    """The module-condition association (``module_traits.tsv``) and the module preservation
    (``module_preservation.tsv``) tables, each column explained."""
    from geneattn.module_study import PRESERVATION_COLUMNS, TRAIT_COLUMNS

    if traits_path is None or preservation_path is None:
        return (
            "<p class='none'>No module analysis: the report was built without "
            "module_traits.tsv and module_preservation.tsv.</p>"
        )
    traits = read_tsv(
        traits_path,
        TRAIT_COLUMNS,
        numeric=[c for c in TRAIT_COLUMNS if c != "unit"],
    )
    preservation = read_tsv(
        preservation_path,
        PRESERVATION_COLUMNS,
        numeric=[c for c in PRESERVATION_COLUMNS if c not in ("reference", "test")],
    )
    lead = (
        "<p>hdWGCNA-style analysis of the modules over the QC'd cells: each module's eigengene "
        "(the first principal component of its genes' z-scored log-normalised expression, one "
        "value per cell, in <code>module_eigengenes.tsv</code>) and each gene's kME (its "
        "correlation with the eigengene; hubs by kME and weak members in "
        "<code>module_kme.tsv</code>).</p>"
    )
    if traits.empty:
        trait_html = (
            "<p class='none'>No module-condition association: the study has no case and "
            "control cells to compare.</p>"
        )
    else:
        units = sorted(set(traits["unit"].astype(str)))
        caveat = (
            " Without a sample column (<code>conditions.sample</code>) the test treats cells "
            "as independent replicates, which they are not when they come from few donors."
            if "cells" in units
            else ""
        )
        columns = list(TRAIT_COLUMNS)
        trait_html = (
            f"<p>Does a module's eigengene differ between case and control cells? Bold: FDR "
            f"&lt; {opts.fdr:g}.{caveat}</p>"
            + _scroll(
                _html_table(
                    columns,
                    traits[columns].itertuples(index=False),
                    marked=[bool(x) for x in (traits["fdr"] < opts.fdr)],
                )
            )
            + _column_notes(
                columns,
                {
                    "module": "The module.",
                    "n_genes": "Its genes found in the counts (those the eigengene is made of).",
                    "variance_explained": "Fraction of the variance of the module's z-scored "
                    "genes on the eigengene (1: the genes move as one).",
                    "case_mean": "Mean eigengene of the case cells, averaged per sample first "
                    "when the unit is samples.",
                    "control_mean": "The same for the control cells.",
                    "diff": "case_mean - control_mean, in standard deviations of the eigengene "
                    "over all cells.",
                    "n_units": "The units compared: samples with cells of both conditions "
                    "(samples_paired), sample x condition means (samples) or cells (cells).",
                    "unit": "samples_paired: per-sample case minus control, sign-flip "
                    "permutation test; samples: per-sample means, sample labels permuted; "
                    "cells: cell labels permuted (cells treated as replicates).",
                    "p_value": "Two-sided permutation p-value (exact when the relabellings "
                    "are few, else modules.trait_permutations random draws).",
                    "fdr": "Benjamini-Hochberg FDR across the modules.",
                },
            )
        )
    if preservation.empty:
        preservation_html = (
            "<p class='none'>No module preservation: it compares the control network with "
            "the case network, and the study has one network.</p>"
        )
    else:
        columns = list(PRESERVATION_COLUMNS)
        reference = str(preservation["reference"].iloc[0])
        test = str(preservation["test"].iloc[0])
        preservation_html = (
            f"<p>Is each module's structure in the {_e(reference)} network's mean attention "
            f"kept in the {_e(test)} network's? Zsummary-like statistics (WGCNA's "
            "modulePreservation reads Zsummary &gt; 10 as strong evidence of preservation, "
            "2 to 10 as moderate, &lt; 2 as none).</p>"
            + _scroll(_html_table(columns, preservation[columns].itertuples(index=False)))
            + _column_notes(
                columns,
                {
                    "module": "The module.",
                    "size": "Its genes in the networks.",
                    "mean_weight": "Density: mean attention between two of its genes in the "
                    "test network (pairs never seen together count 0).",
                    "cor_weight": "Correlation of the module's pair weights between the "
                    "reference and the test network.",
                    "cor_kim": "Correlation of its genes' intramodular connectivity (summed "
                    "weight to the module's other genes) between the two networks.",
                    "z_density": "mean_weight standardised against random gene sets of the "
                    "module's size (modules.preservation_permutations of them): "
                    "(observed - mean) / sd.",
                    "z_connectivity": "The median of the Zs of cor_weight and cor_kim, "
                    "standardised the same way.",
                    "z_summary": "(z_density + z_connectivity) / 2.",
                    "p_density": "One-sided permutation p-value of the density: the fraction "
                    "of random gene sets at least as dense (with one added to both counts).",
                    "reference": "The network the module's pair weights and connectivity are "
                    "compared from (the control network).",
                    "test": "The network they are compared with (the case network).",
                },
            )
        )
    return (
        f"{lead}<h3>Module-condition association</h3>{trait_html}"
        f"<h3>Module preservation</h3>{preservation_html}"
    )


def _evaluation_row(row: dict[str, Any]) -> list[Any]:
    """A row of the evaluation table, saying so when the program is (nearly) not in the network."""
    out = []
    n = int(row.get("in_network", 0))
    for column, value in row.items():
        if n < 2 and column in ("module", "expected_together", "p_value"):
            if column == "module":
                value = "not in the network" if n == 0 else "only 1 gene in the network"
            else:
                value = ""
        elif column == "members":
            value = ", ".join(value.split(",")) if isinstance(value, str) else ""
        out.append(value)
    return out


def _perturbation_section(
    table: pd.DataFrame | None, opts: ReportOptions, *, single: bool = False
) -> str:
    from geneattn.report.plots import MODES, volcano

    if table is None:
        return "<p class='none'>No perturbation results: the report was built without them.</p>"
    if table.empty:
        return "<p class='none'>No perturbation results: the table has no rows.</p>"
    modes = table["mode"].astype(str)
    significant = table["fdr"] < opts.fdr
    # Without a goal state (single-condition study) the shifts are not directed.
    goal = bool(table["mean_goal_shift"].notna().any())
    towards = significant & (table["mean_goal_shift"] > 0)
    summary_rows = [
        (
            mode,
            int(chosen.sum()),
            int((chosen & significant).sum()),
            *((int((chosen & towards).sum()),) if goal else ()),
        )
        for mode in MODES
        if (chosen := modes == mode).any()
    ]
    summary = _html_table(
        [
            "mode",
            "genes tested",
            f"FDR < {opts.fdr:g}",
            *(("of them towards control",) if goal else ()),
        ],
        summary_rows,
    )
    columns = [c for c in PERTURBATION_COLUMNS if goal or c != "mean_goal_shift"]
    head = table.head(opts.perturbation_rows)
    ranking = _html_table(
        ["rank", *columns],
        [
            (i + 1, *(_perturbation_cell(c, v) for c, v in zip(columns, row, strict=True)))
            for i, row in enumerate(head[columns].itertuples(index=False))
        ],
        marked=significant.head(opts.perturbation_rows).tolist(),
    )
    image = volcano(table, fdr=opts.fdr, n_labels=opts.volcano_labels)
    shift = "goal shifts" if goal else "cosine shifts"
    cells = "case cells" if not single else "cells"
    notes = {
        "rank": "Position in the table, sorted by the "
        + ("mean goal shift (largest first)." if goal else "mean cosine shift (largest first)."),
        "gene": "The perturbed gene (symbol).",
        "ensembl_id": "Its Ensembl ID (the token of the model's vocabulary).",
        "module": 'Its module; "no module" when it is in the network but in no module, '
        '"not in the network" when it is outside the network\'s gene universe.',
        "mode": "delete: the gene's token removed from the cell; overexpress: moved to the front "
        "(inserted if absent); inhibit / activate: moved down / up by perturb.shift of the "
        "sequence.",
        "n_cells": f"The {cells} that express the gene, each perturbed once.",
        "mean_cosine_shift": "Mean over those cells of 1 - cos(original, perturbed cell "
        "embedding): how far the perturbation moves a cell at all (0: not at all).",
        "mean_goal_shift": "Mean of cos(perturbed, control centroid) - cos(original, control "
        "centroid): positive moves the case cell toward the control cells' state.",
        "statistic": f"Effect size of the rank-sum test, the rank-biserial correlation "
        f"2U / (n1 n2) - 1 between the gene's per-cell {shift} and those of null genes (random "
        "expressed genes of the same expression-frequency decile, perturbed the same way): +1 "
        f"when every cell's shift is larger than every null shift, 0 when they do not differ, "
        "-1 when every one is smaller.",
        "p_value": f"Two-sided Wilcoxon rank-sum (Mann-Whitney U) test of the gene's {shift} "
        "against the null genes'.",
        "fdr": "Benjamini-Hochberg FDR across the perturbed genes.",
    }
    note = (
        ""
        if goal
        else "<p>No goal state (no control cells): the plot and the test use the cosine "
        "shift, how far a perturbation moves a cell in any direction.</p>"
    )
    return (
        f"{summary}{note}{_img(image, 'perturbation volcano plot')}<h3>Ranking</h3><p>The first "
        f"{len(head)} of {len(table)} rows, in the order of the table (bold: FDR &lt; "
        f"{opts.fdr:g}).</p>{_scroll(ranking)}{_column_notes(['rank', *columns], notes)}"
    )


def _perturbation_cell(column: str, value: Any) -> Any:
    if column == "module" and _is_number(value) and np.isfinite(value) and int(value) <= 0:
        return "no module" if int(value) == 0 else "not in the network"
    return value


def _skipped_section(path: Path | None) -> str:
    """The genes asked for that were not perturbed (``perturbation/skipped.tsv``), and why;
    nothing when every gene asked for was perturbed."""
    if path is None:
        return ""
    table = read_tsv(
        path,
        ("gene", "gene_id", "module", "reason", "case_cells"),
        numeric=("module", "case_cells"),
    )
    if table.empty:
        return ""
    why = {
        "not_in_vocabulary": "not in the token vocabulary",
        "too_few_case_cells": "expressed in too few case cells (perturb.min_cells)",
        "over_max_genes": "beyond perturb.max_genes",
    }
    rows = [
        (
            r.gene,
            r.gene_id if isinstance(r.gene_id, str) and r.gene_id else "",
            int(r.module) if _is_number(r.module) and r.module > 0 else "listed",
            why.get(str(r.reason), str(r.reason)),
            int(r.case_cells) if _is_number(r.case_cells) and r.case_cells >= 0 else "",
        )
        for r in table.itertuples(index=False)
    ]
    return (
        f"<h3>Genes not perturbed</h3><p>{len(rows)} of the genes asked for (listed in "
        "<code>perturb.genes</code>, or top hubs of a disease module, each replaced by the "
        "module's next hub) were skipped; <code>perturbation/skipped.tsv</code> lists them.</p>"
        + _html_table(["gene", "Ensembl ID", "module", "why", "case cells"], rows)
    )


def _gene_shift_section(path: Path | None, opts: ReportOptions) -> str:
    """The genes each target moves most (Geneformer's gene-level shifts), when given."""
    if path is None:
        return ""
    columns = ("perturbed_gene", "affected_gene", "cosine_sim_mean", "cosine_sim_stdev")
    table = read_tsv(
        path,
        (*columns, "n_detections"),
        numeric=("cosine_sim_mean", "cosine_sim_stdev", "n_detections"),
    )
    if table.empty:
        return "<h3>Gene-level shifts</h3><p class='none'>No gene-level shifts.</p>"
    top = (
        table.sort_values(["perturbed_gene", "cosine_sim_mean"], kind="mergesort")
        .groupby("perturbed_gene", sort=True)
        .head(opts.gene_shift_rows)
    )
    rows = top[[*columns, "n_detections"]].itertuples(index=False)
    return (
        f"<h3>Gene-level shifts</h3><p>For each perturbed gene, the {opts.gene_shift_rows} "
        "genes whose own state moved most (lowest mean cosine between their states with and "
        "without the perturbation, Geneformer's <code>cell_and_gene</code>), over "
        f"{table['perturbed_gene'].nunique()} perturbed genes; all pairs are in "
        f"<code>gene_shifts.tsv</code>.</p>"
        + _html_table(["perturbed", "affected", "mean cosine", "sd", "cells"], list(rows))
    )


def _read_graph(path: Path) -> tuple[set[str], list[tuple[str, str]]]:
    """Node IDs and edges (each once, in file order) of a GraphML file."""
    from xml.etree.ElementTree import ParseError

    import networkx as nx

    try:
        graph = nx.read_graphml(path)
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except (ParseError, nx.NetworkXError, ValueError, KeyError, OSError) as err:
        raise InputError(f"not GraphML ({' '.join(str(err).split())})", path) from None
    return {str(n) for n in graph.nodes}, [(str(a), str(b)) for a, b in graph.edges()]


# -- HTML ---------------------------------------------------------------------------------

_CSS = """
body { font-family: sans-serif; margin: 0 auto; max-width: 1200px; padding: 0 1.5em 3em;
  color: #222; line-height: 1.4; }
h1 { margin-bottom: 0.2em; }
h2 { border-bottom: 2px solid #ccc; padding-top: 0.8em; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.85em; }
th, td { border: 1px solid #ddd; padding: 2px 6px; vertical-align: top; }
th { background: #f2f2f2; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
div.scroll { max-width: 100%; overflow-x: auto; }
table.enrichment td:last-child { min-width: 16em; max-width: 28em; }
details.genes summary { cursor: pointer; }
details.columns { font-size: 0.85em; color: #444; margin: -0.3em 0 1.2em; }
details.columns summary { cursor: pointer; color: #666; }
details.columns dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.15em 1em;
  margin: 0.4em 0 0; }
details.columns dt { font-family: monospace; }
details.columns dd { margin: 0; }
tr.sig td { font-weight: bold; }
pre { background: #f7f7f7; padding: 0.6em; font-size: 0.8em; max-height: 28em; overflow: auto; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
.cols { display: flex; flex-wrap: wrap; gap: 2em; }
.cols > div { flex: 1 1 22em; min-width: 0; }
p.none { font-style: italic; color: #666; }
footer { margin-top: 3em; font-size: 0.8em; color: #666; }
"""


def _document(study: str, header: str, sections: Sequence[tuple[str, str, str]]) -> str:
    from geneattn import __version__

    nav = "".join(f"<a href='#{key}'>{_e(title)}</a>" for key, title, _ in sections)
    body = "".join(
        f"<section id='{key}'><h2>{_e(title)}</h2>{content}</section>\n"
        for key, title, content in sections
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        f"<title>geneattn report: {_e(study)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>geneattn report: {_e(study)}</h1>\n<nav>{nav}</nav>\n"
        f"<section id='study'>{header}</section>\n{body}"
        f"<footer>Written by geneattn {_e(__version__)} (<code>geneattn report</code>). "
        "Self-contained: figures are embedded, nothing is loaded from elsewhere.</footer>\n"
        "</body>\n</html>\n"
    )


class _Raw(str):
    """A table cell that is HTML already (not escaped again)."""


def _html_table(
    header: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    marked: Sequence[bool] | None = None,
    cls: str | None = None,
) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        sig = " class='sig'" if marked is not None and marked[i] else ""
        cells = "".join(_cell(v) for v in row)
        body.append(f"<tr{sig}>{cells}</tr>")
    table_cls = f" class='{cls}'" if cls else ""
    return f"<table{table_cls}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _cell(value: Any) -> str:
    if isinstance(value, _Raw):
        return f"<td>{value}</td>"
    if _is_number(value):
        return f"<td class='n'>{_num(value)}</td>"
    return f"<td>{_e(_text(value))}</td>"


def _scroll(table: str) -> str:
    """A table that scrolls sideways inside the page instead of widening it."""
    return f"<div class='scroll'>{table}</div>"


def _column_notes(columns: Sequence[str], notes: dict[str, str]) -> str:
    """What each column of a table means, for the columns shown that have a note."""
    items = "".join(f"<dt>{_e(c)}</dt><dd>{_e(notes[c])}</dd>" for c in columns if c in notes)
    if not items:
        return ""
    return (
        "<details class='columns' open><summary>What the columns mean</summary>"
        f"<dl>{items}</dl></details>"
    )


def _is_single_condition(summary: dict[str, Any]) -> bool:
    """One group of cells (``conditions: null``): no case vs control."""
    return len(summary["keep"]) < 2


def _gene_set_name(name: Any) -> str:
    """A gene-set name as HTML that may wrap after its underscores (long Reactome names)."""
    return _e(_text(name)).replace("_", "_<wbr>")


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def _num(value: Any) -> str:
    if isinstance(value, int | np.integer):
        return str(int(value))
    value = float(value)
    if not np.isfinite(value):
        return "NA"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "NA"
    return str(value)


def _threshold(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return _num(value) if _is_number(value) else str(value)


def _gene_list(genes: Any, shown: int = 8) -> str:
    """The genes as HTML: all of them when few, else the first ``shown`` and a toggle."""
    names = [] if not isinstance(genes, str) else [g for g in genes.split(",") if g]
    if len(names) <= shown:
        return _e(", ".join(names))
    rest = len(names) - shown
    return (
        f"<details class='genes'><summary>{_e(', '.join(names[:shown]))} \u2026 "
        f"(+{rest} more)</summary>{_e(', '.join(names[shown:]))}</details>"
    )


def _img(uri: str, alt: str) -> str:
    return f"<img alt='{_e(alt)}' src='{uri}'>"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)

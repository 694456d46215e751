"""The figures of the HTML report, as PNG ``data:`` URIs.

Every figure is drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas (no
pyplot state), at a fixed size and dpi, and saved without software or date metadata, so the
bytes depend only on the data and the installed matplotlib. Random choices (point jitter,
the spring layout) use fixed seeds.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Colours of the conditions, in the order case, control (then any others).
CONDITION_COLOURS = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b")
#: Colour of genes outside any module (module 0).
UNASSIGNED_COLOUR = "#bbbbbb"
#: Perturbation modes, in the order the volcano plot lists them.
MODES = ("delete", "overexpress", "inhibit", "activate")
_MODE_STYLE = {
    "delete": ("#d62728", "v"),
    "overexpress": ("#1f77b4", "^"),
    "inhibit": ("#ff7f0e", "s"),
    "activate": ("#2ca02c", "D"),
}


def new_figure(width: float, height: float) -> Figure:
    """A figure with the Agg canvas, 100 dpi and constrained layout."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_data_uri(fig: Figure) -> str:
    """The figure as a ``data:image/png;base64,...`` URI (no software or date metadata)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def module_colour(module: int) -> str:
    """Colour of a module: grey for 0 (unassigned), else a cycle over ``tab20``."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    if module <= 0:
        return UNASSIGNED_COLOUR
    return to_hex(colormaps["tab20"]((module - 1) % 20))


def place_labels(
    ax: Axes,
    xy: np.ndarray,
    texts: Sequence[str],
    *,
    fontsize: float = 7,
    outline: bool = False,
) -> None:
    """Label points, moving a label up or down when it would overlap one placed before.

    Greedy and deterministic: labels are placed in the given order, each at the first of a
    few candidate offsets whose (estimated) box is free; a moved label gets a thin leader line.
    Call after the points are drawn and the limits are final.
    """
    from matplotlib import patheffects

    if len(texts) == 0:
        return
    fig = ax.get_figure()
    fig.draw_without_rendering()
    px_per_pt = fig.dpi / 72.0
    anchors = ax.transData.transform(np.asarray(xy, dtype=np.float64).reshape(-1, 2))
    height = 1.25 * fontsize
    placed: list[tuple[float, float, float, float]] = []
    shifts = [0.0, 1.0, -1.0, 2.0, -2.0, 3.0, -3.0, 4.0]
    effects = [patheffects.withStroke(linewidth=2.5, foreground="white")] if outline else None
    for (x0, y0), text in zip(anchors, texts, strict=True):
        width = 0.6 * fontsize * len(text)
        chosen = None
        for k in shifts:
            dx, dy = 3.0, 2.0 + k * height
            box = (
                x0 + dx * px_per_pt,
                y0 + dy * px_per_pt,
                x0 + (dx + width) * px_per_pt,
                y0 + (dy + height) * px_per_pt,
            )
            if not any(
                box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed
            ):
                chosen = (dx, dy, box)
                break
        if chosen is None:
            dx, dy = 3.0, 2.0
            box = (x0, y0, x0 + width * px_per_pt, y0 + height * px_per_pt)
        else:
            dx, dy, box = chosen
        placed.append(box)
        ax.annotate(
            text,
            ax.transData.inverted().transform((x0, y0)),
            xytext=(dx, dy),
            textcoords="offset points",
            fontsize=fontsize,
            path_effects=effects,
            arrowprops=(
                {"arrowstyle": "-", "linewidth": 0.4, "color": "#555555", "shrinkA": 0}
                if dy != 2.0
                else None
            ),
        )


def qc_violins(
    cells: pd.DataFrame,
    column: str,
    conditions: Sequence[str],
    panels: Sequence[tuple[str, str, float | None]],
) -> str:
    """Per-condition distributions of per-cell QC metrics, one panel per metric.

    Parameters
    ----------
    cells
        One row per cell, with the condition ``column`` and each metric of ``panels``.
    column
        The condition column.
    conditions
        The conditions to draw, in order.
    panels
        ``(metric, title, threshold)`` per panel; a threshold that is not None is drawn as a
        dashed line.

    Returns
    -------
    str
        The PNG as a data URI.
    """
    fig = new_figure(4.2 * len(panels), 3.8)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    labels = cells[column].astype(str).to_numpy()
    rng = np.random.default_rng(0)
    for ax, (metric, title, threshold) in zip(axes, panels, strict=True):
        values = cells[metric].to_numpy(dtype=np.float64)
        for i, condition in enumerate(conditions):
            chosen = values[(labels == condition) & np.isfinite(values)]
            colour = CONDITION_COLOURS[i % len(CONDITION_COLOURS)]
            if chosen.size >= 2 and np.ptp(chosen) > 0:
                body = ax.violinplot([chosen], positions=[i], widths=0.8, showextrema=False)
                for patch in body["bodies"]:
                    patch.set_facecolor(colour)
                    patch.set_alpha(0.3)
            jitter = rng.uniform(-0.15, 0.15, chosen.size)
            ax.scatter(i + jitter, chosen, s=4, color=colour, alpha=0.6, linewidths=0)
            if chosen.size:
                ax.hlines(np.median(chosen), i - 0.3, i + 0.3, color="black", linewidth=1.5)
        if threshold is not None:
            ax.axhline(threshold, color="black", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(conditions)))
        ax.set_xticklabels(
            [f"{c}\n(n={int((labels == c).sum())})" for c in conditions], fontsize="small"
        )
        ax.set_title(title, fontsize="medium")
        ax.set_ylabel(metric)
    return png_data_uri(fig)


def embedding_scatter(
    coords: np.ndarray, labels: Sequence[str], conditions: Sequence[str], *, title: str
) -> str:
    """Cells on a 2-D embedding, coloured by condition (drawn in the order of ``conditions``).

    Returns
    -------
    str
        The PNG as a data URI.
    """
    fig = new_figure(6.0, 5.0)
    ax = fig.subplots()
    labels = np.asarray(labels, dtype=str)
    for i, condition in enumerate(conditions):
        chosen = labels == condition
        ax.scatter(
            coords[chosen, 0],
            coords[chosen, 1],
            s=14,
            color=CONDITION_COLOURS[i % len(CONDITION_COLOURS)],
            alpha=0.75,
            linewidths=0,
            label=f"{condition} (n={int(chosen.sum())})",
        )
    ax.set_xlabel("UMAP1")
    ax.set_ylabel("UMAP2")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize="medium")
    ax.legend(frameon=False, fontsize="small", markerscale=1.5)
    return png_data_uri(fig)


def module_network(
    nodes: pd.DataFrame,
    edges: Sequence[tuple[str, str]],
    *,
    n_labels: int = 3,
    seed: int = 0,
) -> str:
    """The module network: spring layout, nodes coloured by module, top hubs labelled.

    Parameters
    ----------
    nodes
        One row per drawn gene with ``gene_id``, ``gene`` (label), ``module`` and
        ``hub_rank``; drawn in this order.
    edges
        Pairs of ``gene_id`` among ``nodes``.
    n_labels
        Label the genes of hub rank 1 to ``n_labels`` of every module.
    seed
        Seed of the spring layout.

    Returns
    -------
    str
        The PNG as a data URI.
    """
    import networkx as nx
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D

    module_of = dict(zip(nodes["gene_id"].tolist(), nodes["module"].tolist(), strict=True))
    graph = nx.Graph()
    graph.add_nodes_from(nodes["gene_id"].tolist())
    # Layout weights: 1 within a module, 0.1 across, so that modules form their own clusters
    # (attention weights themselves are tiny and would let repulsion dominate).
    graph.add_edges_from(
        (a, b, {"layout": 1.0 if module_of[a] == module_of[b] else 0.1}) for a, b in edges
    )
    pos = nx.spring_layout(graph, seed=seed, weight="layout", iterations=200)
    xy = np.array([pos[g] for g in nodes["gene_id"].tolist()]).reshape(-1, 2)
    index = {g: i for i, g in enumerate(nodes["gene_id"].tolist())}

    fig = new_figure(10.0, 8.0)
    ax = fig.subplots()
    if edges:
        segments = [(xy[index[a]], xy[index[b]]) for a, b in edges]
        ax.add_collection(LineCollection(segments, colors="#888888", linewidths=0.4, alpha=0.25))
    modules = nodes["module"].to_numpy(dtype=np.int64)
    ranks = nodes["hub_rank"].to_numpy(dtype=np.int64)
    sizes = np.where(ranks > 0, 12.0 + 90.0 / np.sqrt(np.maximum(ranks, 1)), 8.0)
    colours = [module_colour(int(m)) for m in modules]
    ax.scatter(xy[:, 0], xy[:, 1], s=sizes, c=colours, linewidths=0.3, edgecolors="white")
    shown = sorted({int(m) for m in modules})
    handles = [
        Line2D(
            [],
            [],
            marker="o",
            linestyle="",
            color=module_colour(m),
            label="unassigned" if m == 0 else f"module {m} ({int((modules == m).sum())})",
        )
        for m in shown
    ]
    ax.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        frameon=False,
        fontsize="small",
        title="genes drawn",
        title_fontsize="small",
    )
    ax.set_axis_off()
    ax.autoscale_view()
    # Labels by hub rank first (every module's top hub gets the free spot), then module.
    chosen = np.flatnonzero((ranks >= 1) & (ranks <= n_labels) & (modules > 0))
    chosen = chosen[np.lexsort((modules[chosen], ranks[chosen]))]
    place_labels(ax, xy[chosen], [str(nodes["gene"].iloc[i]) for i in chosen], outline=True)
    return png_data_uri(fig)


def volcano(table: pd.DataFrame, *, fdr: float = 0.05, n_labels: int = 12) -> str:
    """Perturbation volcano: mean goal shift against -log10 FDR, significant genes by mode.

    Parameters
    ----------
    table
        The perturbation table (``gene``, ``mode``, ``mean_goal_shift``,
        ``mean_cosine_shift``, ``fdr``); rows with a missing FDR or shift are left out. Without
        any goal shift (a single-condition study) the x axis is the mean cosine shift.
    fdr
        Significance threshold (drawn as a dashed line).
    n_labels
        Label this many significant rows: smallest FDR first, then largest absolute shift.

    Returns
    -------
    str
        The PNG as a data URI.
    """
    goal = bool(np.isfinite(table["mean_goal_shift"]).any())
    column = "mean_goal_shift" if goal else "mean_cosine_shift"
    data = table[np.isfinite(table["fdr"]) & np.isfinite(table[column])]
    x = data[column].to_numpy(dtype=np.float64)
    q = data["fdr"].to_numpy(dtype=np.float64)
    positive = q[q > 0]
    floor = positive.min() / 10 if positive.size else 1e-300
    y = -np.log10(np.clip(q, floor, 1.0))
    significant = q < fdr
    modes = data["mode"].astype(str).to_numpy()

    fig = new_figure(7.5, 5.5)
    ax = fig.subplots()
    ax.scatter(
        x[~significant],
        y[~significant],
        s=10,
        color="#aaaaaa",
        linewidths=0,
        label=f"FDR ≥ {fdr:g} ({int((~significant).sum())})",
    )
    for mode in MODES:
        chosen = significant & (modes == mode)
        if chosen.any():
            colour, marker = _MODE_STYLE[mode]
            ax.scatter(
                x[chosen],
                y[chosen],
                s=22,
                color=colour,
                marker=marker,
                linewidths=0,
                label=f"{mode}, FDR < {fdr:g} ({int(chosen.sum())})",
            )
    ax.axhline(-np.log10(fdr), color="black", linestyle="--", linewidth=0.8)
    ax.axvline(0.0, color="black", linewidth=0.6)
    order = np.lexsort((data["gene"].astype(str).to_numpy(), -np.abs(x), q))
    labelled = [i for i in order if significant[i]][:n_labels]
    several_modes = len(set(modes.tolist())) > 1
    ax.set_xlabel(
        "mean goal shift (positive: towards the control state)"
        if goal
        else "mean cosine shift (1 - cosine similarity, original vs perturbed)"
    )
    ax.set_ylabel("-log10 FDR")
    ax.set_title("In-silico perturbation", fontsize="medium")
    ax.legend(frameon=False, fontsize="small")
    labels = [
        str(data["gene"].iloc[i]) + (f" ({modes[i]})" if several_modes else "") for i in labelled
    ]
    place_labels(ax, np.column_stack([x[labelled], y[labelled]]), labels)
    return png_data_uri(fig)

"""The figures of the HTML report: each ``*_figure`` function returns a matplotlib Figure
(:mod:`geneattn.pl` shows them), and the function of the same name without ``_figure``
returns it as the PNG ``data:`` URI the report embeds.

Every figure is drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas (no
pyplot state), at a fixed size and dpi, and saved without software or date metadata, so the
bytes depend only on the data and the installed matplotlib. Random choices (point jitter)
use fixed seeds; layouts are deterministic.
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
    from matplotlib.transforms import Bbox

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
    avoid_points: np.ndarray | None = None,
) -> list[Bbox]:
    """Label points so that no two labels overlap and every label stays inside the axes.

    Greedy and deterministic: labels are placed in the given order (most important first),
    each at the first free spot of a ring of candidates around its point (right, left,
    above, below, then the diagonals, then the same further out, with a thin leader line).
    "Free" is measured on the rendered text: its box must not overlap a label placed before
    or the legend and, where possible, not the markers of ``avoid_points`` (default: the
    labelled points).
    A label without any free spot is left out. Call after the points are drawn and the
    limits are final; the figure's layout engine is then switched off so that saving does
    not move the axes under the labels.

    Returns
    -------
    list of matplotlib.transforms.Bbox
        The display boxes of the labels placed, in the order placed.
    """
    from matplotlib import patheffects
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    fig = ax.get_figure()
    fig.draw_without_rendering()
    fig.set_layout_engine("none")
    if len(texts) == 0:
        return []
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    anchors = ax.transData.transform(np.asarray(xy, dtype=np.float64).reshape(-1, 2))
    points = anchors if avoid_points is None else ax.transData.transform(avoid_points)
    radius = 3.0 * fig.dpi / 72.0  # a marker's half-width, in pixels
    markers = [Bbox.from_extents(x - radius, y - radius, x + radius, y + radius) for x, y in points]
    legend = ax.get_legend()
    # never under the legend, even as a last resort
    fixed = [] if legend is None else [legend.get_window_extent(renderer)]
    effects = [patheffects.withStroke(linewidth=2.5, foreground="white")] if outline else None
    pad = 1.0  # pixels between two labels
    placed: list[Bbox] = []

    def fits(box: Bbox, obstacles: list[Bbox]) -> bool:
        if not (frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0):
            return False
        if box.y1 > frame.y1:
            return False
        grown = Bbox.from_extents(box.x0 - pad, box.y0 - pad, box.x1 + pad, box.y1 + pad)
        return not any(grown.overlaps(b) for b in obstacles)

    for (x0, y0), text in zip(anchors, texts, strict=True):
        anchor = ax.transData.inverted().transform((x0, y0))
        chosen = None
        for obstacles in (fixed + placed + markers, fixed + placed):  # markers if possible
            for dx, dy, ha, va in _label_candidates():
                probe = ax.annotate(
                    text,
                    anchor,
                    xytext=(dx, dy),
                    textcoords="offset points",
                    ha=ha,
                    va=va,
                    fontsize=fontsize,
                    annotation_clip=False,
                )
                probe.update_positions(renderer)
                box = Text.get_window_extent(probe, renderer)
                probe.remove()
                if fits(box, obstacles):
                    chosen = (dx, dy, ha, va)
                    break
            if chosen is not None:
                break
        if chosen is None:
            continue
        dx, dy, ha, va = chosen
        leader = abs(dx) > 4 or abs(dy) > 4  # moved away from its point
        ax.annotate(
            text,
            anchor,
            xytext=(dx, dy),
            textcoords="offset points",
            ha=ha,
            va=va,
            fontsize=fontsize,
            path_effects=effects,
            annotation_clip=False,
            arrowprops=(
                {
                    "arrowstyle": "-",
                    "linewidth": 0.4,
                    "color": "#555555",
                    "shrinkA": 0,
                    "shrinkB": 2,
                }
                if leader
                else None
            ),
        )
        placed.append(box)
    return placed


def _label_candidates() -> list[tuple[float, float, str, str]]:
    """Offsets (points) and alignments of a label around its point, nearest first."""
    out = []
    for r in (3.0, 8.0, 14.0, 22.0, 32.0):
        d = r * 0.7
        out += [
            (r, 0.0, "left", "center"),
            (-r, 0.0, "right", "center"),
            (0.0, r, "center", "bottom"),
            (0.0, -r, "center", "top"),
            (d, d, "left", "bottom"),
            (-d, d, "right", "bottom"),
            (d, -d, "left", "top"),
            (-d, -d, "right", "top"),
        ]
    return out


def qc_violins_figure(
    cells: pd.DataFrame,
    column: str,
    conditions: Sequence[str],
    panels: Sequence[tuple[str, str, float | None]],
) -> Figure:
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
    Figure
        The figure (:func:`png_data_uri` makes the report's PNG).
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
    return fig


def embedding_scatter_figure(
    coords: np.ndarray, labels: Sequence[str], conditions: Sequence[str], *, title: str
) -> Figure:
    """Cells on a 2-D embedding, coloured by condition (drawn in the order of ``conditions``).

    Returns
    -------
    Figure
        The figure (:func:`png_data_uri` makes the report's PNG).
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
    return fig


def module_network_figure(
    nodes: pd.DataFrame,
    edges: Sequence[tuple[str, str]],
    *,
    n_labels: int = 5,
    titles: dict[int, str] | None = None,
    n_cols: int = 4,
) -> Figure:
    """The module network, one panel per module: see :func:`draw_module_network`.

    Returns
    -------
    Figure
        The figure (:func:`png_data_uri` makes the report's PNG).
    """
    return draw_module_network(nodes, edges, n_labels=n_labels, titles=titles, n_cols=n_cols)


def draw_module_network(
    nodes: pd.DataFrame,
    edges: Sequence[tuple[str, str]],
    *,
    n_labels: int = 5,
    titles: dict[int, str] | None = None,
    n_cols: int = 4,
) -> Figure:
    """Draw each module's hub genes and the edges among them in a panel of its own.

    A panel per module (in module order, ``n_cols`` per row) holds that module's genes of
    ``nodes`` and the ``edges`` between two of them, in a Kamada-Kawai layout (which spreads
    a small graph over its panel; deterministic), node size by hub rank, the module's
    colour, and its top ``n_labels`` hubs labelled where a label fits without overlapping
    another (:func:`place_labels`). Edges between modules are not drawn.

    Parameters
    ----------
    nodes
        One row per drawn gene with ``gene_id``, ``gene`` (label), ``module`` (> 0) and
        ``hub_rank``.
    edges
        Pairs of ``gene_id`` among ``nodes``.
    n_labels
        Label the genes of hub rank 1 to ``n_labels`` of every module.
    titles
        Panel title per module (default: ``module {m}``).
    n_cols
        Panels per row.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (Agg canvas); its axes' ``texts`` are the gene labels.
    """
    import networkx as nx
    from matplotlib.collections import LineCollection

    modules = sorted({int(m) for m in nodes["module"].tolist()})
    n_cols = max(1, min(n_cols, len(modules)))
    n_rows = max(1, -(-len(modules) // n_cols))
    fig = new_figure(3.2 * n_cols, 3.3 * n_rows)
    axes = np.atleast_1d(fig.subplots(n_rows, n_cols)).ravel()
    within = {}
    module_of = dict(zip(nodes["gene_id"].tolist(), nodes["module"].tolist(), strict=True))
    for a, b in edges:
        if module_of[a] == module_of[b] and a != b:
            within.setdefault(int(module_of[a]), []).append((a, b))
    labelled = []
    for ax, module in zip(axes, modules, strict=False):
        genes = nodes[nodes["module"] == module].sort_values("hub_rank", kind="stable")
        ids = genes["gene_id"].tolist()
        graph = nx.Graph()
        graph.add_nodes_from(ids)
        graph.add_edges_from(within.get(module, []))
        pos = _panel_layout(graph)
        xy = np.array([pos[g] for g in ids]).reshape(-1, 2)
        index = {g: i for i, g in enumerate(ids)}
        colour = module_colour(module)
        if graph.number_of_edges():
            segments = [(xy[index[a]], xy[index[b]]) for a, b in graph.edges()]
            ax.add_collection(
                LineCollection(segments, colors="#999999", linewidths=0.4, alpha=0.35)
            )
        ranks = genes["hub_rank"].to_numpy(dtype=np.int64)
        sizes = 10.0 + 110.0 / np.sqrt(np.maximum(ranks, 1))
        ax.scatter(xy[:, 0], xy[:, 1], s=sizes, color=colour, linewidths=0.4, edgecolors="white")
        ax.set_xlim(-1.25, 1.25)
        ax.set_ylim(-1.2, 1.2)
        ax.set_aspect("equal", adjustable="box")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_color("#dddddd")
        title = (titles or {}).get(module, f"module {module}")
        ax.set_title(title, fontsize="small", color=_darker(colour), loc="left")
        top = np.flatnonzero((ranks >= 1) & (ranks <= n_labels))
        labelled.append((ax, xy, top, genes["gene"].astype(str).to_numpy()))
    for ax in axes[len(modules) :]:
        ax.set_axis_off()
    fig.draw_without_rendering()
    for ax, xy, top, names in labelled:
        place_labels(ax, xy[top], [names[i] for i in top], outline=True, avoid_points=xy)
    return fig


def _panel_layout(graph) -> dict:
    """Positions of a module's genes scaled to [-1, 1]; deterministic.

    Kamada-Kawai (graph distances as lengths) on the module's graph; when that falls into
    pieces, each smaller piece is tied to the largest one's first node for the layout only,
    so that small pieces sit beside the main one instead of at the panel's corners.
    """
    import networkx as nx

    n = graph.number_of_nodes()
    if n == 1:
        return {next(iter(graph.nodes)): np.zeros(2)}
    order = {g: i for i, g in enumerate(graph.nodes)}
    layout = nx.Graph(graph)
    pieces = sorted(
        (sorted(c, key=order.__getitem__) for c in nx.connected_components(graph)),
        key=lambda c: (-len(c), order[c[0]]),
    )
    for piece in pieces[1:]:
        layout.add_edge(pieces[0][0], piece[0])
    pos = nx.kamada_kawai_layout(layout, pos=nx.circular_layout(layout))
    xy = np.array([pos[g] for g in graph.nodes])
    xy = xy - xy.mean(axis=0)
    scale = np.abs(xy).max() or 1.0
    return {g: xy[i] / scale for i, g in enumerate(graph.nodes)}


def _darker(colour: str) -> str:
    """A darker shade of ``colour`` for text (the pale tab20 colours are hard to read)."""
    from matplotlib.colors import to_hex, to_rgb

    return to_hex(tuple(0.6 * c for c in to_rgb(colour)))


def volcano_figure(table: pd.DataFrame, *, fdr: float = 0.05, n_labels: int = 12) -> Figure:
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
    Figure
        The figure (:func:`png_data_uri` makes the report's PNG).
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
    return fig


def qc_violins(*args, **kwargs) -> str:
    """:func:`qc_violins_figure` as a PNG data URI."""
    return png_data_uri(qc_violins_figure(*args, **kwargs))


def embedding_scatter(*args, **kwargs) -> str:
    """:func:`embedding_scatter_figure` as a PNG data URI."""
    return png_data_uri(embedding_scatter_figure(*args, **kwargs))


def module_network(*args, **kwargs) -> str:
    """:func:`module_network_figure` as a PNG data URI."""
    return png_data_uri(module_network_figure(*args, **kwargs))


def volcano(*args, **kwargs) -> str:
    """:func:`volcano_figure` as a PNG data URI."""
    return png_data_uri(volcano_figure(*args, **kwargs))

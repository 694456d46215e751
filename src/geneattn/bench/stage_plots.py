"""Plots of the stage benchmark: wall time and peak RSS against cells (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from geneattn.bench.stage_jobs import SHARDED

_MARKERS = "osD^v<>phX*P"


def plot_stages(
    results: Sequence,
    scaling: Sequence[Mapping[str, object]],
    time_png: str | Path,
    rss_png: str | Path,
    header: Mapping[str, str],
) -> None:
    """Draw time and peak RSS of every stage against the number of cells (log-log).

    Each stage's legend entry gives its fitted exponent ``b`` (and, for time, the slope
    between the two largest sizes), and the sizes where it failed or was not run.

    Parameters
    ----------
    results
        :class:`geneattn.bench.stages.StageResult` rows.
    scaling
        Rows of :func:`geneattn.bench.stage_tables.scaling_rows` (the exponents).
    time_png
        Output of the wall-time plot (stages only).
    rss_png
        Output of the peak-RSS plot (stages and probes).
    header
        The tables' header (``threads``, ``cells_per_shard``, ``cpu`` are shown).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geneattn.io.atomic import atomic_path

    fits = {str(row["stage"]): row for row in scaling}
    sizes = sorted({r.cells for r in results})
    stages = list(dict.fromkeys(r.stage for r in results))
    cmap = plt.get_cmap("tab20")
    subtitle = (
        f"{header.get('cells', 'resampled cells')}\n{header.get('cpu', '')}, "
        f"{header.get('threads', '')}; shards: {header.get('cells_per_shard', '')}"
    )
    for png, key, fit_key, ylabel, kinds in (
        (time_png, "wall_s", "b_time", "wall time (s)", ("stage",)),
        (rss_png, "peak_rss_mib", "b_peak_rss", "peak RSS of a job (MiB)", ("stage", "probe")),
    ):
        fig, ax = plt.subplots(figsize=(11, 6.5))
        for i, stage in enumerate(stages):
            mine = [r for r in results if r.stage == stage and r.kind in kinds]
            ok = sorted(
                (r for r in mine if r.status.startswith("ok") and r.jobs > 0),
                key=lambda r: r.cells,
            )
            if not mine:
                continue
            fit = fits.get(stage, {})
            b = fit.get(fit_key)
            name = f"{stage} [shards]" if stage in SHARDED else stage
            label = f"{name}: b = {b:.2f}" if isinstance(b, float) else name
            top2 = fit.get("b_time_top2")
            if key == "wall_s" and isinstance(top2, float) and len(ok) > 2:
                label += f" ({ok[-2].cells:,} to {ok[-1].cells:,}: {top2:.2f})"
            failed = [r.cells for r in mine if r.status.startswith("failed")]
            skipped = [r.cells for r in mine if r not in ok and r.cells not in failed]
            if failed:
                label += f"; FAILED at {', '.join(f'{n:,}' for n in failed)}"
            if skipped:
                label += f"; not run at {', '.join(f'{n:,}' for n in skipped)}"
            style = "--" if mine[0].kind == "probe" else "-"
            ax.plot(
                [r.cells for r in ok],
                [getattr(r, key) for r in ok],
                style,
                marker=_MARKERS[i % len(_MARKERS)],
                color=cmap(i % 20),
                label=label,
            )
        if key == "wall_s" and results:
            # a slope-1 guide through the median of the smallest size's times
            first = [r.wall_s for r in results if r.cells == sizes[0] and r.wall_s == r.wall_s]
            if first and len(sizes) > 1:
                y0 = sorted(first)[len(first) // 2]
                ax.plot(
                    [sizes[0], sizes[-1]],
                    [y0, y0 * sizes[-1] / sizes[0]],
                    ":",
                    color="grey",
                    label="b = 1 (guide)",
                )
        drawn = [v for line in ax.get_lines() for v in line.get_ydata() if v > 0]
        if drawn:
            ax.set_xscale("log")
            ax.set_yscale("log")
        else:
            # nothing completed (every stage failed or was not run): say so, no log axes
            ax.text(
                0.5,
                0.5,
                "no stage completed at any size; see the status column of stages.tsv",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
        if sizes:
            ax.set_xticks(sizes, [f"{n:,}" for n in sizes])
        ax.minorticks_off()
        ax.set_xlabel("cells (demo cells resampled with replacement)")
        ax.set_ylabel(ylabel)
        what = "wall time" if key == "wall_s" else "peak RSS"
        ax.set_title(f"geneattn stages: {what} against cells, b from log-log least squares")
        ax.grid(True, which="major", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
        fig.text(0.01, 0.01, subtitle, fontsize=7, va="bottom")
        fig.tight_layout(rect=(0, 0.07, 1, 1))
        with atomic_path(png) as tmp:
            fig.savefig(tmp, dpi=110)
        plt.close(fig)

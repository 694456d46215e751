"""Plots of the stage benchmark: wall time and peak RSS against cells (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

_MARKERS = "osD^v<>phX*P"


def plot_stages(
    results: Sequence,
    scaling: Sequence[Mapping[str, object]],
    time_png: str | Path,
    rss_png: str | Path,
    header: Mapping[str, str],
) -> None:
    """Draw time and peak RSS of every stage against the number of cells (log-log).

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

    from geneattn.atomic import atomic_path

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
            b = fits.get(stage, {}).get(fit_key)
            label = f"{stage}: b = {b:.2f}" if isinstance(b, float) else f"{stage}"
            missing = [r.cells for r in mine if r not in ok]
            if missing:
                label += f" (not run at {', '.join(f'{n:,}' for n in missing)})"
            if not ok:
                label += " (never ran)"
            style = "--" if mine[0].kind == "probe" else "-"
            ax.plot(
                [r.cells for r in ok],
                [getattr(r, key) for r in ok],
                style,
                marker=_MARKERS[i % len(_MARKERS)],
                color=cmap(i % 20),
                label=label,
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sizes, [f"{n:,}" for n in sizes])
        ax.minorticks_off()
        ax.set_xlabel("cells (demo cells resampled with replacement)")
        ax.set_ylabel(ylabel)
        what = "wall time" if key == "wall_s" else "peak RSS"
        ax.set_title(f"geneattn stages: {what} against cells, b from log-log least squares")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
        fig.text(0.01, 0.01, subtitle, fontsize=7, va="bottom")
        fig.tight_layout(rect=(0, 0.07, 1, 1))
        with atomic_path(png) as tmp:
            fig.savefig(tmp, dpi=110)
        plt.close(fig)

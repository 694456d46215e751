"""Tables of the stage benchmark: TSV with ``# key: value`` header lines, scaling fits."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from geneattn.bench.scaling import fit_power_law


def write_table(
    path: str | Path,
    header: Mapping[str, str],
    columns: Sequence[str],
    rows: Sequence[Mapping[str, object]],
) -> None:
    """Write ``rows`` as TSV under ``# key: value`` lines (atomically).

    Parameters
    ----------
    path
        Output ``.tsv``.
    header
        Lines written first as ``# key: value`` (read back with ``comment="#"``).
    columns
        Column names, in order; a row's missing keys are written empty.
    rows
        The rows.
    """
    from geneattn.io.atomic import write_text

    lines = [f"# {k}: {' '.join(str(v).split())}" for k, v in header.items()]
    lines.append("\t".join(columns))
    for row in rows:
        lines.append("\t".join(_cell(row.get(c, "")) for c in columns))
    write_text(path, "\n".join(lines) + "\n")


def read_table(path: str | Path) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Read a table written by :func:`write_table`.

    Parameters
    ----------
    path
        The ``.tsv``.

    Returns
    -------
    tuple
        ``(header, rows)``: the ``# key: value`` lines, and each row as text by column
        (empty cells as ``""``).
    """
    header: dict[str, str] = {}
    columns: list[str] | None = None
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if columns is None and line.startswith("# "):
            key, _, value = line[2:].partition(": ")
            header[key] = value
        elif columns is None:
            columns = line.split("\t")
        elif line:
            rows.append(dict(zip(columns, line.split("\t"), strict=True)))
    return header, rows


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.6g}"
    return " ".join(str(value).replace("\t", " ").split())


def scaling_rows(results: Sequence) -> tuple[list[dict], list[str]]:
    """Per stage: exponents of time and peak RSS against cells, and the measurements.

    Parameters
    ----------
    results
        :class:`geneattn.bench.stages.StageResult` rows (``cells``, ``stage``, ``kind``,
        ``wall_s``, ``peak_rss_mib``, ``status``).

    Returns
    -------
    tuple
        ``(rows, columns)``: one row per stage, in the order first seen. ``b_time`` is the
        least-squares slope of log wall seconds on log cells over the sizes where the stage
        ran (``ok``); ``b_time_top2`` the slope between the two largest of those sizes, where
        fixed costs (interpreter start, imports) weigh least; ``b_peak_rss`` the least-squares
        slope of peak RSS; ``not_run`` lists the sizes where it did not run (or failed) and
        why.
    """
    sizes = sorted({r.cells for r in results})
    columns = ["stage", "kind", "sizes_run", "b_time", "r2_time", "b_time_top2", "b_peak_rss"]
    columns += [f"wall_s_at_{n}" for n in sizes] + [f"peak_rss_mib_at_{n}" for n in sizes]
    columns.append("not_run")
    stages = list(dict.fromkeys(r.stage for r in results))
    rows = []
    for stage in stages:
        mine = sorted((r for r in results if r.stage == stage), key=lambda r: r.cells)
        ok = [r for r in mine if r.status.startswith("ok") and r.jobs > 0]
        fit_t = fit_power_law([r.cells for r in ok], [r.wall_s for r in ok])
        fit_m = fit_power_law([r.cells for r in ok], [r.peak_rss_mib for r in ok])
        top2 = fit_power_law([r.cells for r in ok[-2:]], [r.wall_s for r in ok[-2:]])
        row: dict[str, object] = {
            "stage": stage,
            "kind": mine[0].kind,
            "sizes_run": ",".join(str(r.cells) for r in ok),
            "b_time": round(fit_t.b, 3) if fit_t else None,
            "r2_time": round(fit_t.r2, 4) if fit_t and not math.isnan(fit_t.r2) else None,
            "b_time_top2": round(top2.b, 3) if top2 else None,
            "b_peak_rss": round(fit_m.b, 3) if fit_m else None,
            "not_run": "; ".join(f"{r.cells}: {r.status}" for r in mine if r not in ok),
        }
        for r in ok:
            row[f"wall_s_at_{r.cells}"] = round(r.wall_s, 3)
            row[f"peak_rss_mib_at_{r.cells}"] = round(r.peak_rss_mib, 1)
        rows.append(row)
    return rows, columns

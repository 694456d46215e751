"""The HTML report: one self-contained, deterministic file with every section."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geneattn.cli import main
from geneattn.errors import InputError
from geneattn.report.html import ReportInputs, ReportOptions, build_report, umap_coordinates

#: The tests use scanpy's Gaussian-kernel neighbour graph: the default (UMAP's fuzzy
#: simplicial set) first compiles numba code for several seconds per process.
FAST = ReportOptions(neighbors_method="gauss", n_neighbors=8)
SECTIONS = ("study", "qc", "embeddings", "modules", "enrichment", "module_analysis", "perturbation")


def _write_inputs(root: Path, *, perturbation: bool = True, single: bool = False) -> ReportInputs:
    """Small inputs of every kind; ``single``: a single-condition study (label "all")."""
    import anndata as ad
    import networkx as nx

    rng = np.random.default_rng(0)
    column, keep = ("condition", ["all"]) if single else ("source", ["Tumor", "NAT"])
    conditions = np.repeat(keep, 40 // len(keep))
    n = conditions.size
    obs = pd.DataFrame(
        {
            column: pd.Categorical(conditions),
            "n_genes_by_counts": rng.integers(200, 2000, n),
            "total_counts": rng.integers(500, 8000, n).astype(float),
            "pct_counts_mt": rng.uniform(0, 10, n),
        },
        index=[f"cell{i}" for i in range(n)],
    )
    ad.AnnData(X=np.zeros((n, 3), dtype=np.float32), obs=obs).write_h5ad(root / "qc.h5ad")
    emb = ad.AnnData(obs=obs[[column]].copy())
    emb.obsm["X_geneattn"] = (rng.normal(size=(n, 8)) + (conditions == "Tumor")[:, None]).astype(
        np.float32
    )
    emb.write_h5ad(root / "embeddings.h5ad")
    summary = {
        "condition_column": column,
        "keep": keep,
        "cells_before": 50,
        "cells_after": n,
        "genes_before": 100,
        "genes_after": 30,
        "cells_per_condition": {k: n // len(keep) for k in keep},
        "cells_per_condition_before": {k: 47 // len(keep) for k in keep},
        "cell_filters": [
            {"filter": "condition", "threshold": keep, "removed": 3, "remaining": 47},
            {"filter": "min_genes", "threshold": 200, "removed": 7, "remaining": 40},
            {"filter": "max_pct_mito", "threshold": 20.0, "removed": 0, "remaining": 40},
        ],
        "gene_filters": [{"filter": "min_cells", "threshold": 3, "removed": 70, "remaining": 30}],
        "mito": {"n_genes": 13, "prefix": "MT-", "requested": "auto"},
    }
    (root / "qc_summary.json").write_text(json.dumps(summary))

    genes = [f"G{i}" for i in range(30)]
    ids = [f"ENSG{i:011d}" for i in range(30)]
    module = np.repeat([1, 2, 3], 10)
    module[-2:] = 0
    rank = np.where(module > 0, np.tile(np.arange(1, 11), 3), 0)
    pd.DataFrame(
        {
            "gene": genes,
            "gene_id": ids,
            "module": module,
            "weighted_degree": rng.uniform(0, 1, 30),
            "intramodular_connectivity": rng.uniform(0, 1, 30),
            "hub_rank": rank,
        }
    ).to_csv(root / "modules.tsv", sep="\t", index=False)
    graph = nx.Graph()
    for i, gene_id in enumerate(ids):
        graph.add_node(gene_id, symbol=genes[i], module=int(module[i]))
    for i in range(30):
        for j in range(i + 1, 30):
            if (module[i] == module[j] and module[i] > 0) or j - i == 10:
                graph.add_edge(ids[i], ids[j], weight=0.01)
    nx.write_graphml(graph, root / "modules.graphml")

    pd.DataFrame(
        {
            "module": [1, 1, 2, 3, 3],
            "collection": ["hallmark"] * 5,
            "gene_set": ["SET_A", "SET_B", "SET_C", "SET_D", "SET_E"],
            "overlap": [5, 2, 3, 1, 4],
            "set_size": [20, 30, 10, 40, 12],
            "module_size": [10, 10, 10, 8, 8],
            "universe": [30] * 5,
            "p_value": [1e-6, 0.2, 0.01, 0.9, 1e-4],
            "fdr": [5e-6, 0.25, 0.03, 0.9, 2.5e-4],
            "genes": ["G0,G1,G2,G3,G4", "G5,G6", "G10,G11,G12", "G20", "G21,G22,G23,G24"],
        }
    ).to_csv(root / "enrichment.tsv", sep="\t", index=False)
    pd.DataFrame(
        {
            "module": [1, 2, 3],
            "size": [10, 10, 8],
            "n_pairs": [45, 45, 28],
            "case_mean": [0.001, 0.002, 0.003],
            "control_mean": [0.0012, 0.002, 0.001],
            "diff": [-0.0002, 0.0, 0.002],
            "p_value": [0.01, 0.9, 0.001],
            "fdr": [0.015, 0.9, 0.003],
            "n_permutations": [1000] * 3,
        }
    ).iloc[: 0 if single else 3].to_csv(root / "differential.tsv", sep="\t", index=False)
    (root / "evaluation.tsv").write_text(
        "# modules: 3\n# enriched at FDR < 0.05: 2 (0.667)\n"
        "program\tgenes\tin_network\ttogether\tmodule\texpected_together\tp_value\tmembers\n"
        "cytotoxicity\t3\t3\t3\t1\t1.2\t0.001\tG0,G1,G2\n"
        "proliferation\t2\t0\t0\t0\t0\t\t\n"
    )
    from geneattn.module_study import PRESERVATION_COLUMNS, TRAIT_COLUMNS

    traits = pd.DataFrame(
        {
            "module": [1, 2, 3],
            "n_genes": [10, 10, 8],
            "variance_explained": [0.4, 0.3, 0.2],
            "case_mean": [0.5, 0.0, -0.1],
            "control_mean": [-0.5, 0.1, 0.1],
            "diff": [1.0, -0.1, -0.2],
            "n_units": [6, 6, 6],
            "unit": ["samples_paired"] * 3,
            "p_value": [0.03125, 0.5, 0.8],
            "fdr": [0.09375, 0.75, 0.8],
        }
    )
    traits.iloc[: 0 if single else 3][list(TRAIT_COLUMNS)].to_csv(
        root / "module_traits.tsv", sep="\t", index=False
    )
    preservation = pd.DataFrame(
        {
            "module": [1, 2, 3],
            "size": [10, 10, 8],
            "mean_weight": [0.002, 0.001, 0.003],
            "cor_weight": [0.8, 0.2, 0.5],
            "cor_kim": [0.9, 0.1, 0.6],
            "z_density": [12.0, 1.0, 4.0],
            "z_connectivity": [8.0, -1.0, 3.0],
            "z_summary": [10.0, 0.0, 3.5],
            "p_density": [0.005, 0.3, 0.01],
            "reference": ["NAT"] * 3,
            "test": ["Tumor"] * 3,
        }
    )
    preservation.iloc[: 0 if single else 3][list(PRESERVATION_COLUMNS)].to_csv(
        root / "module_preservation.tsv", sep="\t", index=False
    )
    pert = None
    if perturbation:
        pert = root / "perturbation.tsv"
        modes = np.array(["delete", "overexpress"] * 15)
        shift = np.linspace(0.3, -0.3, 30)
        fdr = np.concatenate([np.geomspace(1e-6, 0.04, 10), np.linspace(0.06, 1.0, 20)])
        pd.DataFrame(
            {
                "gene": genes,
                "ensembl_id": ids,
                "module": np.where(module > 0, module, -1),
                "mode": modes,
                "n_cells": 40,
                "mean_cosine_shift": np.abs(shift) / 10,
                "mean_goal_shift": np.nan if single else shift,
                "statistic": shift * 10,
                "p_value": fdr / 2,
                "fdr": fdr,
            }
        ).to_csv(pert, sep="\t", index=False)
    return ReportInputs(
        qc_summary=root / "qc_summary.json",
        qc=root / "qc.h5ad",
        embeddings=root / "embeddings.h5ad",
        modules=root / "modules.tsv",
        module_graph=root / "modules.graphml",
        enrichment=root / "enrichment.tsv",
        differential=root / "differential.tsv",
        evaluation=root / "evaluation.tsv",
        perturbation=pert,
        module_traits=root / "module_traits.tsv",
        module_preservation=root / "module_preservation.tsv",
    )


def _cli_args(inputs: ReportInputs, out: Path) -> list[str]:
    args = [
        "report",
        "--study",
        "toy <study>",
        "--qc-summary",
        str(inputs.qc_summary),
        "--qc",
        str(inputs.qc),
        "--embeddings",
        str(inputs.embeddings),
        "--modules",
        str(inputs.modules),
        "--module-graph",
        str(inputs.module_graph),
        "--enrichment",
        str(inputs.enrichment),
        "--differential",
        str(inputs.differential),
        "--evaluation",
        str(inputs.evaluation),
        "--module-traits",
        str(inputs.module_traits),
        "--module-preservation",
        str(inputs.module_preservation),
        "--neighbors-method",
        "gauss",
        "--out",
        str(out),
    ]
    if inputs.perturbation is not None:
        args += ["--perturbation", str(inputs.perturbation)]
    return args


def test_report_is_one_self_contained_deterministic_file(tmp_path):
    inputs = _write_inputs(tmp_path)
    (tmp_path / "config.yaml").write_text("study: toy\nconditions:\n  column: source\n")
    out_dir = tmp_path / "out"
    args = [*_cli_args(inputs, out_dir / "report.html"), "--config-yaml"]
    assert main([*args, str(tmp_path / "config.yaml")]) == 0
    first = (out_dir / "report.html").read_bytes()
    assert [p.name for p in out_dir.iterdir()] == ["report.html"]  # one file, no leftovers
    assert main([*args, str(tmp_path / "config.yaml")]) == 0
    assert hashlib.sha256((out_dir / "report.html").read_bytes()).digest() == (
        hashlib.sha256(first).digest()
    )

    text = first.decode("utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    for section in SECTIONS:
        assert f"<section id='{section}'>" in text
    assert "geneattn report: toy &lt;study&gt;" in text  # the study name is escaped
    assert "study: toy" in text and "<td>scanpy</td>" in text  # config and versions
    # Nothing loaded from elsewhere: no scripts, stylesheets, fonts or remote images.
    assert not re.search(r"https?://|<script|<link|@import|url\(", text, re.IGNORECASE)
    sources = re.findall(r"src='([^']*)'", text)
    assert len(sources) == 4  # QC, UMAP, module network, volcano
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "SET_<wbr>A" in text and "cytotoxicity" in text and "enriched at FDR" in text
    assert "<td>G0</td>" in text and "No perturbation results" not in text
    assert not re.search(r"20\d\d-\d\d-\d\d", text)  # no date


def test_without_perturbation_the_section_says_so(tmp_path):
    inputs = _write_inputs(tmp_path, perturbation=False)
    text = build_report(inputs, study="toy", options=FAST)
    section = text.split("<section id='perturbation'>")[1].split("</section>")[0]
    assert "No perturbation results" in section and "<img" not in section
    assert "No config given" in text
    assert len(re.findall(r"<img ", text)) == 3


def test_bad_inputs_name_the_file_and_write_nothing(tmp_path, capsys):
    inputs = _write_inputs(tmp_path)
    out = tmp_path / "out" / "report.html"
    table = pd.read_csv(inputs.perturbation, sep="\t").drop(columns=["fdr"])
    table.to_csv(inputs.perturbation, sep="\t", index=False)
    assert main(_cli_args(inputs, out)) == 2
    err = capsys.readouterr().err
    assert "perturbation.tsv: missing columns ['fdr']" in err
    assert not out.parent.exists()  # the error comes before anything is written

    table.assign(fdr=0.5, mode="knockdown").to_csv(inputs.perturbation, sep="\t", index=False)
    with pytest.raises(InputError, match="unknown mode 'knockdown'"):
        build_report(inputs, study="toy", options=FAST)
    table.assign(fdr="low").to_csv(inputs.perturbation, sep="\t", index=False)
    with pytest.raises(InputError, match="column 'fdr' is not numeric"):
        build_report(inputs, study="toy", options=FAST)
    pd.DataFrame({"gene": ["G0"]}).to_csv(inputs.modules, sep="\t", index=False)
    with pytest.raises(InputError, match=r"modules\.tsv: missing columns \['gene_id'"):
        build_report(inputs, study="toy", options=FAST)
    inputs.modules.unlink()
    with pytest.raises(InputError, match=r"modules\.tsv: file not found"):
        build_report(inputs, study="toy", options=FAST)
    (tmp_path / "qc_summary.json").write_text("{}")
    with pytest.raises(InputError, match=r"qc_summary\.json: missing keys"):
        build_report(inputs, study="toy", options=FAST)

    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("- just\n- a list\n")
    args = [*_cli_args(_write_inputs(tmp_path), out), "--config-yaml", str(bad_config)]
    assert main(args) == 2
    assert "bad.yaml: the config is not a YAML mapping" in capsys.readouterr().err
    assert not out.exists()


def test_single_condition_study(tmp_path):
    """No case/control columns full of NA, no "the all cells", no goal-shift columns."""
    text = build_report(_write_inputs(tmp_path, single=True), study="toy", options=FAST)
    assert "Single-condition study: all cells form one group" in text
    assert "No differential test: a single-condition study" in text
    assert "No goal state" in text and "<td>delete</td><td class='n'>15</td>" in text
    assert len(re.findall(r"<img ", text)) == 4
    assert "Per-cell metrics of all cells before the cell filters" in text
    assert "the all cells" not in text and "cells: all" not in text
    modules = _section(text, "modules")
    assert "case - control" not in modules and "<th>FDR</th>" not in modules
    perturbation = _section(text, "perturbation")
    assert "mean_goal_shift" not in perturbation and "towards control" not in perturbation
    assert "cosine shifts" in perturbation  # what the statistic compares without a goal
    for name in ("modules", "perturbation"):
        assert "<td class='n'>NA</td>" not in _section(text, name)


def test_case_control_study_shows_the_comparison(tmp_path):
    inputs = _write_inputs(tmp_path)
    table = pd.read_csv(inputs.perturbation, sep="\t")
    table.loc[0, "module"], table.loc[1, "module"] = -1, 0
    table.to_csv(inputs.perturbation, sep="\t", index=False)
    text = build_report(inputs, study="toy", options=FAST)
    assert "Case vs control: <b>Tumor vs NAT</b>" in text
    assert "Per-cell metrics of the Tumor and NAT cells" in text
    assert "<th>case - control</th><th>FDR</th>" in _section(text, "modules")
    perturbation = _section(text, "perturbation")
    assert "<th>mean_goal_shift</th>" in perturbation
    assert "of them towards control" in perturbation
    # module -1 (outside the network's genes) and 0 (in no module) are said in words
    assert "<td>not in the network</td>" in perturbation
    assert "<td>no module</td>" in perturbation


def _section(text: str, key: str) -> str:
    return text.split(f"<section id='{key}'>")[1].split("</section>")[0]


def _tables_with_notes(text: str):
    """(header cells, explained columns) of every table followed by its column notes."""
    found = re.findall(
        r"<div class='scroll'><table[^>]*><thead><tr>(.*?)</tr></thead>(?:(?!<table).)*?"
        r"</table></div>"
        r"<details class='columns' open><summary>What the columns mean</summary><dl>(.*?)</dl>",
        text,
    )
    return [
        (re.findall(r"<th>(.*?)</th>", head), re.findall(r"<dt>(.*?)</dt>", notes))
        for head, notes in found
    ]


@pytest.mark.parametrize("single", [False, True])
def test_every_column_is_explained(tmp_path, single):
    text = build_report(_write_inputs(tmp_path, single=single), study="toy", options=FAST)
    tables = _tables_with_notes(text)
    # modules, enrichment, (differential), evaluation, (module traits, preservation),
    # perturbation ranking
    assert len(tables) == (4 if single else 7)
    for header, explained in tables:
        assert header == explained, (header, explained)
    statistic = re.search(r"<dt>statistic</dt><dd>(.*?)</dd>", text).group(1)
    assert "rank-biserial" in statistic and "null genes" in statistic
    assert "expression-frequency decile" in statistic


def test_enrichment_table_fits_the_page(tmp_path):
    inputs = _write_inputs(tmp_path)
    table = pd.read_csv(inputs.enrichment, sep="\t")
    long_name = "REACTOME_IMMUNOREGULATORY_INTERACTIONS_BETWEEN_A_LYMPHOID_AND_A_NON_LYMPHOID_CELL"
    table.loc[0, "gene_set"] = long_name
    table.loc[0, "genes"] = ",".join(f"GENE{i}" for i in range(36))
    table.to_csv(inputs.enrichment, sep="\t", index=False)
    text = build_report(inputs, study="toy", options=FAST)
    enrichment = _section(text, "enrichment")
    # long lists: the first 8 genes and a count, the rest behind a toggle
    assert (
        "<details class='genes'><summary>GENE0, GENE1, GENE2, GENE3, GENE4, GENE5, GENE6, GENE7 "
        "\u2026 (+28 more)</summary>GENE8, GENE9, " in enrichment
    )
    assert "<td>G21, G22, G23, G24</td>" in enrichment  # short lists as they are
    # long names may wrap at their underscores; every table scrolls inside the page
    assert "REACTOME_<wbr>IMMUNOREGULATORY_<wbr>INTERACTIONS_<wbr>" in enrichment
    assert long_name not in enrichment
    # all but the small ones (package versions, QC counts and filters, perturbation summary)
    assert text.count("<table") == text.count("<div class='scroll'><table") + 4
    assert (
        "td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }"
        in text
    )


def test_programs_outside_the_network_are_said_so(tmp_path):
    text = build_report(_write_inputs(tmp_path), study="toy", options=FAST)
    evaluation = _section(text, "enrichment").split("<h3>Evaluation</h3>")[1]
    row = re.search(r"<tr><td>proliferation</td>(.*?)</tr>", evaluation).group(1)
    assert "<td>not in the network</td>" in row
    assert "NA" not in row
    assert row.startswith("<td class='n'>2</td><td class='n'>0</td><td class='n'>0</td><td>not in")


def test_progress_lines(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="geneattn")
    build_report(_write_inputs(tmp_path), study="toy", options=FAST)
    steps = [r.getMessage() for r in caplog.records if r.getMessage().startswith("report: ")]
    assert steps[:2] == ["report: reading the tables", "report: quality control (violin plots)"]
    assert "report: in-silico perturbation" in steps
    assert any(s.startswith("report: drawing 3 module panels") for s in steps)


# -- figures --------------------------------------------------------------------------------


def _overlaps(boxes) -> list[tuple[int, int]]:
    return [
        (i, j)
        for i in range(len(boxes))
        for j in range(i + 1, len(boxes))
        if boxes[i].overlaps(boxes[j])
    ]


def test_module_network_one_panel_per_module_with_labels_that_do_not_overlap():
    from matplotlib.text import Text

    from geneattn.report.plots import draw_module_network

    rng = np.random.default_rng(3)
    rows, edges = [], []
    for module in range(1, 8):
        ids = [f"m{module}g{i}" for i in range(25)]
        for rank, gene_id in enumerate(ids, start=1):
            rows.append((gene_id, f"LONGNAME{module}X{rank}", module, rank))
        # a dense module: the labels of its hubs compete for the same few spots
        edges += [(a, b) for i, a in enumerate(ids) for b in ids[i + 1 :] if rng.random() < 0.5]
    nodes = pd.DataFrame(rows, columns=["gene_id", "gene", "module", "hub_rank"])
    edges += [("m1g0", "m2g0")]  # between modules: not drawn
    fig = draw_module_network(nodes, edges, n_labels=8, titles={1: "module 1: best set"})
    panels = [ax for ax in fig.axes if ax.axison]
    assert len(panels) == 7 and len(fig.axes) == 8  # 2 rows of 4, the last one empty
    assert panels[0].get_title(loc="left") == "module 1: best set"
    renderer = fig.canvas.get_renderer()
    boxes = []
    for ax in panels:
        labels = [t for t in ax.texts]
        assert 5 <= len(labels) <= 8  # the top hubs, where a label fits
        frame = ax.get_window_extent(renderer)
        for label in labels:
            label.update_positions(renderer)
            box = Text.get_window_extent(label, renderer)
            assert frame.x0 <= box.x0 and box.x1 <= frame.x1
            assert frame.y0 <= box.y0 and box.y1 <= frame.y1
            boxes.append(box)
    assert _overlaps(boxes) == []


def test_place_labels_in_a_crowd():
    from matplotlib.text import Text

    from geneattn.report.plots import new_figure, place_labels

    fig = new_figure(4.0, 3.0)
    ax = fig.subplots()
    xy = np.random.default_rng(0).normal(loc=0.5, scale=0.05, size=(40, 2))
    ax.scatter(xy[:, 0], xy[:, 1], label="genes")
    ax.set_xlim(-1, 1)
    ax.set_ylim(-1, 1)
    legend = ax.legend(loc="upper right")  # beside the crowd: labels must keep off it
    placed = place_labels(ax, xy, [f"GENE{i:02d}" for i in range(40)])
    assert 10 <= len(placed) < 40  # many fit around the crowd; the rest are left out
    assert len(ax.texts) == len(placed)
    assert _overlaps(placed) == []
    legend_box = legend.get_window_extent(fig.canvas.get_renderer())
    assert not any(box.overlaps(legend_box) for box in placed)
    renderer = fig.canvas.get_renderer()
    for label, box in zip(ax.texts, placed, strict=True):
        label.update_positions(renderer)
        assert np.allclose(Text.get_window_extent(label, renderer).extents, box.extents)
    # the same input places the same labels at the same spots
    again = new_figure(4.0, 3.0).subplots()
    again.scatter(xy[:, 0], xy[:, 1], label="genes")
    again.set_xlim(-1, 1)
    again.set_ylim(-1, 1)
    again.legend(loc="upper right")
    assert [
        b.extents.tolist() for b in place_labels(again, xy, [f"GENE{i:02d}" for i in range(40)])
    ] == [b.extents.tolist() for b in placed]


@pytest.mark.slow
def test_default_umap_is_seeded():
    x = np.random.default_rng(1).normal(size=(60, 8))
    first = umap_coordinates(x, n_neighbors=10, seed=0)
    assert first.shape == (60, 2) and np.all(np.isfinite(first))
    assert np.array_equal(first, umap_coordinates(x, n_neighbors=10, seed=0))


def test_gene_level_shifts_are_shown_per_perturbed_gene(tmp_path):
    import dataclasses

    inputs = _write_inputs(tmp_path)
    rows = [("G0", "GA", 0.9, 0.01, 3), ("G0", "GB", 0.5, 0.02, 2), ("G1", "GC", 0.7, 0.0, 1)]
    rows += [("G0", f"X{i}", 0.95 + i / 1000, 0.0, 1) for i in range(10)]
    pd.DataFrame(
        rows,
        columns=[
            "perturbed_gene",
            "affected_gene",
            "cosine_sim_mean",
            "cosine_sim_stdev",
            "n_detections",
        ],
    ).to_csv(tmp_path / "gene_shifts.tsv", sep="\t", index=False)
    inputs = dataclasses.replace(inputs, gene_shifts=tmp_path / "gene_shifts.tsv")
    text = build_report(inputs, study="toy", options=FAST)
    section = text.split("<section id='perturbation'>")[1].split("</section>")[0]
    assert "Gene-level shifts" in section and "over 2 perturbed genes" in section
    assert section.index("<td>GB</td>") < section.index("<td>GA</td>")  # largest effect first
    assert "<td>X4</td>" not in section  # 5 per perturbed gene: GB, GA, X0..X2
    assert "<td>X2</td>" in section


def test_genes_not_perturbed_are_named_with_the_reason(tmp_path):
    import dataclasses

    inputs = _write_inputs(tmp_path)
    path = tmp_path / "skipped.tsv"
    pd.DataFrame(
        [
            ("TTN", "", -1, "not_in_vocabulary", -1),
            ("MYH7", "ENSG00000092054", -1, "too_few_case_cells", 2),
            ("G9", "ENSG00000000009", 3, "too_few_case_cells", 0),
        ],
        columns=["gene", "gene_id", "module", "reason", "case_cells"],
    ).to_csv(path, sep="\t", index=False)
    text = build_report(dataclasses.replace(inputs, skipped=path), study="toy", options=FAST)
    section = text.split("<section id='perturbation'>")[1].split("</section>")[0]
    assert "Genes not perturbed" in section and "3 of the genes asked for" in section
    assert "<td>TTN</td><td></td><td>listed</td><td>not in the token vocabulary</td>" in section
    assert "<td>MYH7</td><td>ENSG00000092054</td><td>listed</td>" in section
    assert "<td>G9</td><td>ENSG00000000009</td><td class='n'>3</td>" in section
    # nothing skipped: no section
    path.write_text("gene\tgene_id\tmodule\treason\tcase_cells\n")
    text = build_report(dataclasses.replace(inputs, skipped=path), study="toy", options=FAST)
    assert "Genes not perturbed" not in text


def test_umap_of_a_large_study_is_a_seeded_subsample_and_says_so(tmp_path, monkeypatch):
    """Above ``umap_cells`` cells the UMAP is drawn from a seeded random subsample of that
    size (an atlas report must not embed a million points), and the text names it."""
    import dataclasses

    import geneattn.report.html as html

    inputs = _write_inputs(tmp_path)
    seen = []

    def recording_umap(x, **kwargs):
        seen.append(np.array(x))
        return umap_coordinates(x, **kwargs)

    monkeypatch.setattr(html, "umap_coordinates", recording_umap)
    small = dataclasses.replace(FAST, umap_cells=25, seed=3)
    text = build_report(inputs, study="toy", options=small)
    section = text.split("<section id='embeddings'>")[1].split("</section>")[0]
    assert "random subsample of 25 of the 40 cells (seed 3)" in section
    import anndata as ad

    full = np.asarray(ad.read_h5ad(inputs.embeddings).obsm["X_geneattn"], dtype=np.float64)
    rows = np.sort(np.random.default_rng(3).choice(40, size=25, replace=False))
    np.testing.assert_array_equal(seen[0], full[rows])
    assert build_report(inputs, study="toy", options=small) == text  # seeded: same bytes
    whole = build_report(inputs, study="toy", options=FAST)  # 40 cells <= 20,000: all drawn
    assert "subsample" not in whole and seen[-1].shape == (40, 8)


def test_module_analysis_section(tmp_path):
    from dataclasses import replace

    inputs = _write_inputs(tmp_path)
    section = _section(build_report(inputs, study="toy", options=FAST), "module_analysis")
    assert "<th>z_summary</th>" in section and "<th>unit</th>" in section
    assert "treats cells as independent replicates" not in section
    assert "NAT network" in section and "Tumor network" in section
    traits = pd.read_csv(inputs.module_traits, sep="\t").assign(unit="cells", n_units=40)
    traits.to_csv(inputs.module_traits, sep="\t", index=False)
    section = _section(build_report(inputs, study="toy", options=FAST), "module_analysis")
    assert "treats cells as independent replicates" in section
    bare = replace(inputs, module_traits=None, module_preservation=None)
    section = _section(build_report(bare, study="toy", options=FAST), "module_analysis")
    assert "No module analysis" in section and "<table" not in section
    (tmp_path / "one").mkdir()
    one = _write_inputs(tmp_path / "one", single=True)
    single = _section(build_report(one, study="toy", options=FAST), "module_analysis")
    assert "No module-condition association" in single and "No module preservation" in single
    pd.DataFrame({"module": [1]}).to_csv(inputs.module_preservation, sep="\t", index=False)
    with pytest.raises(InputError, match=r"module_preservation\.tsv: missing columns"):
        build_report(inputs, study="toy", options=FAST)

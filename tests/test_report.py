"""The HTML report: one self-contained, deterministic file with every section."""

from __future__ import annotations

import hashlib
import json
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
SECTIONS = ("study", "qc", "embeddings", "modules", "enrichment", "perturbation")


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
    assert "SET_A" in text and "cytotoxicity" in text and "enriched at FDR" in text
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
    text = build_report(_write_inputs(tmp_path, single=True), study="toy", options=FAST)
    assert "Single-condition study (label <b>all</b>)" in text
    assert "No differential test" in text
    assert "No goal state" in text and "<td>delete</td><td class='n'>15</td>" in text
    assert len(re.findall(r"<img ", text)) == 4


@pytest.mark.slow
def test_default_umap_is_seeded():
    x = np.random.default_rng(1).normal(size=(60, 8))
    first = umap_coordinates(x, n_neighbors=10, seed=0)
    assert first.shape == (60, 2) and np.all(np.isfinite(first))
    assert np.array_equal(first, umap_coordinates(x, n_neighbors=10, seed=0))

"""Does GenoHoption's graph-sparse attention help on the demo? Dense vs GenoHoption, same run.

For the study model and for a random Geneformer V1-size checkpoint (6 x 256, 4 heads, seed 0;
no package ships pretrained weights), the workflow runs the demo study twice, with
``attention.mode: dense`` and ``attention.mode: genohoption`` (PPI prior, PPR, the seed's
defaults), up to the cell embeddings and the module evaluation. Then, on the same cells:

* embeddings: k-nearest-neighbour label transfer of ``obs["cluster_orig"]`` (k = 10, five
  stratified folds, balanced accuracy; labels with fewer than five cells left out), beside
  the top principal components of the log-normalised counts of the universe genes (as the
  ``evaluate`` rule's baseline) of the same width and random vectors of that width;
* modules: the workflow's ``evaluation.tsv`` (known T-cell programs kept in one module, with
  the permutation p-value, and the fraction of modules with an enriched gene set), beside
  the modules of the PPI prior alone: Leiden (the workflow's settings) on the PPI among the
  same universe genes, scored the same way. GenoHoption attends along the PPI, so a module
  property the PPI alone has is no evidence for the attention.

Run it from the repository root after ``make demo`` (resources fetched)::

    .venv/bin/python scripts/genohoption_evidence.py --cores 2

Results go to ``results/genohoption_evidence/`` (``evidence.tsv`` and ``programs.tsv``), and
a summary is printed. Each workflow run takes minutes; ``--kinds`` picks the models.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

OUT = Path("results/genohoption_evidence")
MODES = ("dense", "genohoption")


def _checkpoint() -> Path:
    """The random V1-size checkpoint (written once)."""
    from geneattn.bench.checkpoint import V1
    from geneattn.models.bert_weights import BertConfig, BertWeights, save_checkpoint

    path = OUT / "random_v1"
    if not (path / "config.json").exists():
        config = BertConfig(**V1)
        save_checkpoint(path, config, BertWeights.random(config, seed=0))
    return path


def _run(kind: str, mode: str, cores: int) -> str:
    """Run the workflow up to embeddings and evaluation for one model and mode."""
    study = f"genohoption_evidence_{kind}_{mode}"
    overrides = {
        "study": study,
        "attention": {"mode": mode},
        "modules": {"permutations": 200},
    }
    if kind == "checkpoint":
        overrides["model"] = {"kind": "checkpoint", "path": str(_checkpoint())}
    OUT.mkdir(parents=True, exist_ok=True)
    cfg = OUT / f"{kind}_{mode}.yaml"
    cfg.write_text(yaml.safe_dump(overrides))
    targets = [f"results/{study}/embeddings.h5ad", f"results/{study}/evaluation.tsv"]
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    cmd = [snakemake, *targets, "--cores", str(cores), "--configfile", "config.yaml", str(cfg)]
    print("running:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return study


def label_transfer(embedding: np.ndarray, labels: np.ndarray, *, k: int = 10, folds: int = 5):
    """Balanced accuracy of out-of-fold kNN label transfer (labels with < ``folds`` cells
    left out), and the number of cells and labels scored."""
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier

    y = pd.Series(labels).astype(str)
    counts = y.value_counts()
    keep = y.isin(counts[counts >= folds].index).to_numpy()
    x, y = np.asarray(embedding, dtype=np.float64)[keep], y[keep].to_numpy()
    predicted = np.empty(len(y), dtype=object)
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=0).split(x, y):
        knn = KNeighborsClassifier(n_neighbors=min(k, len(train)), algorithm="brute")
        predicted[test] = knn.fit(x[train], y[train]).predict(x[test])
    return float(balanced_accuracy_score(y, predicted.astype(str))), len(y), len(set(y))


def _pca(study: str, cell_ids: np.ndarray, width: int) -> np.ndarray:
    """PCA of the log-normalised counts of the universe genes, the same cells: the baseline
    the workflow's ``evaluate`` uses (:func:`geneattn.baselines.pca_embedding`)."""
    import anndata as ad

    from geneattn.baselines import pca_embedding, universe_columns
    from geneattn.diffusion import log_normalise

    qc = ad.read_h5ad(f"results/{study}/qc.h5ad")
    qc = qc[pd.Index(qc.obs_names).get_indexer(cell_ids)]
    modules = pd.read_csv(f"results/{study}/modules.tsv", sep="\t")
    names = qc.var_names.astype(str).to_numpy()
    ids = qc.var["gene_ids"].astype(str).to_numpy() if "gene_ids" in qc.var else names
    columns = universe_columns(ids, names, modules["gene_id"], modules["gene"])
    n_counts = qc.obs["n_counts"].to_numpy(dtype=np.float64) if "n_counts" in qc.obs else None
    x = log_normalise(qc.X, n_counts=n_counts)[:, columns[columns >= 0]]
    return pca_embedding(x, n_components=width, seed=0)


def _programs(study: str) -> tuple[pd.DataFrame, str]:
    path = Path(f"results/{study}/evaluation.tsv")
    header = [line[2:].strip() for line in path.read_text().splitlines() if line.startswith("#")]
    return pd.read_csv(path, sep="\t", comment="#"), "\n".join(header)


def _head_value(header: str, prefix: str) -> str:
    """The value after ``prefix`` in an evaluation head (``""`` when absent)."""
    for line in header.splitlines():
        if line.startswith(prefix):
            return line[len(prefix) :].strip().split()[0]
    return ""


def summary_tables(evidence: pd.DataFrame, programs: pd.DataFrame, kinds: list[str]):
    """README's two tables: label transfer and module counts per model and attention mode,
    and the fraction of each config program's gene pairs kept in one module (p-value)."""
    rows = []
    names = {"study": "study model (d 64)", "checkpoint": "random V1-size checkpoint"}
    ppi = evidence[evidence["model"] == "ppi_only"]["modules"]
    ppi_head = ppi.iloc[0] if len(ppi) else ""
    for kind in kinds:
        part = evidence[evidence["model"] == kind].set_index("embedding")
        row = {"model": names.get(kind, kind)}
        for mode, label in (
            ("dense", "embeddings: dense"),
            ("genohoption", "embeddings: GenoHoption"),
            ("pca", "PCA"),
            ("random", "random"),
        ):
            row[label] = f"{part.loc[mode, 'balanced_accuracy']:.3f}"
        for mode, label in (
            ("dense", "modules enriched: dense"),
            ("genohoption", "modules enriched: GenoHoption"),
        ):
            head = str(part.loc[mode, "modules"])
            row[label] = (
                f"{_head_value(head, 'enriched at FDR < 0.05:')} of {_head_value(head, 'modules:')}"
            )
        row["PPI alone"] = (
            f"{_head_value(ppi_head, 'enriched at FDR < 0.05:')} of "
            f"{_head_value(ppi_head, 'modules:')}"
        )
        for mode, label in (
            ("dense", "programs kept >= co-expression: dense"),
            ("genohoption", "programs kept >= co-expression: GenoHoption"),
        ):
            head = str(part.loc[mode, "modules"])
            found = [
                line for line in head.splitlines() if line.startswith("programs with >= 2 genes")
            ]
            if found:
                total = found[0].split(":")[1].split(";")[0].strip()
                kept = found[0].rsplit(" ", 1)[1]
                row[label] = f"{kept} of {total}"
        rows.append(row)
    first = pd.DataFrame(rows)

    def cell(fraction, p) -> str:
        return "" if pd.isna(fraction) else f"{fraction:.2f} (p = {p:.2g})"

    config = yaml.safe_load(Path("config.yaml").read_text())
    wanted = list(config["evaluation"]["programs"])
    table = {}
    for kind in kinds:
        for mode in MODES:
            part = programs[(programs["model"] == kind) & (programs["attention"] == mode)]
            part = part.set_index("program")
            table[f"{kind} {mode}"] = {
                p: cell(part.loc[p, "attention_fraction"], part.loc[p, "attention_p_value"])
                for p in wanted
                if p in part.index
            }
            if kind == kinds[0] and mode == "dense":
                table["co-expression"] = {
                    p: cell(*part.loc[p, ["coexpression_fraction", "coexpression_p_value"]])
                    for p in wanted
                    if p in part.index
                }
    ppi = programs[programs["model"] == "ppi_only"].set_index("program")
    table["PPI alone"] = {
        p: cell(ppi.loc[p, "fraction"], ppi.loc[p, "p_value"]) for p in wanted if p in ppi.index
    }
    second = pd.DataFrame(table).rename_axis("program (pairs sharing a module)").reset_index()
    return first, second.fillna("")


def _ppi_modules(study: str) -> tuple[pd.DataFrame, str]:
    """Program cohesion and enrichment of Leiden modules of the PPI among the universe."""
    from geneattn.diffusion import ppi_prior
    from geneattn.enrichment import load_gene_sets, module_enrichment
    from geneattn.evaluation import DEFAULT_PROGRAMS, enriched_fraction, program_pair_sharing
    from geneattn.modules import leiden_modules, undirected_weights
    from geneattn.network import load_network
    from geneattn.resources.load import load_ppi

    config = yaml.safe_load(Path("config.yaml").read_text())
    net = load_network(f"results/{study}/network/case.npz")
    ppi = ppi_prior(load_ppi("resources/ppi/h_sapiens.tsv"), net.gene_symbols)
    weights = undirected_weights(ppi)
    m = config["modules"]
    modules = leiden_modules(
        weights, resolution=m["resolution"], objective=m["objective"], seed=m["seed"],
        min_size=m["min_size"],
    )  # fmt: skip
    sets = load_gene_sets([f"resources/genesets/{g}" for g in m["gene_sets"]])
    enrichment = module_enrichment(modules, net.gene_ids, net.gene_symbols, sets)
    table = pd.DataFrame({"gene": net.gene_symbols, "module": modules})
    e = enriched_fraction(table, enrichment)
    programs = config["evaluation"].get("programs") or DEFAULT_PROGRAMS
    n = config["evaluation"]["permutations"]
    cohesion = program_pair_sharing(table, programs, n_permutations=n, seed=0)
    header = f"modules: {e['n_modules']}\nenriched at FDR < 0.05: {e['n_enriched']}"
    return cohesion, header


def _write_summary(evidence: pd.DataFrame, prog: pd.DataFrame, kinds: list[str], out: Path):
    first, second = summary_tables(evidence, prog, kinds)
    out.mkdir(parents=True, exist_ok=True)
    first.to_csv(out / "genohoption_evidence.tsv", sep="\t", index=False)
    second.to_csv(out / "genohoption_programs.tsv", sep="\t", index=False)


def main() -> int:
    import anndata as ad

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--kinds", nargs="+", default=["study", "checkpoint"])
    parser.add_argument("--summary", help="directory for README's two tables (e.g. results/readme)")
    parser.add_argument(
        "--tables-only",
        action="store_true",
        help="only remake the --summary tables from the last run's evidence.tsv/programs.tsv",
    )
    args = parser.parse_args()
    if args.tables_only:
        evidence = pd.read_csv(OUT / "evidence.tsv", sep="\t", keep_default_na=False)
        evidence["balanced_accuracy"] = pd.to_numeric(evidence["balanced_accuracy"])
        prog = pd.read_csv(OUT / "programs.tsv", sep="\t")
        prog["attention"] = prog["attention"].fillna("")
        _write_summary(evidence, prog, args.kinds, Path(args.summary))
        return 0
    rows, programs = [], []
    for kind in args.kinds:
        baselines_done = False
        for mode in MODES:
            study = _run(kind, mode, args.cores)
            emb = ad.read_h5ad(f"results/{study}/embeddings.h5ad")
            labels = emb.obs["cluster_orig"].to_numpy()
            x = np.asarray(emb.obsm["X_geneattn"], dtype=np.float64)
            acc, n, n_labels = label_transfer(x, labels)
            table, header = _programs(study)
            rows.append(
                {
                    "model": kind,
                    "embedding": mode,
                    "width": x.shape[1],
                    "balanced_accuracy": acc,
                    "cells": n,
                    "labels": n_labels,
                    "modules": header,
                }
            )
            programs.append(table.assign(model=kind, attention=mode))
            if not baselines_done:
                width = min(x.shape[1], len(x) - 1)
                for name, base in (
                    ("pca", _pca(study, emb.obs_names.to_numpy(), width)),
                    ("random", np.random.default_rng(0).standard_normal((len(x), x.shape[1]))),
                ):
                    acc, n, n_labels = label_transfer(base, labels)
                    rows.append(
                        {
                            "model": kind,
                            "embedding": name,
                            "width": base.shape[1],
                            "balanced_accuracy": acc,
                            "cells": n,
                            "labels": n_labels,
                            "modules": "",
                        }
                    )
                baselines_done = True
    study = f"genohoption_evidence_{args.kinds[0]}_dense"
    cohesion, header = _ppi_modules(study)
    rows.append({"model": "ppi_only", "embedding": "", "modules": header})
    programs.append(cohesion.assign(model="ppi_only", attention=""))
    evidence = pd.DataFrame(rows)
    prog = pd.concat(programs, ignore_index=True)
    OUT.mkdir(parents=True, exist_ok=True)
    evidence.to_csv(OUT / "evidence.tsv", sep="\t", index=False)
    prog.to_csv(OUT / "programs.tsv", sep="\t", index=False)
    if args.summary:
        _write_summary(evidence, prog, args.kinds, Path(args.summary))
    with pd.option_context("display.width", 250, "display.max_colwidth", 120):
        print(evidence.to_string(index=False))
        print(prog.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

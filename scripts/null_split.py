"""Calibration check of the differential test: split the case cells at random into two halves.

Both halves come from one condition, so no module truly differs between them and a test of
level alpha should call about alpha of the modules significant. For each seed this script
writes a copy of the study's ``qc.h5ad`` with an obs column ``null_split`` (the case cells
labelled ``A`` or ``B`` at random, half each; the other cells keep their label), runs the
workflow's commands (attention, network, modules and the differential test) on ``A`` vs
``B`` with the study's settings, and prints how many modules have ``p < alpha``.

Run it after the study's workflow (it reads ``results/{study}/``)::

    .venv/bin/python scripts/null_split.py --splits 10 --test genes --test cells

Outputs go to ``--out`` (default ``results/{study}/null_split/``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml


def main() -> int:
    """Run the splits and print the rejection counts."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="config.yaml", help="the study's config")
    parser.add_argument("--splits", type=int, default=10, help="random splits (seeds 0..)")
    parser.add_argument(
        "--test",
        action="append",
        choices=["genes", "cells"],
        help="differential test(s) to run (default: both)",
    )
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="output directory")
    parser.add_argument(
        "--summary", help="also write the summary per test as a TSV (README renders it)"
    )
    args = parser.parse_args()
    tests = args.test or ["genes", "cells"]

    with open(args.config) as fh:
        config = yaml.safe_load(fh)
    study = f"results/{config['study']}"
    res = config["resources"]["dir"]
    case_label = config["conditions"]["case"]
    column = config["conditions"]["column"]
    out = Path(args.out or f"{study}/null_split")
    a, n, m = config["attention"], config["network"], config["modules"]
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")

    def run(command: str) -> None:
        print("+", command, flush=True)
        subprocess.run(command, shell=True, check=True, env=env)

    import anndata as ad

    qc = ad.read_h5ad(f"{study}/qc.h5ad")
    labels = qc.obs[column].astype(str).to_numpy()
    case_cells = np.flatnonzero(labels == case_label)
    results: dict[str, list[tuple[int, int]]] = {t: [] for t in tests}
    for seed in range(args.splits):
        d = out / f"seed{seed}"
        d.mkdir(parents=True, exist_ok=True)
        split = labels.astype(object).copy()
        rng = np.random.default_rng(seed)
        half = rng.permutation(case_cells)[: len(case_cells) // 2]
        split[case_cells] = "B"
        split[half] = "A"
        qc.obs["null_split"] = split
        qc.write_h5ad(d / "qc.h5ad")
        gmt = " ".join(f"{res}/genesets/{g}" for g in m["gene_sets"])
        for role, label in (("case", "A"), ("control", "B")):
            run(
                f"geneattn attention {study}/tokens.npz --model {study}/model.npz"
                f" --obs {d}/qc.h5ad --condition-column null_split --condition {label}"
                f" --gene-names {res}/geneformer_v1/gene_name_id.tsv"
                f" --universe {a['universe']} --min-cells {a['universe_min_cells']}"
                f" --max-genes {a['universe_max_genes']} --threads {args.threads}"
                f" --out {d}/attention_{role}.npz 2> {d}/attention_{role}.log"
            )
            run(
                f"geneattn network {d}/attention_{role}.npz --min-cells {n['min_cells']}"
                f" --top-k {n['top_k']} {'--symmetrize' if n['symmetrize'] else ''}"
                f" --diffusion {n['diffusion']} --prior {n['prior']}"
                f" --ppi {res}/ppi/h_sapiens.tsv --counts {d}/qc.h5ad --alpha {n['alpha']}"
                f" --t {n['t']} --iterations {n['iterations']} --out-npz {d}/network_{role}.npz"
                f" --out-edges {d}/edges_{role}.tsv --out-graphml {d}/network_{role}.graphml"
                f" 2> {d}/network_{role}.log"
            )
        common = (
            f"--case {d}/network_case.npz --control {d}/network_control.npz"
            f" --detect-on {m['detect_on']} --objective {m['objective']}"
            f" --resolution {m['resolution']} --seed {m['seed']} --min-size {m['min_size']}"
            f" --permutations {m['permutations']}"
        )
        run(
            f"geneattn modules {common} --gmt {gmt} --out-modules {d}/modules.tsv"
            f" --out-enrichment {d}/enrichment.tsv --out-graphml {d}/modules.graphml"
            + (f" --out-differential {d}/differential_genes.tsv" if "genes" in tests else "")
            + f" 2> {d}/modules.log"
        )
        if "cells" in tests:
            for role, label in (("case", "A"), ("control", "B")):
                run(
                    f"geneattn module-attention {study}/tokens.npz --model {study}/model.npz"
                    f" --obs {d}/qc.h5ad --condition-column null_split --condition {label}"
                    f" --modules {d}/modules.tsv --threads {args.threads}"
                    f" --out {d}/module_attention_{role}.npz 2> {d}/module_attention_{role}.log"
                )
            run(
                f"geneattn differential --case-cells {d}/module_attention_case.npz"
                f" --control-cells {d}/module_attention_control.npz"
                f" --permutations {m['permutations']} --seed {m['seed']}"
                f" --out {d}/differential_cells.tsv 2> {d}/differential.log"
            )
        import pandas as pd

        for test in tests:
            table = pd.read_csv(d / f"differential_{test}.tsv", sep="\t")
            p = table["p_value"].to_numpy(dtype=float)
            hits = int((p < args.alpha).sum())
            results[test].append((hits, len(p)))
            print(f"seed {seed} {test}: {hits} of {len(p)} modules with p < {args.alpha}")

    print(f"\nrandom splits of the {len(case_cells)} {case_label} cells, {args.splits} seeds")
    summary = []
    for test, rows in results.items():
        hits = sum(h for h, _ in rows)
        total = sum(t for _, t in rows)
        per_seed = ", ".join(f"{h}/{t}" for h, t in rows)
        rate = hits / total if total else float("nan")
        print(f"{test}: {hits} of {total} modules with p < {args.alpha} ({rate:.1%}); {per_seed}")
        summary.append(
            {
                "test": test,
                "random splits": len(rows),
                "modules tested": total,
                f"p < {args.alpha:g}": hits,
                "fraction": f"{rate:.1%}",
            }
        )
    if args.summary:
        head = f"# random halves of the {len(case_cells)} {case_label} cells\n"
        Path(args.summary).parent.mkdir(parents=True, exist_ok=True)
        Path(args.summary).write_text(
            head + pd.DataFrame(summary).to_csv(sep="\t", index=False), encoding="utf-8"
        )
    print("command:", shlex.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

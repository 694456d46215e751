"""Calibration of the perturbation tests: random halves of the case cells, nothing to find.

For each seed the case cells are split at random into halves A and B (one condition, so no
gene truly moves A toward B). The goal state is B's centroid; every gene of a random draw of
genes expressed in A (``--genes``) and the frequency-matched null genes are deleted in every
A cell (the study model of ``results/{study}/model.npz``), and each target is tested against
the null genes of its bin twice: over cells (rank-sum, the workflow's current test) and over
samples (``--sample`` column: per-sample shift beyond the null, sign-flip test;
:mod:`geneattn.perturb_stats`). A test that holds its level calls about 5% of the genes at
p < 0.05 and, as nothing is true, almost none at FDR < 0.05.

Run it after the study's workflow (it reads ``results/{study}/``)::

    .venv/bin/python scripts/null_split_perturb.py --splits 10 --sample patient

It prints one line per split and a summary table (TSV) to ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import yaml


def main() -> int:
    """Run the splits and print the fraction of genes called by each test."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="config.yaml", help="the study's config")
    parser.add_argument("--splits", type=int, default=10, help="random splits (seeds 0..)")
    parser.add_argument("--sample", default="patient", help="obs column of the samples")
    parser.add_argument("--genes", type=int, default=60, help="random target genes per split")
    parser.add_argument("--null-per-bin", type=int, default=10)
    parser.add_argument("--min-cells", type=int, default=5)
    parser.add_argument("--mode", default="delete")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--out", help="per-split TSV (default results/{study}/null_split_perturb.tsv)"
    )
    parser.add_argument(
        "--summary", help="also write the mean over splits per test as a TSV (README renders it)"
    )
    args = parser.parse_args()

    from geneattn.attention import presence_matrix, subset_cells
    from geneattn.io.readers import read_stage_h5ad
    from geneattn.models import load_model
    from geneattn.perturb import choose_null_tokens, perturbation_shifts
    from geneattn.perturb_stats import cell_level_statistics, sample_level_statistics
    from geneattn.tokenize import load_tokens

    with open(args.config) as fh:
        config = yaml.safe_load(fh)
    study = Path(f"results/{config['study']}")
    column, case = config["conditions"]["column"], config["conditions"]["case"]
    obs = read_stage_h5ad(study / "qc.h5ad").obs
    cells = load_tokens(study / "tokens.npz")
    obs = obs.loc[np.asarray(cells.cell_ids).astype(str)]
    case_idx = np.flatnonzero(obs[column].astype(str).to_numpy() == case)
    model = load_model(study / "model.npz")
    case_cells = subset_cells(cells, case_idx)
    samples_all = obs[args.sample].astype(str).to_numpy()[case_idx]
    embeddings = model.embed(case_cells, n_threads=args.threads)
    rows = []
    for seed in range(args.splits):
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(case_idx))
        half_a, half_b = np.sort(order[: len(order) // 2]), np.sort(order[len(order) // 2 :])
        a_cells = subset_cells(case_cells, half_a)
        goal = embeddings[half_b].mean(axis=0)
        vocab = len(cells.vocabulary)
        present = presence_matrix(a_cells, np.arange(vocab), vocab)
        n_expr = np.asarray(present.sum(axis=0)).ravel()
        candidates = np.flatnonzero(n_expr >= args.min_cells)
        targets = np.sort(
            rng.choice(candidates, size=min(args.genes, len(candidates)), replace=False)
        )
        null, bin_of = choose_null_tokens(
            candidates, n_expr[candidates], targets, per_bin=args.null_per_bin, seed=seed
        )
        tokens = np.concatenate([targets, null])
        shifts = perturbation_shifts(
            model, a_cells, tokens, args.mode, goal=goal, n_threads=args.threads
        )
        by_cell = cell_level_statistics(shifts, targets, null, bin_of)
        by_sample = sample_level_statistics(
            shifts, targets, null, bin_of, samples_all[half_a], seed=seed
        )
        for name, table in (("cells", by_cell), ("samples", by_sample)):
            p = table["p_value"].to_numpy(dtype=np.float64)
            tested = np.isfinite(p)
            row = {
                "split": seed,
                "unit": name,
                "genes_tested": int(tested.sum()),
                "p_lt_0.05": float(np.mean(p[tested] < 0.05)),
                "fdr_lt_0.05": float(np.mean(table["fdr"].to_numpy()[tested] < 0.05)),
            }
            rows.append(row)
            print(
                "\t".join(
                    f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                ),
                flush=True,
            )
    table = pd.DataFrame(rows)
    summary = table.groupby("unit")[["genes_tested", "p_lt_0.05", "fdr_lt_0.05"]].mean()
    print(summary.to_string())
    out = Path(args.out or study / "null_split_perturb.tsv")
    table.to_csv(out, sep="\t", index=False, float_format="%.4g")
    if args.summary:
        rendered = pd.DataFrame(
            {
                "test over": summary.index,
                "random splits": table.groupby("unit").size().to_numpy(),
                "genes tested per split": summary["genes_tested"].map("{:.0f}".format).to_numpy(),
                "p < 0.05": summary["p_lt_0.05"].map("{:.1%}".format).to_numpy(),
                "FDR < 0.05": summary["fdr_lt_0.05"].map("{:.1%}".format).to_numpy(),
            }
        )
        Path(args.summary).parent.mkdir(parents=True, exist_ok=True)
        rendered.to_csv(args.summary, sep="\t", index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

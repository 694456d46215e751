"""Which network diffusion should the modules use? Every setting on the same attention sums.

For each study (default: the demo and the celltypist study, after their workflow runs) and
each setting of ``network.diffusion`` (none, ppr, heat) and ``network.prior`` (ppi,
coexpression, union), the study's gathered attention sums (``results/{study}/attention/``)
are turned into networks, pooled modules and the module evaluation with every other option
as the study's config sets it (``geneattn network``, ``modules``, ``evaluate``: the
workflow's commands). Each row says how many modules carry an enriched gene set and how
well known programs (the config's and pegasus' immune marker sets) are kept in one module,
beside the co-expression modules of the same genes that ``evaluate`` builds in the same run.

Run it from the repository root after the studies' runs::

    .venv/bin/python scripts/diffusion_choice.py --summary results/readme/diffusion_choice.tsv

Scratch outputs go to ``results/diffusion_choice/{study}/{setting}/``.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

SETTINGS = [("none", "ppi")] + [
    (d, p) for d in ("ppr", "heat") for p in ("ppi", "coexpression", "union")
]
STUDIES = {"wu2020_tumor_vs_nat": None, "celltypist_immune": "studies/celltypist_immune.yaml"}


def _config(extra: str | None) -> dict:
    """config.yaml with a study file merged in key by key (as Snakemake merges them)."""

    def merge(base: dict, over: dict) -> dict:
        out = dict(base)
        for key, value in over.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = value
        return out

    config = yaml.safe_load(Path("config.yaml").read_text(encoding="utf-8"))
    if extra:
        config = merge(config, yaml.safe_load(Path(extra).read_text(encoding="utf-8")))
    return config


def _run(command: str, log: Path) -> None:
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"+ {command}\n")
        fh.flush()
        subprocess.run(command, shell=True, check=True, stdout=fh, stderr=fh)


def evaluate_setting(study: str, config: dict, diffusion: str, prior: str, permutations: int):
    """Networks, modules and evaluation of one setting; the evaluation head as a dict."""
    results = Path("results") / study
    out = Path("results/diffusion_choice") / study / f"{diffusion}_{prior}"
    out.mkdir(parents=True, exist_ok=True)
    log = out / "commands.log"
    log.write_text("", encoding="utf-8")
    n, m, e = config["network"], config["modules"], config["evaluation"]
    roles = sorted(p.stem for p in (results / "attention").glob("*.npz"))
    for role in roles:
        _run(
            f"geneattn network {results}/attention/{role}.npz --min-cells {n['min_cells']}"
            f" --top-k {n['top_k']} {'--symmetrize' if n['symmetrize'] else ''}"
            f" --diffusion {diffusion} --prior {prior} --ppi resources/ppi/h_sapiens.tsv"
            f" --counts {results}/qc.h5ad --alpha {n['alpha']} --t {n['t']}"
            f" --iterations {n['iterations']} --out-npz {out}/{role}.npz"
            f" --out-edges {out}/{role}_edges.tsv --out-graphml {out}/{role}.graphml",
            log,
        )
    networks = (
        f"--case {out}/case.npz --control {out}/control.npz"
        if "control" in roles
        else f"--case {out}/{roles[0]}.npz"
    )
    gmt = " ".join(f"resources/genesets/{g}" for g in m["gene_sets"])
    _run(
        f"geneattn modules {networks} --detect-on {m['detect_on']}"
        f" --objective {m['objective']} --resolution {m['resolution']} --seed {m['seed']}"
        f" --min-size {m['min_size']} --gmt {gmt} --permutations 10"
        f" --out-modules {out}/modules.tsv --out-enrichment {out}/enrichment.tsv",
        log,
    )
    programs = " ".join(
        f"--program {shlex.quote(name + '=' + ','.join(genes))}"
        for name, genes in e["programs"].items()
    )
    _run(
        f"geneattn evaluate --modules {out}/modules.tsv --enrichment {out}/enrichment.tsv"
        f" {programs} --fdr {e['fdr']} --permutations {permutations}"
        f" --counts {results}/qc.h5ad --markers resources/genesets/human_immune_cell_markers.json"
        f" --resolution {m['resolution']} --objective {m['objective']}"
        f" --min-size {m['min_size']} --top-k {n['top_k']} --seed {m['seed']}"
        f" --out {out}/evaluation.tsv",
        log,
    )
    table = pd.read_csv(out / "evaluation.tsv", sep="\t", comment="#")
    head = {}
    for line in (out / "evaluation.tsv").read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            key, _, value = line[2:].rpartition(": ")
            head[key] = value
    at_least = next(v for k, v in head.items() if k.startswith("programs with >= 2"))
    return {
        "study": study,
        "diffusion": diffusion,
        "prior": "" if diffusion == "none" else prior,
        "modules": int(head["modules"]),
        "enriched": int(head["enriched at FDR < 0.05"].split()[0]),
        "programs": len(table),
        "kept >= co-expression": int(at_least.rsplit(" ", 1)[1]),
        "mean pair fraction": round(float(table["attention_fraction"].mean()), 3),
        "co-expression": round(float(table["coexpression_fraction"].mean()), 3),
        "programs p < 0.05": int((table["attention_p_value"] < 0.05).sum()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", nargs="+", default=list(STUDIES))
    parser.add_argument("--permutations", type=int, default=2000)
    parser.add_argument("--summary", help="the table as TSV (README renders it)")
    args = parser.parse_args()
    rows = []
    for study in args.studies:
        if not (Path("results") / study / "attention").is_dir():
            print(f"{study}: no results/{study}/attention/ (run its workflow first)")
            return 1
        config = _config(STUDIES.get(study))
        for diffusion, prior in SETTINGS:
            row = evaluate_setting(study, config, diffusion, prior, args.permutations)
            print("\t".join(f"{k}={v}" for k, v in row.items()), flush=True)
            rows.append(row)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    if args.summary:
        Path(args.summary).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.summary, sep="\t", index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The command lines of the workflow's stages, for the stage benchmark.

:class:`StageJobs` turns a study config (``config.yaml``, schema defaults filled) into the
``geneattn`` command lines the Snakemake rules run (``workflow/rules/*.smk``), with the
same arguments, in one work directory. Sharded stages (``attention``, ``module-attention``,
``perturb``) get one job per shard of at most ``cells_per_shard`` cells of a condition, so a
shard job's own cells are the same number at every study size. Keep this module in step
with the rule files: it is the one place the benchmark spells out the stages' arguments.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Stage:
    """A stage of the benchmark: a ``geneattn`` subcommand, or a probe.

    Attributes
    ----------
    name
        The subcommand (``qc``, ``gather-attention``, ...) or the probe's name.
    needs
        Stages whose outputs it reads.
    kind
        ``stage`` (a workflow stage) or ``probe`` (a measurement of a part of one).
    """

    name: str
    needs: tuple[str, ...] = ()
    kind: str = "stage"


#: The stages in workflow order.
STAGES = (
    Stage("qc"),
    Stage("tokenize", ("qc",)),
    Stage("load-tokens-all", ("tokenize",), "probe"),
    Stage("load-tokens-shard", ("tokenize",), "probe"),
    Stage("model", ("qc",)),
    Stage("embed", ("tokenize", "model")),
    Stage("gather-embeddings", ("embed",)),
    Stage("universe", ("tokenize",)),
    Stage("attention", ("universe", "model")),
    Stage("gather-attention", ("attention",)),
    Stage("network", ("gather-attention",)),
    Stage("modules", ("network",)),
    Stage("module-analysis", ("modules", "network")),
    Stage("module-attention", ("modules",)),
    Stage("differential", ("module-attention",)),
    Stage("evaluate", ("modules", "gather-embeddings")),
    Stage("perturb-plan", ("differential", "gather-embeddings")),
    Stage("perturb", ("perturb-plan",)),
    Stage("perturb-stats", ("perturb",)),
    Stage(
        "report",
        ("gather-embeddings", "module-analysis", "differential", "evaluate", "perturb-stats"),
    ),
)
STAGE_NAMES = tuple(s.name for s in STAGES)
#: Stages whose jobs are shards of the cells (of a condition).
SHARDED = ("embed", "attention", "module-attention", "perturb")


def with_needs(chosen: Sequence[str]) -> list[str]:
    """``chosen`` and every stage they need, in workflow order.

    Parameters
    ----------
    chosen
        Stage names.

    Returns
    -------
    list
        Names, in the order of :data:`STAGES`.
    """
    by_name = {s.name: s for s in STAGES}
    unknown = sorted(set(chosen) - set(by_name))
    if unknown:
        raise ValueError(f"unknown stages {unknown}; choose from {', '.join(STAGE_NAMES)}")
    wanted: set[str] = set()
    todo = list(chosen)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(by_name[name].needs)
    return [s.name for s in STAGES if s.name in wanted]


@dataclasses.dataclass(frozen=True)
class Job:
    """One process of a stage.

    Attributes
    ----------
    stage
        The stage it belongs to.
    label
        Which part of the stage (``case shard 2/5``), or ``""`` for a single job.
    argv
        The command line.
    threads
        Threads it is given (``--threads`` and the BLAS/OpenMP variables), as the rule's
        ``threads:`` (1 for rules without).
    profile
        Run under :mod:`geneattn.bench.rss_steps` (RSS by line of the command).
    """

    stage: str
    label: str
    argv: tuple[str, ...]
    threads: int = 1
    profile: bool = False

    def shell(self) -> str:
        """The command line, quoted for a shell."""
        return shlex.join(self.argv)


def shard_count(n_cells: int, cells_per_shard: int) -> int:
    """Shards of at most ``cells_per_shard`` cells covering ``n_cells`` (at least one)."""
    return max(1, math.ceil(n_cells / cells_per_shard))


class StageJobs:
    """The command lines of every stage of one study size in one work directory.

    Parameters
    ----------
    work
        Directory of the resampled counts (``counts.h5ad``) and every output.
    resources
        Fetched resources (``geneattn fetch-resources``).
    config
        The study config with schema defaults filled; needs ``conditions``.
    threads
        Threads of the stages whose rules have ``threads: 2`` (``--threads``).
    cells_per_shard
        Most cells of one condition in one shard job.
    geneattn
        How to start the command line (e.g. ``("geneattn",)``).
    """

    def __init__(
        self,
        work: Path,
        resources: Path,
        config: Mapping,
        *,
        threads: int,
        cells_per_shard: int,
        geneattn: Sequence[str],
    ) -> None:
        if not config.get("conditions"):
            raise ValueError("the stage benchmark needs a case vs control study (conditions)")
        if cells_per_shard < 1:
            raise ValueError(f"cells_per_shard must be >= 1, got {cells_per_shard}")
        self.work = Path(work)
        self.res = Path(resources)
        self.c = config
        self.threads = threads
        self.cells_per_shard = cells_per_shard
        self.geneattn = tuple(geneattn)
        cond = config["conditions"]
        self.column = cond["column"]
        self.labels = {"case": cond["case"], "control": cond["control"]}
        self.cell_test = config["modules"]["differential"] == "cells"

    # paths -------------------------------------------------------------------------------
    def path(self, name: str) -> str:
        """Path of an output (or input) of the work directory."""
        return str(self.work / name)

    def gf(self, name: str) -> str:
        """Path of a Geneformer dictionary file."""
        return str(self.res / "geneformer_v1" / name)

    def cells_after_qc(self) -> int:
        """Cells of the two conditions after QC (``qc_summary.json``)."""
        summary = json.loads(Path(self.path("qc_summary.json")).read_text(encoding="utf-8"))
        per = summary["cells_per_condition"]
        return sum(int(per.get(label, 0)) for label in self.labels.values())

    def _tokenized(self) -> dict:
        return json.loads(Path(self.path("tokenize_summary.json")).read_text(encoding="utf-8"))

    def cells_per_role(self) -> dict[str, int]:
        """Tokenized cells of each condition (``tokenize_summary.json``, as the rules count)."""
        per = self._tokenized()["cells_by_label"]
        return {role: int(per.get(label, 0)) for role, label in self.labels.items()}

    def n_shards(self) -> dict[str, int]:
        """Shards of each condition."""
        return {
            role: shard_count(n, self.cells_per_shard) for role, n in self.cells_per_role().items()
        }

    def embed_shards(self) -> int:
        """Shards of all tokenized cells (the embed stage)."""
        return shard_count(int(self._tokenized()["cells_out"]), self.cells_per_shard)

    # jobs --------------------------------------------------------------------------------
    def jobs(self, stage: str) -> list[Job]:
        """The jobs of ``stage`` (its inputs must exist for the sharded stages)."""
        method = getattr(self, "_" + stage.replace("-", "_"))
        return method()

    def _cmd(self, *args: object) -> tuple[str, ...]:
        return (*self.geneattn, *(str(a) for a in args))

    def _qc(self) -> list[Job]:
        q, inp = self.c["qc"], self.c["input"]
        argv = self._cmd(
            "qc", self.path("counts.h5ad"), "--format", "h5ad",
            *(("--layer", inp["layer"]) if inp.get("layer") else ()),
            *(("--allow-non-integer",) if inp.get("allow_non_integer") else ()),
            "--condition-column", self.column, "--keep", self.labels["case"],
            self.labels["control"], "--min-genes", q["min_genes"], "--min-cells", q["min_cells"],
            "--max-pct-mito", q["max_pct_mito"],
            *(("--max-counts", q["max_counts"]) if q.get("max_counts") is not None else ()),
            "--mito-prefix", q["mito_prefix"], "--out", self.path("qc.h5ad"),
            "--summary", self.path("qc_summary.json"), "--plot", self.path("qc.png"),
        )  # fmt: skip
        return [Job("qc", "", argv)]

    def _tokenize(self) -> list[Job]:
        t = self.c["tokenize"]
        argv = self._cmd(
            "tokenize", self.path("qc.h5ad"), "--token-dictionary", self.gf("token_dictionary.tsv"),
            "--medians-file", self.gf("gene_median_dictionary.tsv"),
            "--gene-names", self.gf("gene_name_id.tsv"), "--gene-id", self.c["input"]["gene_id"],
            "--medians", t["medians"], "--max-len", t["max_len"], "--threads", self.threads,
            "--condition-column", self.column,
            "--out", self.path("tokens.npz"), "--summary", self.path("tokenize_summary.json"),
        )  # fmt: skip
        return [Job("tokenize", "", argv, self.threads)]

    def _load_tokens_all(self) -> list[Job]:
        argv = (sys.executable, "-m", "geneattn.bench.token_load", self.path("tokens.npz"))
        return [Job("load-tokens-all", "load_tokens(path)", argv)]

    def _load_tokens_shard(self) -> list[Job]:
        n = self.cells_per_shard
        argv = (
            sys.executable, "-m", "geneattn.bench.token_load", self.path("tokens.npz"),
            "--cells", f"0:{n}",
        )  # fmt: skip
        return [Job("load-tokens-shard", f"load_tokens(path, cells=slice(0, {n}))", argv)]

    def _model(self) -> list[Job]:
        m = self.c["model"]
        argv = self._cmd(
            "model", self.path("qc.h5ad"), "--token-dictionary", self.gf("token_dictionary.tsv"),
            "--gene-names", self.gf("gene_name_id.tsv"), "--gene-id", self.c["input"]["gene_id"],
            "--d-model", m["d_model"], "--n-heads", m["n_heads"],
            "--temperature", m["temperature"], "--seed", m["seed"],
            "--value-rank", m.get("value_rank", "log"),
            "--out", self.path("model.npz"),
        )  # fmt: skip
        return [Job("model", "", argv)]

    def _embed(self) -> list[Job]:
        jobs = []
        k = self.embed_shards()
        for s in range(k):
            argv = self._cmd(
                "embed", self.path("tokens.npz"), "--model", self.path("model.npz"),
                "--obs", self.path("qc.h5ad"), "--shard", s,
                "--cells-per-shard", self.cells_per_shard, "--threads", self.threads,
                "--out", self.path(f"embeddings/shard{s}.h5ad"),
            )  # fmt: skip
            jobs.append(Job("embed", f"shard {s + 1}/{k}", argv, self.threads, profile=s == 0))
        return jobs

    def _gather_embeddings(self) -> list[Job]:
        shards = [self.path(f"embeddings/shard{s}.h5ad") for s in range(self.embed_shards())]
        argv = self._cmd("gather-embeddings", *shards, "--out", self.path("embeddings.h5ad"))
        return [Job("gather-embeddings", "", argv)]

    def _universe(self) -> list[Job]:
        a = self.c["attention"]
        argv = self._cmd(
            "universe", self.path("tokens.npz"), "--obs", self.path("qc.h5ad"),
            "--gene-names", self.gf("gene_name_id.tsv"), "--universe", a["universe"],
            "--min-cells", a["universe_min_cells"], "--max-genes", a["universe_max_genes"],
            "--out", self.path("universe.tsv"),
        )  # fmt: skip
        return [Job("universe", "", argv)]

    def _attention(self) -> list[Job]:
        jobs = []
        for role, k in self.n_shards().items():
            for s in range(k):
                argv = self._cmd(
                    "attention", self.path("tokens.npz"), "--model", self.path("model.npz"),
                    "--obs", self.path("qc.h5ad"), "--condition-column", self.column,
                    "--condition", self.labels[role], "--universe-table", self.path("universe.tsv"),
                    "--shard", s, "--cells-per-shard", self.cells_per_shard,
                    "--threads", self.threads,
                    "--out", self.path(f"attention/{role}.shard{s}.npz"),
                )  # fmt: skip
                label = f"{role} shard {s + 1}/{k}"
                jobs.append(Job("attention", label, argv, self.threads, profile=s == 0))
        return jobs

    def _gather_attention(self) -> list[Job]:
        jobs = []
        for role, k in self.n_shards().items():
            shards = [self.path(f"attention/{role}.shard{s}.npz") for s in range(k)]
            argv = self._cmd(
                "gather-attention", *shards, "--out", self.path(f"attention/{role}.npz")
            )
            jobs.append(Job("gather-attention", role, argv))
        return jobs

    def _network(self) -> list[Job]:
        n = self.c["network"]
        jobs = []
        for role in self.labels:
            argv = self._cmd(
                "network", self.path(f"attention/{role}.npz"), "--min-cells", n["min_cells"],
                "--top-k", n["top_k"], *(("--symmetrize",) if n["symmetrize"] else ()),
                "--diffusion", n["diffusion"], "--prior", n["prior"],
                "--ppi", str(self.res / "ppi" / "h_sapiens.tsv"), "--counts", self.path("qc.h5ad"),
                "--alpha", n["alpha"], "--t", n["t"], "--iterations", n["iterations"],
                "--out-npz", self.path(f"network/{role}.npz"),
                "--out-edges", self.path(f"network/{role}_edges.tsv"),
                "--out-graphml", self.path(f"network/{role}.graphml"),
            )  # fmt: skip
            jobs.append(Job("network", role, argv))
        return jobs

    def _modules(self) -> list[Job]:
        m = self.c["modules"]
        gmt = [str(self.res / "genesets" / g) for g in m["gene_sets"]]
        outputs = () if self.cell_test else (
            "--out-differential", self.path("differential.tsv"),
            "--out-graphml", self.path("modules.graphml"),
        )  # fmt: skip
        argv = self._cmd(
            "modules", "--case", self.path("network/case.npz"),
            "--control", self.path("network/control.npz"), "--detect-on", m["detect_on"],
            "--objective", m["objective"], "--resolution", m["resolution"], "--seed", m["seed"],
            "--min-size", m["min_size"], "--gmt", *gmt, "--permutations", m["permutations"],
            "--out-modules", self.path("modules.tsv"),
            "--out-enrichment", self.path("enrichment.tsv"), *outputs,
        )  # fmt: skip
        return [Job("modules", "", argv)]

    def _module_attention(self) -> list[Job]:
        if not self.cell_test:
            return []
        jobs = []
        for role, k in self.n_shards().items():
            for s in range(k):
                argv = self._cmd(
                    "module-attention", self.path("tokens.npz"), "--model", self.path("model.npz"),
                    "--obs", self.path("qc.h5ad"), "--condition-column", self.column,
                    "--condition", self.labels[role], "--modules", self.path("modules.tsv"),
                    "--shard", s, "--cells-per-shard", self.cells_per_shard,
                    "--threads", self.threads,
                    "--out", self.path(f"module_attention/{role}.shard{s}.npz"),
                )  # fmt: skip
                label = f"{role} shard {s + 1}/{k}"
                jobs.append(Job("module-attention", label, argv, self.threads, profile=s == 0))
        return jobs

    def _module_analysis(self) -> list[Job]:
        m, sample = self.c["modules"], self.c["conditions"].get("sample")
        argv = self._cmd(
            "module-analysis", "--modules", self.path("modules.tsv"),
            "--counts", self.path("qc.h5ad"), "--condition-column", self.column,
            "--case", self.labels["case"], "--control", self.labels["control"],
            *(("--sample-column", sample) if sample else ()),
            "--case-network", self.path("network/case.npz"),
            "--control-network", self.path("network/control.npz"),
            "--min-kme", m["min_kme"], "--trait-permutations", m["trait_permutations"],
            "--preservation-permutations", m["preservation_permutations"], "--seed", m["seed"],
            "--out-kme", self.path("module_kme.tsv"),
            "--out-eigengenes", self.path("module_eigengenes.tsv"),
            "--out-traits", self.path("module_traits.tsv"),
            "--out-preservation", self.path("module_preservation.tsv"),
        )  # fmt: skip
        return [Job("module-analysis", "", argv)]

    def _differential(self) -> list[Job]:
        if not self.cell_test:
            return []
        m, k = self.c["modules"], self.n_shards()
        case = [self.path(f"module_attention/case.shard{s}.npz") for s in range(k["case"])]
        control = [self.path(f"module_attention/control.shard{s}.npz") for s in range(k["control"])]
        argv = self._cmd(
            "differential", "--case-cells", *case, "--control-cells", *control,
            "--permutations", m["permutations"], "--seed", m["seed"],
            "--out", self.path("differential.tsv"), "--modules", self.path("modules.tsv"),
            "--case", self.path("network/case.npz"), "--control", self.path("network/control.npz"),
            "--detect-on", m["detect_on"], "--out-graphml", self.path("modules.graphml"),
        )  # fmt: skip
        return [Job("differential", "", argv)]

    def _evaluate(self) -> list[Job]:
        e, m = self.c["evaluation"], self.c["modules"]
        programs = [f"{name}={','.join(genes)}" for name, genes in e["programs"].items()]
        argv = self._cmd(
            "evaluate", "--modules", self.path("modules.tsv"),
            "--enrichment", self.path("enrichment.tsv"),
            *(arg for p in programs for arg in ("--program", p)),
            "--fdr", e["fdr"], "--permutations", e["permutations"],
            "--counts", self.path("qc.h5ad"), "--embeddings", self.path("embeddings.h5ad"),
            "--markers", str(self.res / "genesets" / "human_immune_cell_markers.json"),
            *(("--label-column", e["label_column"]) if e.get("label_column") else ()),
            "--resolution", m["resolution"], "--objective", m["objective"],
            "--min-size", m["min_size"], "--top-k", self.c["network"]["top_k"],
            "--seed", m["seed"], "--coexpression-out", self.path("coexpression_modules.tsv"),
            "--out", self.path("evaluation.tsv"),
        )  # fmt: skip
        return [Job("evaluate", "", argv)]

    def _perturb_plan(self) -> list[Job]:
        p = self.c["perturb"]
        argv = self._cmd(
            "perturb-plan", self.path("tokens.npz"), "--obs", self.path("qc.h5ad"),
            "--condition-column", self.column, "--case", self.labels["case"],
            "--control", self.labels["control"], "--embeddings", self.path("embeddings.h5ad"),
            "--gene-names", self.gf("gene_name_id.tsv"), "--modules", self.path("modules.tsv"),
            "--differential", self.path("differential.tsv"), "--genes-from", p["genes_from"],
            *(("--genes", *p["genes"]) if p["genes"] else ()),
            "--hubs-per-module", p["hubs_per_module"], "--disease-fdr", p["disease_fdr"],
            "--max-genes", p["max_genes"], "--min-cells", p["min_cells"],
            "--null-per-bin", p["null_per_bin"], "--seed", p["seed"],
            "--out", self.path("perturbation/plan.npz"),
            "--out-skipped", self.path("perturbation/skipped.tsv"),
        )  # fmt: skip
        return [Job("perturb-plan", "", argv)]

    def _perturb(self) -> list[Job]:
        p = self.c["perturb"]
        k = shard_count(self.cells_per_role()["case"], self.cells_per_shard)
        jobs = []
        for s in range(k):
            argv = self._cmd(
                "perturb", self.path("tokens.npz"), "--model", self.path("model.npz"),
                "--obs", self.path("qc.h5ad"), "--condition-column", self.column,
                "--case", self.labels["case"], "--plan", self.path("perturbation/plan.npz"),
                "--mode", p["mode"], "--shift", p["shift"],
                "--shard", s, "--cells-per-shard", self.cells_per_shard, "--threads", self.threads,
                "--out", self.path(f"perturbation/shard{s}.tsv"),
            )  # fmt: skip
            label = f"case shard {s + 1}/{k}"
            jobs.append(Job("perturb", label, argv, self.threads, profile=s == 0))
        return jobs

    def _perturb_stats(self) -> list[Job]:
        k = shard_count(self.cells_per_role()["case"], self.cells_per_shard)
        shards = [self.path(f"perturbation/shard{s}.tsv") for s in range(k)]
        argv = self._cmd(
            "perturb-stats", *shards, "--gene-names", self.gf("gene_name_id.tsv"),
            "--modules", self.path("modules.tsv"), "--obs", self.path("qc.h5ad"),
            *(("--sample-column", sample) if (sample := self.c["conditions"].get("sample")) else ()
              ),
            "--out", self.path("perturbation.tsv"),
        )  # fmt: skip
        return [Job("perturb-stats", "", argv)]

    def _report(self) -> list[Job]:
        import yaml

        config_file = self.work / "config.yaml"
        config_file.write_text(yaml.safe_dump(dict(self.c), sort_keys=False), encoding="utf-8")
        argv = self._cmd(
            "report", "--study", self.c["study"], "--config-yaml", config_file,
            "--qc-summary", self.path("qc_summary.json"), "--qc", self.path("qc.h5ad"),
            "--embeddings", self.path("embeddings.h5ad"), "--modules", self.path("modules.tsv"),
            "--module-graph", self.path("modules.graphml"),
            "--enrichment", self.path("enrichment.tsv"),
            "--differential", self.path("differential.tsv"),
            "--evaluation", self.path("evaluation.tsv"),
            "--perturbation", self.path("perturbation.tsv"),
            "--module-traits", self.path("module_traits.tsv"),
            "--module-preservation", self.path("module_preservation.tsv"),
            "--skipped", self.path("perturbation/skipped.tsv"),
            "--fdr", self.c["evaluation"]["fdr"], "--threads", 1,
            "--out", self.path("report.html"),
        )  # fmt: skip
        return [Job("report", "", argv)]

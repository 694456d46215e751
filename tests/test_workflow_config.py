"""What a newcomer sees on the terminal: config mistakes before any job, job errors in full.

Bad configs are refused by the Snakefile's checks (``check_config`` in common.smk) in a dry
run, one line per problem naming the config key; a job that fails has its error printed on the
terminal by the Snakefile's ``onerror`` handler (``show_job_errors`` in common.smk).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from workflow_runs import prepare_workdir, snakemake_command

#: Dry runs parse the workflow only; a few seconds each on idle cores.
TIMEOUT = 600


@pytest.fixture(scope="module")
def workdir(resources_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch copy of the workflow, shared by the dry runs of this module."""
    return prepare_workdir(tmp_path_factory.mktemp("config_checks"), resources_dir)


def _snakemake(workdir: Path, *args: str, config: dict | None = None, name: str = "x"):
    if config is not None:
        path = workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        args = (*args, "--configfile", path.name)
    return subprocess.run(
        snakemake_command(*args, cores=1),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def _problems(proc: subprocess.CompletedProcess) -> list[str]:
    """The lines after 'bad config:' of a refused run (up to the traceback's File lines)."""
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    lines = out.splitlines()
    start = lines.index("bad config:") + 1
    problems = []
    for line in lines[start:]:
        if line.startswith("  File "):
            break
        problems.append(line)
    return problems


def test_every_config_problem_is_one_line_before_any_job(workdir: Path) -> None:
    empty = workdir / "empty_model"
    empty.mkdir()
    proc = _snakemake(
        workdir,
        "-n",
        name="bad_paths",
        config={
            "study": "bad_paths",
            "input": {"path": "data/nothere.h5ad", "obs": "data/cells.tsv"},
            "model": {"kind": "checkpoint", "path": str(empty)},
            "modules": {"gene_sets": ["hallmark.gmt", "my_sets.gmt"]},
            "perturb": {
                "genes_from": "list",
                # ENSA is a symbol (not an Ensembl ID); ccl5 is mis-cased; NOTAGENE is unknown
                "genes": ["ENSA", "ccl5", "NOTAGENE", "ENSG00000271503", "CCL5"],
            },
        },
    )
    names = "resources/geneformer_v1/gene_name_id.tsv"
    assert _problems(proc) == [
        "input.path: data/nothere.h5ad does not exist (the raw counts file or 10x directory)",
        "input.obs: data/cells.tsv does not exist (a .csv/.tsv cell metadata table)",
        f"model.path: {empty} holds no config.json",
        f"model.path: {empty} holds no *.safetensors weights",
        "modules.gene_sets: resources/genesets/my_sets.gmt does not exist",
        f"perturb.genes: 'ccl5' is neither a gene symbol of {names} nor an Ensembl ID "
        "(such as ENSG00000141510); did you mean CCL5?",
        f"perturb.genes: 'NOTAGENE' is neither a gene symbol of {names} nor an Ensembl ID "
        "(such as ENSG00000141510)",
    ]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (workdir / "results" / "bad_paths").exists()


@pytest.mark.parametrize(
    ("model", "perturb", "expected"),
    [
        (
            {"kind": "checkpoint", "path": "models/gf-6L-30M-i2048"},
            {"genes_from": "list", "genes": []},
            [
                "model.path: models/gf-6L-30M-i2048 does not exist (a Hugging Face model "
                "directory)",
                "perturb.genes: empty, but perturb.genes_from: list perturbs the genes listed "
                "there (give symbols or Ensembl IDs, or use genes_from: hubs)",
            ],
        ),
        (
            {"kind": "checkpoint", "path": "weights_only"},
            {},
            ["model.path: weights_only holds no config.json"],
        ),
        (
            {"kind": "checkpoint"},
            {},
            [
                "model.path: model.kind: checkpoint needs model.path (a Hugging Face model "
                "directory with config.json and *.safetensors)"
            ],
        ),
    ],
)
def test_checkpoint_and_gene_list_problems(workdir: Path, model, perturb, expected) -> None:
    weights = workdir / "weights_only"
    weights.mkdir(exist_ok=True)
    (weights / "model.safetensors").write_bytes(b"")
    proc = _snakemake(
        workdir,
        "-n",
        name="bad_model",
        config={"study": "bad_model", "model": model, "perturb": perturb},
    )
    assert _problems(proc) == expected


@pytest.mark.parametrize(
    ("perturb", "expected"),
    [
        (
            {"geneformer_stats": "vs_null"},
            [
                "perturb.geneformer_stats: vs_null is the mode of perturbation_geneformer.tsv, "
                "which needs geneformer_table: true",
                "perturb.null_study: empty, but geneformer_stats: vs_null compares with a null "
                "study (its results directory, which a run with geneformer_table: true fills)",
            ],
        ),
        (
            {
                "geneformer_table": True,
                "geneformer_stats": "vs_null",
                "alt_states": ["Tumor", "Blood", "Blood"],
                "null_study": "results/no_such_study",
            },
            [
                "perturb.alt_states: used by geneformer_stats: goal_state_shift only, not vs_null",
                "perturb.alt_states: 'Tumor' is the case label (conditions), not an alternative "
                "end state",
                "perturb.alt_states: a label is listed twice",
                "perturb.null_study: results/no_such_study does not exist (another study's "
                "results directory or its perturbation_cells.tsv)",
            ],
        ),
        (
            {"geneformer_table": True, "geneformer_stats": "vs_null", "null_study": "empty_dir"},
            [
                "perturb.null_study: empty_dir holds no perturbation_cells.tsv (run that study "
                "with perturb.geneformer_table: true)"
            ],
        ),
        (
            {"alt_states": ["Blood"], "null_study": "empty_dir"},
            [
                "perturb.alt_states: set, but only perturbation_geneformer.tsv uses them, which "
                "needs geneformer_table: true",
                "perturb.null_study: set, but only geneformer_stats: vs_null uses it (not "
                "goal_state_shift)",
            ],
        ),
    ],
)
def test_geneformer_stats_problems(workdir: Path, perturb, expected) -> None:
    (workdir / "empty_dir").mkdir(exist_ok=True)
    proc = _snakemake(
        workdir, "-n", name="bad_stats", config={"study": "bad_stats", "perturb": perturb}
    )
    assert _problems(proc) == expected


def test_good_geneformer_stats_options_plan(workdir: Path) -> None:
    """vs_null against a results directory holding perturbation_cells.tsv; alt_states plan
    their cells' own QC, tokens and embeddings."""
    null = workdir / "results" / "null_study"
    null.mkdir(parents=True, exist_ok=True)
    (null / "perturbation_cells.tsv").write_text("gene_id\n")
    for perturb in (
        {"geneformer_table": True, "geneformer_stats": "vs_null", "null_study": str(null)},
        {"geneformer_table": True, "alt_states": ["Blood"]},
    ):
        proc = _snakemake(
            workdir, "-n", name="good_stats", config={"study": "good_stats", "perturb": perturb}
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0 and "bad config" not in out, out
    assert "alt_states_embed" in out and "alt_states_qc" in out


def test_condition_column_missing_from_the_metadata_table(workdir: Path) -> None:
    (workdir / "cells.tsv").write_text("barcode\tdisease\tpatient\nAAAC-1\tDCM\tP1\n")
    proc = _snakemake(
        workdir,
        "-n",
        name="bad_column",
        config={"study": "bad_column", "input": {"obs": "cells.tsv"}},  # column: source
    )
    assert _problems(proc) == [
        "conditions.column: 'source' is not a column of cells.tsv (its columns after the "
        "barcodes: disease, patient)"
    ]


def test_a_good_gene_list_passes_the_checks(workdir: Path, tmp_path: Path) -> None:
    """Symbols (ENSA among them), Ensembl IDs with or without a version: the dry run plans."""
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    (checkpoint / "model.safetensors").write_bytes(b"")
    proc = _snakemake(
        workdir,
        "-n",
        name="good",
        config={
            "study": "good",
            "model": {"kind": "checkpoint", "path": str(checkpoint)},
            "perturb": {
                "genes_from": "list",
                "genes": ["ENSA", "CCL5", "ENSG00000271503", "ENSG00000271503.2"],
            },
        },
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "bad config" not in proc.stdout + proc.stderr


def test_slurm_profile_still_plans_the_demo(workdir: Path) -> None:
    """An explicit --workflow-profile replaces the default profile; the SLURM one still works."""
    proc = _snakemake(workdir, "-n", "--workflow-profile", "workflow/profiles/slurm")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "qc" in out and "tokenize" in out


def _short_row_study(workdir: Path) -> Path:
    counts = workdir / "short_row.csv"
    counts.write_text(",CD3E,CD8A,GZMB\nc1,1,2,3\nc2,4,5\n", encoding="utf-8")
    config = workdir / "short_row.yaml"
    config.write_text(
        yaml.safe_dump({"study": "short_row", "input": {"path": counts.name}, "conditions": None}),
        encoding="utf-8",
    )
    return config


def test_a_failing_job_prints_its_error_on_the_terminal(workdir: Path) -> None:
    """The onerror handler brings the job's one-line error from its log to the terminal."""
    config = _short_row_study(workdir)
    target = "results/short_row/qc.h5ad"
    message = (
        "geneattn qc: error: short_row.csv: line 3 is a short row: 3 fields where 4 are "
        "expected (the name and 3 genes), row 'c2'"
    )
    proc = _snakemake(workdir, target, "--configfile", config.name)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    lines = out.splitlines()
    start = lines.index("Errors of the failed jobs (every job's log is under logs/short_row/):")
    assert lines[start + 1 : start + 3] == ["  logs/short_row/qc.log:", f"    {message}"], out
    assert not (workdir / target).exists()

    # --show-failed-logs (set by the SLURM profile) prints the whole log instead, once
    proc = _snakemake(workdir, target, "--configfile", config.name, "--show-failed-logs")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert out.count(message) == 1, out
    assert "Errors of the failed jobs" not in out


def test_mtx_counts_get_their_conditions_from_input_obs(workdir: Path) -> None:
    """The demo as a 10x mtx directory (no cell labels) plus input.obs: QC keeps the same cells.

    The README's "Your own data" case: before input.obs, this failed with "no obs column
    'source' ...; available columns: none".
    """
    import gzip
    import json

    import anndata as ad
    import scipy.io
    import scipy.sparse as sp

    demo = ad.read_h5ad(workdir / "resources" / "wu2020_200.h5ad")
    mtx = workdir / "wu2020_mtx"
    mtx.mkdir()
    with gzip.open(mtx / "matrix.mtx.gz", "wb") as fh:
        scipy.io.mmwrite(fh, sp.coo_matrix(sp.csr_matrix(demo.X).T))
    with gzip.open(mtx / "features.tsv.gz", "wt") as fh:
        fh.writelines(f"{g}\t{g}\tGene Expression\n" for g in demo.var_names)
    with gzip.open(mtx / "barcodes.tsv.gz", "wt") as fh:
        fh.writelines(f"{c}\n" for c in demo.obs_names)
    # the table in another order than the counts, with a cell the counts do not have
    table = demo.obs[["source", "patient"]].astype(str).iloc[::-1]
    lines = ["barcode\tsource\tpatient", "extra-cell\tTumor\tPX"]
    lines += [f"{c}\t{s}\t{p}" for c, (s, p) in zip(table.index, table.to_numpy(), strict=True)]
    (workdir / "wu2020_cells.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    target = "results/mtx_study/qc_summary.json"
    proc = _snakemake(
        workdir,
        target,
        name="mtx_study",
        config={
            "study": "mtx_study",
            "input": {"path": "wu2020_mtx", "obs": "wu2020_cells.tsv"},
        },
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((workdir / target).read_text(encoding="utf-8"))
    assert summary["cells_per_condition"] == {"Tumor": 95, "NAT": 81}  # as the h5ad demo
    log = (workdir / "logs" / "mtx_study" / "qc.log").read_text(encoding="utf-8")
    assert "1 of 201 rows are for cells not in the counts" in log

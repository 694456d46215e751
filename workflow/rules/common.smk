# Helpers shared by the rule files.

import json
import math
import os
import re
import shlex
import sys

# Rules call the `geneattn` console script. Put the interpreter running Snakemake first on
# PATH so `.venv/bin/snakemake` finds the venv's geneattn without activating the venv; with
# --software-deployment-method conda the env's own bin is prepended later and wins.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

STUDY = config["study"]
RES = config["resources"]["dir"]
OUT = f"results/{STUDY}"
LOGS = f"logs/{STUDY}"
BENCH = f"benchmarks/{STUDY}"
ENV = "../../envs/geneattn.yaml"

# Roles of the study's cells: case and control, or one role "all" for a single-condition
# study (`conditions: null`), whose cells `geneattn qc` labels "all" in obs column
# "condition".
if config["conditions"]:
    CONDITION_COLUMN = config["conditions"]["column"]
    CONDITIONS = {"case": config["conditions"]["case"], "control": config["conditions"]["control"]}
else:
    CONDITION_COLUMN = "condition"
    CONDITIONS = {"all": "all"}
ROLES = list(CONDITIONS)

# A pretrained checkpoint (`model.kind: checkpoint`): its weight files, sharded or not
# (check_config() below refuses a missing or empty directory before any job runs).
CHECKPOINT_WEIGHTS = []
if config["model"]["kind"] == "checkpoint" and os.path.isdir(config["model"]["path"] or ""):
    CHECKPOINT_WEIGHTS = sorted(
        os.path.join(config["model"]["path"], name)
        for name in os.listdir(config["model"]["path"])
        if name.endswith(".safetensors")
    )


# -- checks of the config when the workflow starts ----------------------------------------
# Paths and gene lists that would otherwise fail only after QC and tokenization ran, each
# reported in one line naming the config key. Plain Python on purpose: Snakemake may run
# from an environment without geneattn (--software-deployment-method conda).

#: Ensembl gene IDs as geneattn reads them: ENSG00000141510, ENSMUSG00000059552, with an
#: optional version suffix.
ENSEMBL_ID = re.compile(r"ENS[A-Z]*G\d{11}(\.\d+)?")


def config_problems(fetched=()):
    """One line per problem of the config that would fail a job later; [] when none.

    `fetched`: paths the fetch_resources rule makes, which need not exist yet.
    """
    problems = []
    fetched = {os.path.normpath(p) for p in fetched}

    def missing(path):
        return not os.path.exists(path) and os.path.normpath(path) not in fetched

    path = config["input"]["path"]
    if missing(path):
        problems.append(f"input.path: {path} does not exist (the raw counts file or 10x directory)")
    obs = config["input"].get("obs")
    if obs and not os.path.isfile(obs):
        problems.append(
            f"input.obs: {obs} " + ("is not a file" if os.path.exists(obs) else "does not exist")
            + " (a .csv/.tsv cell metadata table)"
        )
    elif obs and config["conditions"]:
        columns = _table_columns(obs)
        column = config["conditions"]["column"]
        if columns is not None and column not in columns[1:]:
            problems.append(
                f"conditions.column: {column!r} is not a column of {obs} (its columns after "
                f"the barcodes: {', '.join(columns[1:]) or 'none'})"
            )
    problems += _checkpoint_problems(config["model"])
    for name in config["modules"]["gene_sets"]:
        gmt = os.path.join(RES, "genesets", name)
        if missing(gmt):
            problems.append(f"modules.gene_sets: {gmt} does not exist")
    problems += _perturb_gene_problems(config["perturb"])
    problems += _perturb_stats_problems(
        config["perturb"], config["conditions"], config["tokenize"]["medians"]
    )
    return problems


#: What a run with perturb.geneformer_table: true keeps of its per-cell shifts (the null
#: of other studies' vs_null stats; geneattn.geneformer_stats.CELLS_FILE).
NULL_CELLS_FILE = "perturbation_cells.tsv"


def null_study_file(path):
    """The per-cell shift table of perturb.null_study: a results directory's, or the file."""
    return os.path.join(path, NULL_CELLS_FILE) if os.path.isdir(path) else path


def _perturb_stats_problems(perturb, conditions, medians):
    stats, alt, null = perturb["geneformer_stats"], perturb["alt_states"], perturb["null_study"]
    problems = []
    if not perturb["geneformer_table"]:
        if stats != "goal_state_shift":
            problems.append(f"perturb.geneformer_stats: {stats} is the mode of "
                            "perturbation_geneformer.tsv, which needs geneformer_table: true")
        if alt:
            problems.append("perturb.alt_states: set, but only perturbation_geneformer.tsv "
                            "uses them, which needs geneformer_table: true")
    if alt and stats != "goal_state_shift":
        problems.append(f"perturb.alt_states: used by geneformer_stats: goal_state_shift only, "
                        f"not {stats}")
    if alt and not conditions:
        problems.append("perturb.alt_states: a single-condition study (conditions: null) has "
                        "no goal state for alternative end states")
    elif alt:
        for state in alt:
            for role in ("case", "control"):
                if state == conditions[role]:
                    problems.append(f"perturb.alt_states: {state!r} is the {role} label "
                                    "(conditions), not an alternative end state")
        if len(set(alt)) != len(alt):
            problems.append("perturb.alt_states: a label is listed twice")
        if medians == "corpus":
            problems.append("perturb.alt_states: the alternative states' cells are tokenized "
                            "apart, so tokenize.medians: corpus would rank them by other "
                            "medians (use geneformer_v1 or dictionary)")
    if null and stats != "vs_null":
        problems.append(f"perturb.null_study: set, but only geneformer_stats: vs_null uses it "
                        f"(not {stats})")
    if stats == "vs_null" and not null:
        problems.append("perturb.null_study: empty, but geneformer_stats: vs_null compares "
                        "with a null study (its results directory, which a run with "
                        "geneformer_table: true fills)")
    elif stats == "vs_null" and not os.path.exists(null):
        problems.append(f"perturb.null_study: {null} does not exist (another study's results "
                        f"directory or its {NULL_CELLS_FILE})")
    elif stats == "vs_null" and not os.path.isfile(null_study_file(null)):
        problems.append(f"perturb.null_study: {null} holds no {NULL_CELLS_FILE} (run that "
                        "study with perturb.geneformer_table: true)")
    return problems


def _table_columns(path):
    """The header fields of a .csv/.tsv[.gz] table, or None if it cannot be read here."""
    import csv
    import gzip

    name = path.lower().removesuffix(".gz")
    sep = "," if name.endswith(".csv") else "\t"
    opener = gzip.open if path.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as fh:
            return next(csv.reader(fh, delimiter=sep), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return None  # geneattn qc says what is wrong with it


def _checkpoint_problems(model):
    if model["kind"] != "checkpoint":
        return []
    where = model["path"]
    if not where:
        return ["model.path: model.kind: checkpoint needs model.path (a Hugging Face model "
                "directory with config.json and *.safetensors)"]
    if not os.path.exists(where):
        return [f"model.path: {where} does not exist (a Hugging Face model directory)"]
    if not os.path.isdir(where):
        return [f"model.path: {where} is not a directory (a Hugging Face model directory)"]
    problems = []
    if not os.path.isfile(os.path.join(where, "config.json")):
        problems.append(f"model.path: {where} holds no config.json")
    if not CHECKPOINT_WEIGHTS:
        problems.append(f"model.path: {where} holds no *.safetensors weights")
    dictionary = model["token_dictionary"]
    if dictionary and not os.path.isfile(dictionary):
        problems.append(f"model.token_dictionary: {dictionary} does not exist")
    return problems


def _perturb_gene_problems(perturb):
    if perturb["genes_from"] != "list":
        return []
    if not perturb["genes"]:
        return ["perturb.genes: empty, but perturb.genes_from: list perturbs the genes listed "
                "there (give symbols or Ensembl IDs, or use genes_from: hubs)"]
    names = os.path.join(RES, "geneformer_v1", "gene_name_id.tsv")
    if not os.path.isfile(names):
        return []  # not fetched yet: perturb_plan checks the genes against it
    with open(names, encoding="utf-8") as fh:
        symbols = {line.split("\t", 1)[0] for line in fh}
    upper = {}
    for symbol in sorted(symbols):
        upper.setdefault(symbol.upper(), symbol)
    problems = []
    for gene in perturb["genes"]:
        if gene in symbols or ENSEMBL_ID.fullmatch(gene):
            continue
        hint = f"; did you mean {upper[gene.upper()]}?" if gene.upper() in upper else ""
        problems.append(
            f"perturb.genes: {gene!r} is neither a gene symbol of {names} nor an Ensembl ID "
            f"(such as ENSG00000141510){hint}"
        )
    return problems


def check_config(fetched=()):
    """Stop the workflow before any job runs if config_problems() finds anything."""
    from snakemake.exceptions import WorkflowError

    problems = config_problems(fetched)
    if problems:
        raise WorkflowError("bad config:\n" + "\n".join(problems))


def opt(flag, value):
    """Render `--flag value` for the command line, or nothing when value is None."""
    return "" if value is None else f"{flag} {shlex.quote(str(value))}"


# Sharded stages (embed, attention, module_attention, perturb) take at most
# CELLS_PER_SHARD cells per job; how many jobs a stage has depends on how many cells the
# tokenize checkpoint kept, per label (its summary's cells_by_label).
CELLS_PER_SHARD = config["shards"]["cells"]


def tokenized_cells(label=None):
    """Cells in tokens.npz, all of them or those labelled `label` (after tokenize ran)."""
    with open(checkpoints.tokenize.get().output.summary) as fh:
        summary = json.load(fh)
    if label is None:
        return summary["cells_out"]
    return summary["cells_by_label"].get(label, 0)


def shard_ids(label=None):
    """Shard numbers of `label`'s cells (all cells when None), as geneattn.shards counts."""
    return range(max(1, math.ceil(tokenized_cells(label) / CELLS_PER_SHARD)))


def role_shards(pattern, role):
    """`pattern` (with {role} and {shard}) for every shard of the cells of `role`."""
    return expand(pattern, role=role, shard=shard_ids(CONDITIONS[role]))


def mem_mb(base, per_input_mb=0.0):
    """A `mem_mb` resource: `base` MB plus `per_input_mb` per MB of input, more per retry."""

    def size(wildcards, input, attempt):
        return int((base + per_input_mb * input.size_mb) * attempt)

    return size


def runtime(base, per_input_mb=0.0):
    """A `runtime` resource in minutes, sized from the input like `mem_mb`."""

    def minutes(wildcards, input, attempt):
        return int((base + per_input_mb * input.size_mb) * attempt)

    return minutes


# -- a failed job's error on the terminal ---------------------------------------------------
# Every rule sends its command's output to logs/{study}/{rule}.log, where the one-line error
# of a bad input would otherwise stay: Snakemake says only "check log file(s) for error
# details". The Snakefile's onerror handler calls show_job_errors, which finds the failed
# jobs' logs in Snakemake's own log and prints their error lines. (A default workflow profile
# with show-failed-logs would have to be profiles/default/ beside the Snakefile, at the top
# of the repository; the SLURM profile sets show-failed-logs itself, and then this stays
# quiet instead of printing the errors twice.)

#: A failed job's log line in Snakemake's log (also of a job in a group).
_FAILED_LOG = re.compile(r"^\s+log: (.+) \(check log file\(s\) for error details\)$")
#: What `geneattn` prints for bad input (geneattn.cli.main).
_CLI_ERROR = re.compile(r"^geneattn [\w-]+: error: ")


def failed_job_logs(snakemake_log_text):
    """The log files of the jobs Snakemake reported as failed, in order, each once."""
    found = []
    for line in snakemake_log_text.splitlines():
        match = _FAILED_LOG.match(line)
        if match:
            found += [p for p in match.group(1).split(", ") if p not in found]
    return found


def job_error_lines(text, n_tail=5):
    """The error of a job's log: geneattn's one-line errors, else its last lines."""
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if _CLI_ERROR.match(line)]
    if errors:
        return errors
    if any(line.startswith("Traceback (most recent call last)") for line in lines):
        return lines[-1:]  # the exception and its message
    return lines[-n_tail:]


def show_job_errors(snakemake_logs):
    """onerror: print the error of every failed job, read from its log file."""
    settings = getattr(workflow, "output_settings", None)
    if getattr(settings, "show_failed_logs", False):
        return  # Snakemake printed the whole logs already
    paths = [snakemake_logs] if isinstance(snakemake_logs, str) else list(snakemake_logs or [])
    text = ""
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                text += fh.read()
        except OSError:
            pass
    shown = []  # (not "report": a Snakemake keyword at the start of a line)
    for job_log in failed_job_logs(text):
        try:
            with open(job_log, encoding="utf-8", errors="replace") as fh:
                lines = job_error_lines(fh.read())
        except OSError:
            lines = ["(no log file was written)"]
        shown.append(f"  {job_log}:")
        shown += [f"    {line}" for line in lines] or ["    (the log is empty)"]
    if shown:
        print(
            f"Errors of the failed jobs (every job's log is under {LOGS}/):",
            *shown,
            sep="\n",
            file=sys.stderr,
        )

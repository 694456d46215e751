# Helpers shared by the rule files.

import json
import math
import os
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

# A pretrained checkpoint (`model.kind: checkpoint`): its weight files, sharded or not.
if config["model"]["kind"] == "checkpoint":
    if not config["model"]["path"]:
        raise ValueError("model.kind: checkpoint needs model.path (a Hugging Face directory)")
    CHECKPOINT_WEIGHTS = sorted(
        os.path.join(config["model"]["path"], name)
        for name in os.listdir(config["model"]["path"])
        if name.endswith(".safetensors")
    )


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

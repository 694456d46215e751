# Helpers shared by the rule files.

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


def opt(flag, value):
    """Render `--flag value` for the command line, or nothing when value is None."""
    return "" if value is None else f"{flag} {shlex.quote(str(value))}"

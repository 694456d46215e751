# Helpers shared by the rule files.

import shlex

STUDY = config["study"]
RES = config["resources"]["dir"]
OUT = f"results/{STUDY}"
LOGS = f"logs/{STUDY}"
BENCH = f"benchmarks/{STUDY}"
ENV = "../../envs/geneattn.yaml"


def opt(flag, value):
    """Render `--flag value` for the command line, or nothing when value is None."""
    return "" if value is None else f"{flag} {shlex.quote(str(value))}"

#!/usr/bin/env bash
# Snakemake runs this once, inside the freshly created conda env, from the directory it was
# started in: the geneattn checkout (see README.md, "With conda").
set -euo pipefail
if [ ! -f pyproject.toml ] || [ ! -f envs/constraints.txt ]; then
    echo "run snakemake from the geneattn checkout: no pyproject.toml here ($PWD)" >&2
    exit 1
fi
python -m pip install --quiet -c envs/constraints.txt .

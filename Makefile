# The two entry points a newcomer types: `make demo` and `make test`.
# Both create .venv if it is missing and install only what is out of date, so a second run
# neither rebuilds the Rust extension nor reinstalls the Python packages.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMPS := .stamps
CORES  ?= all

RUST_SOURCES := $(wildcard kernels/src/*.rs kernels/src/*/*.rs) kernels/Cargo.toml kernels/Cargo.lock

export PATH := $(abspath $(BIN)):$(PATH)
export VIRTUAL_ENV := $(abspath $(VENV))

.PHONY: demo test lint check-rust pytest workflow-check bench bench-torch setup clean

demo: setup
	$(BIN)/snakemake --cores $(CORES)

test: setup lint check-rust pytest workflow-check

setup: $(STAMPS)/deps $(STAMPS)/kernels

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Third-party packages, pinned by envs/constraints.txt (written by `pip freeze` on a known-good setup).
$(STAMPS)/deps: pyproject.toml envs/constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c envs/constraints.txt \
	    numpy scipy pandas anndata scanpy h5py loompy matplotlib networkx igraph leidenalg \
	    pyyaml jsonschema psutil safetensors umap-learn \
	    snakemake snakemake-executor-plugin-slurm pytest pytest-xdist hypothesis ruff maturin
	@mkdir -p $(STAMPS) && touch $@

# The package itself, editable, with the Rust extension built in release mode into src/geneattn/.
$(STAMPS)/kernels: $(STAMPS)/deps $(RUST_SOURCES)
	$(BIN)/maturin develop --release --locked --quiet
	@mkdir -p $(STAMPS) && touch $@

lint:
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

check-rust:
	cd kernels && cargo fmt --check
	cd kernels && cargo clippy --all-targets --locked --quiet -- -D warnings
	cd kernels && cargo test --locked --quiet

# Two workers (pytest-xdist); the demo run the end-to-end tests compare with is made once
# for both (tests/conftest.py).
pytest:
	$(BIN)/python -m pytest -q -n 2

workflow-check:
	$(BIN)/snakemake --lint
	$(BIN)/snakemake -n --quiet rules

# Every benchmark (ratio suites and stage scaling) through the workflow's `bench` rule, which
# writes results/bench/ (tables and plots) and logs/bench.log; forced, so it always reruns.
bench: setup
	$(BIN)/snakemake --cores $(CORES) --forcerun bench bench

# Optional: PyTorch and transformers in a separate venv (.bench-torch), never in the project's
# dependencies. `geneattn bench checkpoint` runs its PyTorch rows in a subprocess with this
# interpreter when it exists (or the one named by GENEATTN_BENCH_TORCH) and skips them otherwise.
# PyPI's Linux torch wheel pulls in the CUDA runtime packages too (a few GiB); only the CPU is used.
BENCH_TORCH := .bench-torch

bench-torch: $(BENCH_TORCH)/bin/python
	$(BENCH_TORCH)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_TORCH)/bin/python -m pip install --quiet numpy threadpoolctl torch transformers
	$(BENCH_TORCH)/bin/python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"

$(BENCH_TORCH)/bin/python:
	$(PYTHON) -m venv $(BENCH_TORCH)

clean:
	rm -rf $(STAMPS) kernels/target src/geneattn/_kernels*.so

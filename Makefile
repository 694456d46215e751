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

.PHONY: demo test lint check-rust pytest workflow-check bench setup clean

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
	    snakemake snakemake-executor-plugin-slurm pytest hypothesis ruff maturin
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

pytest:
	$(BIN)/python -m pytest -q

workflow-check:
	$(BIN)/snakemake --lint
	$(BIN)/snakemake -n --quiet rules

# Every benchmark (ratio suites and stage scaling) through the workflow's `bench` rule, which
# writes results/bench/ (tables and plots) and logs/bench.log; forced, so it always reruns.
bench: setup
	$(BIN)/snakemake --cores $(CORES) --forcerun bench bench

clean:
	rm -rf $(STAMPS) kernels/target src/geneattn/_kernels*.so

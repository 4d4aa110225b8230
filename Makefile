# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv when needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-slow test-all test-cluster lint bench clean

venv: $(STAMP)

# torch first and pinned: the CPU wheel on disk; an open range would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: venv
	$(BIN)/unlearn-sweep run quickstart

# The suite waits more than it computes (Ray start-ups, subprocesses): two pytest-xdist workers, one
# test file each at a time (module fixtures such as a Ray cluster stay within one worker).
# `make test TEST_WORKERS=0` runs it in one process.
TEST_WORKERS ?= 2
test: venv
	$(BIN)/python -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

# the slow tests alone (fresh clones, real signals on Ray, end-to-end tables): about 25 minutes
test-slow: venv
	$(BIN)/python -m pytest -m 'slow and not gpu and not cluster'

test-all: venv
	$(BIN)/python -m pytest -m ''

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

# real clusters on this machine (network namespaces, SLURM; tests/cluster_util.py): root, `ip`,
# and Debian's slurm-wlm for the SLURM tests; skipped where missing. About 10 minutes.
test-cluster: venv
	$(BIN)/python -m pytest -m cluster

# measurements land in runs/bench/ (git-ignored); bench/results/ holds the committed reference runs
bench: venv
	mkdir -p runs/bench
	$(BIN)/python bench/trial_throughput.py --tiny --out runs/bench/trial_throughput_cpu_tiny.json
	$(BIN)/python bench/analysis_scale.py --configs 10000 --seeds 3 --out runs/bench/analysis_scale.json

clean:
	rm -rf $(VENV) runs .cache

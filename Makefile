# lstsd: `make help` lists the targets. `make run` and `make test` work on a fresh clone: they create .venv
# and install the package (editable) with its dependencies first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export WANDB_MODE ?= disabled

.DEFAULT_GOAL := help
.PHONY: help install run evidence test test-slow test-slurm gpu-check docs clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@echo "make install: lstsd (editable) and every extra into $(VENV): 1.5 to 4 min and 6.5 GB on a fresh clone (mostly PyTorch)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]" | grep -E --line-buffered "^(Collecting|Successfully)"; test $${PIPESTATUS[0]} -eq 0
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install lstsd with every extra (editable): what make run, make test and make docs need

run: $(STAMP) ## The main job: LSTSD Tables 1 and 3 on MNIST-1D, 9 methods x 5 seeds (10 to 12 min on 2 cores), then the table
	$(BIN)/lstsd experiment=demo

EVIDENCE ?= multirun/evidence
evidence: $(STAMP) ## The README's evidence: its claims on 20 seeds, the KD baselines, Figure 2, the lambda grid and its confirmation (about 3 h on 2 cores)
	$(BIN)/lstsd experiment=mnist1d_evidence hydra.sweep.dir=$(EVIDENCE)/mnist1d_evidence
	$(BIN)/lstsd experiment=mnist1d_core hydra.sweep.dir=$(EVIDENCE)/mnist1d_core
	$(BIN)/lstsd experiment=mnist1d_kd hydra.sweep.dir=$(EVIDENCE)/mnist1d_kd
	$(BIN)/lstsd experiment=mnist1d_fig2 hydra.sweep.dir=$(EVIDENCE)/mnist1d_fig2
	$(BIN)/lstsd experiment=mnist1d_grid hydra.sweep.dir=$(EVIDENCE)/mnist1d_grid
	$(BIN)/lstsd experiment=mnist1d_grid_confirm hydra.sweep.dir=$(EVIDENCE)/mnist1d_grid_confirm \
	    hydra.searchpath=[file://$(abspath $(EVIDENCE))/mnist1d_grid/report/conf]

test: $(STAMP) ## Run the test suite (the default, fast part)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP) ## Run only the slow end-to-end tests
	$(BIN)/python -m pytest -q -m slow

test-slurm: $(STAMP) ## SLURM launcher tests on a throwaway single-node cluster (tools/slurm/cluster.sh; as root it apt-installs slurm-wlm, munge)
	LSTSD_SLURM_TESTS=1 $(BIN)/python -m pytest -q -rs --durations=0 tests/slurm

gpu-check: $(STAMP) ## On a machine with a CUDA GPU: every GPU path checked and timed (about 8 min), figures into the folder OUT (default gpu-check/)
	$(BIN)/python tools/gpu_check.py --out $${OUT:-gpu-check}

docs: $(STAMP) ## Build the documentation site into site/, offline and strict (open site/index.html)
	$(BIN)/mkdocs build --strict --site-dir site

clean: ## Remove run outputs (outputs/, multirun/)
	rm -rf outputs multirun

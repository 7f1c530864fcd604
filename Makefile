# The README's entry points. Each makes .venv when it is missing or stale, with a Python hpsearch supports:
# PYTHON if set (make PYTHON=/usr/bin/python3.12 test), else python3 if new enough, else the newest python3.X on
# PATH; if none fits, one line says which versions work (scripts/python.sh reads them from pyproject.toml).
PYTHON ?=
VENV ?= .venv
BIN := $(VENV)/bin
PY_SH := sh scripts/python.sh

.PHONY: pipeline wide test test-fast ui dashboard screenshots bench clean

# Told which Python to use: a venv made by another one is made again.
ifneq ($(PYTHON),)
ifneq ($(shell $(PY_SH) same '$(PYTHON)' '$(VENV)'),yes)
.PHONY: $(BIN)/.installed
endif
endif

$(BIN)/.installed: pyproject.toml
	$(eval PICKED := $(shell $(PY_SH) pick '$(PYTHON)' '$(VENV)'))$(if $(filter /%,$(PICKED)),,$(error $(or $(PICKED),scripts/python.sh found no Python)))
	$(PY_SH) venv '$(PICKED)' '$(VENV)'
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,postgres,dashboard]'
	touch $@

## Run the whole pipeline: coarse, fine, confirm, final training (downloads CIFAR-10 unless HPSEARCH_DATA is set)
pipeline: $(BIN)/.installed
	$(BIN)/hpsearch pipeline

## The wide study: PCA-whitened input, m 2800; λ, η_max and the whitening's eps searched, confirmed by successive halving at 24 and 48 epochs; a 48-epoch final (docs/wide.md)
wide: $(BIN)/.installed
	$(BIN)/hpsearch pipeline --config-set wide

## Run every test, the slow end-to-end ones included
test: $(BIN)/.installed
	$(BIN)/python -m pytest

## The quick tests only (skips subprocess and server tests)
test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest -m "not slow"

## The MLflow UI on the project's tracking store, at http://127.0.0.1:5000
ui: $(BIN)/.installed
	$(BIN)/hpsearch ui

## The README's MLflow UI pictures (docs/mlflow-*.png) from this folder's store, after `make pipeline`
screenshots: $(BIN)/.installed
	PYTHONPATH=. $(BIN)/python docs/screenshots.py . --out docs

## optuna-dashboard on the project's Optuna studies (HPSEARCH_STORAGE or the journal file), at http://127.0.0.1:8080/dashboard/
dashboard: $(BIN)/.installed
	$(BIN)/hpsearch dashboard

## Speed against the PyTorch reference (needs: $(BIN)/pip install torch==2.13.0): the epoch, the pipeline, overhead
bench: $(BIN)/.installed
	$(BIN)/python bench/bench_epoch.py --data-dir "$(HPSEARCH_DATA)"
	$(BIN)/python bench/bench_pipeline.py
	$(BIN)/python bench/bench_overhead.py --data-dir "$(HPSEARCH_DATA)"

clean:
	find mlruns -mindepth 1 -maxdepth 1 ! -name README.md ! -name .gitignore -exec rm -rf {} +
	rm -rf studies/optuna.journal* .pytest_cache

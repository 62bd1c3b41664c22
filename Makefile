# Two entry points for a new user (see README): `make demo` and `make test`.
# Both create .venv and install the tested set (constraints.txt) on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= runs/demo
# pytest-xdist workers for `make test`: whole files per worker, the longest first (tests/conftest.py)
WORKERS ?= 2

# `make test-floor`: the oldest versions pyproject.toml admits, on the oldest Python it admits
PY_FLOOR ?= python3.10
FLOOR := .venv-floor

.PHONY: venv demo test test-fast test-floor floors lock clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

## Train the digits recipe on CPU, sample, evaluate, write a report (runs/demo/report.md).
demo: $(STAMP)
	$(BIN)/python -m difflab.cli.demo output=$(OUT)

## The whole test suite, slow end-to-end tests included (WORKERS=0: in this one process).
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(WORKERS) --dist loadfile --no-loadscope-reorder --durations=30 tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests

## Every `name>=X` of pyproject.toml (dependencies and extras) as `name==X`: the declared floors.
floors:
	@grep -oE '"[A-Za-z0-9_.-]+>=[0-9][0-9.]*' pyproject.toml | tr -d '"' | grep -vE '^(setuptools|wheel)>' | sed 's/>=/==/' | sort -u

$(FLOOR)/.installed: pyproject.toml
	@$(PY_FLOOR) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null || { \
	  echo "make test-floor: '$(PY_FLOOR)' is no working Python 3.10 (requires-python's floor): install one, or PY_FLOOR=/path/to/python3.10"; exit 2; }
	$(PY_FLOOR) -m venv $(FLOOR)
	$(FLOOR)/bin/python -m pip install -q --upgrade pip
	$(MAKE) -s floors > $(FLOOR)/floors.txt
	$(FLOOR)/bin/python -m pip install -q -c $(FLOOR)/floors.txt -e ".[dev]"
	touch $@

## The whole suite on the declared floors (torch 2.4 + torchvision 0.19, lightning 2.4, numpy 1.24, ...,
## Python 3.10), newest of everything else: run it before moving a floor (a CUDA torch: ~5 GB).
test-floor: $(FLOOR)/.installed
	$(FLOOR)/bin/python -m pytest -q -n $(WORKERS) --dist loadfile --no-loadscope-reorder tests

clean:
	rm -rf runs outputs multirun .pytest_cache

# Two entry points for a new user (see README): `make demo` and `make test`.
# Both create .venv and install the tested set (constraints.txt) on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= runs/demo
# pytest-xdist workers for `make test`: whole files per worker, the longest first (tests/conftest.py)
WORKERS ?= 2

.PHONY: venv demo test test-fast lock clean

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

clean:
	rm -rf runs outputs multirun .pytest_cache

# Two entry points for a new user (see README): `make demo` and `make test`.
# Both create .venv and install the tested set (constraints.txt) on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= runs/demo

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

## The whole test suite, slow end-to-end tests included.
test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=50 tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests

clean:
	rm -rf runs outputs multirun .pytest_cache

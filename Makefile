# ASIRP set-up and the two commands of the README. Each target creates (or reuses) the
# virtual environment .venv and installs everything, with torch pinned to 2.13.0.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)  ## the whole control-room loop on the embedded default, report in out/demo
	$(BIN)/asirp control-room --output out/demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

test: lint  ## lint, layer contract, then the test suite
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/bench_deconvolution.py

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache

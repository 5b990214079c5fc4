# `make demo` and `make test` each create .venv if missing, install what they need
# from pyproject.toml, then run.  Installs are re-done only when pyproject.toml changes.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast lint bench docs clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-core: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed-core

$(VENV)/.installed-bench: pyproject.toml asv_bench/pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,bench]' -e asv_bench
	touch $@ $(VENV)/.installed-test $(VENV)/.installed-core

$(VENV)/.installed-docs: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[docs]'
	touch $@ $(VENV)/.installed-core

demo: $(VENV)/.installed-core
	$(BIN)/python -m dmlkit.demo

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest tests

test-fast: $(VENV)/.installed-test
	$(BIN)/python -m pytest tests -m "not slow"

lint: $(VENV)/.installed-test
	$(BIN)/ruff check dmlkit tests asv_bench

bench: $(VENV)/.installed-bench
	cd asv_bench && ../$(BIN)/asv run --python=same --quick --show-stderr

# The documentation (docs/, Markdown + the docstrings) as HTML in docs/_build/html;
# -n -W: a broken reference or any other warning fails the build.  No network needed.
docs: $(VENV)/.installed-docs
	$(BIN)/python -m sphinx -b html -n -W --keep-going docs docs/_build/html

clean:
	rm -rf $(VENV) build *.egg-info docs/_build

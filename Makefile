# Fresh machine: `make demo` runs the main job on the embedded demo data, `make test` runs the tests.
SHELL := /bin/bash
VENV ?= .venv
# torchgeo >= 0.9 needs Python >= 3.12: find a working python3.12 (pyenv shims may be broken).
PYTHON ?= $(shell for p in python3.12 python3.13 $$HOME/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12 /usr/local/bin/python3.12; do \
	$$p -c 'import sys; assert sys.version_info >= (3, 12)' >/dev/null 2>&1 && { echo $$p; break; }; done)
PY := $(VENV)/bin/python
# Idle OpenMP threads sleep instead of spinning; spinning threads slow torch down by
# 10-20x on a machine where other processes compete for the cores.
OMP_WAIT_POLICY ?= PASSIVE
export OMP_WAIT_POLICY
STAMP := $(VENV)/.installed

.PHONY: venv test demo docs lint format clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: no Python >= 3.12 found (torchgeo >= 0.9 needs it)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadfile --cov=torchgeo_ssg2 --cov-report=term

demo: $(STAMP)
	$(PY) -m torchgeo_ssg2.demo

# The Sphinx site in docs/_build/html, offline, warnings as errors.
docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .coverage lightning_logs outputs docs/_build

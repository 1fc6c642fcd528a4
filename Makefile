# Two commands set everything up on a fresh machine:
#   make repro   build the virtual environment if missing, then `dvc repro` on params.yaml
#   make test    build the virtual environment if missing, then run the tests
VENV := .venv
PYTHON ?= python3
# Stage commands call `python` and `dvc`: the venv's, whatever the caller's PATH says.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export VIRTUAL_ENV := $(CURDIR)/$(VENV)

.PHONY: repro test lint format clean-venv

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	# torch is pinned exactly (torch==2.13.0): that pin takes the local CPU wheel.
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $@

repro: $(VENV)/.installed
	$(VENV)/bin/dvc repro

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.installed
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean-venv:
	rm -rf $(VENV)

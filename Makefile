# Two entry points (see README): `make quickstart` and `make test`. Both create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: install install-test quickstart test lint format bench

$(VENV)/bin/python:
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

install: $(VENV)/bin/python
	$(PIP) install -q -e .

install-test: $(VENV)/bin/python
	$(PIP) install -q -e '.[test,hf,eval,curation]'

quickstart: install
	$(PY) -m aya_jax.main --config configs/quickstart.py

lint:
	$(VENV)/bin/ruff check aya_jax configs tests benchmarks experiments
	$(VENV)/bin/ruff format --check aya_jax configs tests benchmarks experiments

format:
	$(VENV)/bin/ruff check --fix aya_jax configs tests benchmarks experiments
	$(VENV)/bin/ruff format aya_jax configs tests benchmarks experiments

test: install-test lint
	$(PY) -m pytest -n 2 -q -m "slow or not slow"

bench: install-test
	$(PY) benchmarks/train_step.py

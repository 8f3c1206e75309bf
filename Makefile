# The two set-up commands of the README: `make run` and `make test`. Everything else is
# reachable from them; each creates the virtual environment and installs what is missing.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test lint typecheck unit bench setup setup-dev clean

setup:
	@scripts/bootstrap.sh ""

setup-dev:
	@scripts/bootstrap.sh dev

run: setup
	$(VENV)/bin/pipos run

test: setup-dev lint typecheck unit

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck:
	$(VENV)/bin/mypy

unit:
	$(PY) -m pytest -q

bench: setup-dev
	$(PY) -m bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis

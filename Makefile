# The two set-up commands of the README: `make run` and `make test`. Everything else is
# reachable from them; each creates the virtual environment and installs what is missing.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test lint typecheck unit bench setup setup-dev lock clean

# `make run` is the demo: the terminal and its simulator (the sim extra, pipos-sim).
setup:
	@scripts/bootstrap.sh sim

setup-dev:
	@scripts/bootstrap.sh dev

# Re-resolve uv.lock on purpose: `make lock` moves every package to the newest release that
# pyproject.toml allows; `make lock PACKAGE=fastapi` moves only that one.
lock:
	@scripts/bootstrap.sh lock $(PACKAGE)

# `make run ARGS="--language zh"`: the demo in Chinese (any `pipos run` option goes in ARGS).
run: setup
	$(VENV)/bin/pipos run $(ARGS)

test: setup-dev lint typecheck unit

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

typecheck:
	$(VENV)/bin/mypy

unit:
	$(PY) -m pytest -q

bench: setup-dev
	$(PY) -m bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis

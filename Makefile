# One task runner: developers, pre-commit and CI call these same targets.

# Everything runs from the project's own venv, created on first use.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
PYTEST_ARGS ?=
# The installer itself, pinned too: a venv's own pip (23 on Python 3.11) installs the lock
# about twice as slowly.
PIP_VERSION = 26.3

.PHONY: help install lock dev format lint typecheck test test-unit check

help:
	@echo "dev        run the whole system: the four services (+ a MongoDB stand-in)"
	@echo "install    the locked dependencies (requirements-dev.lock), then taskcore itself, editable"
	@echo "lock       re-resolve the lock files from pyproject.toml (LOCK_ARGS=--upgrade to move on)"
	@echo "format     apply ruff's fixes and formatting"
	@echo "lint       ruff check and ruff format --check"
	@echo "typecheck  mypy --strict (configured in pyproject.toml) on libs, services and bench"
	@echo "test       the whole suite (needs RabbitMQ; starts the MongoDB stand-in)"
	@echo "test-unit  the pure unit tests only: no broker, no store, a few seconds"
	@echo "check      lint, typecheck and test"

# Re-install only when the project's metadata or the lock changes. Exactly the locked
# versions, hash-checked; then taskcore itself without dependencies, so nothing unlocked
# slips in (pip fails loudly if the lock misses one).
$(VENV)/.installed: pyproject.toml requirements-dev.lock
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q "pip==$(PIP_VERSION)"
	$(PYTHON) -m pip install -q --require-hashes -r requirements-dev.lock
	$(PYTHON) -m pip install -q --no-deps -e .
	$(PYTHON) -m pip check
	touch $@

install: $(VENV)/.installed

# Two locks, resolved for Python 3.11+ on every platform: requirements-dev.lock (runtime,
# the dev extra and the stand-in: what make, CI and developers install) and
# requirements.lock (runtime only: the Docker image), constrained to the same versions, so
# the image runs exactly what CI tested. `make lock` keeps every pin it can; to move on:
# `make lock LOCK_ARGS=--upgrade`, or `LOCK_ARGS="--upgrade-package fastapi"`.
LOCK_FLAGS = --quiet --universal --python-version 3.11 --generate-hashes --custom-compile-command "make lock"
LOCK_ARGS ?=
UV = $(VENV)/bin/uv
# Not after `install`: a lock that misses a new dependency cannot install (pip check).
lock:
	test -x $(UV) || { test -x $(PYTHON) || python3 -m venv $(VENV); $(PYTHON) -m pip install -q uv; }
	$(UV) pip compile pyproject.toml --extra dev $(LOCK_FLAGS) $(LOCK_ARGS) -o requirements-dev.lock
	$(UV) pip compile pyproject.toml -c requirements-dev.lock $(LOCK_FLAGS) -o requirements.lock

dev: install
	./scripts/ensure-rabbitmq
	$(VENV)/bin/taskcore dev

format: install
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

lint: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

typecheck: install
	$(PYTHON) -m mypy libs services bench

test: install
	./scripts/ensure-rabbitmq
	./scripts/ensure-promtool
	./scripts/ensure-chromium
	$(PYTHON) -m pytest $(PYTEST_ARGS)

test-unit: install
	$(PYTHON) -m pytest tests/unit $(PYTEST_ARGS)

check: lint typecheck test

# One task runner: developers, pre-commit and CI call these same targets.

# Everything runs from the project's own venv, created on first use.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: help install dev format lint typecheck test test-unit check

help:
	@echo "dev        run the whole system: the four services (+ a MongoDB stand-in)"
	@echo "install    editable install with the dev tools"
	@echo "format     apply ruff's fixes and formatting"
	@echo "lint       ruff check and ruff format --check"
	@echo "typecheck  mypy --strict (configured in pyproject.toml) on libs and services"
	@echo "test       the whole suite (needs RabbitMQ; starts the MongoDB stand-in)"
	@echo "test-unit  the pure unit tests only: no broker, no store, a few seconds"
	@echo "check      lint, typecheck and test"

# Re-install only when the project's metadata changes.
$(VENV)/.installed: pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

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
	$(PYTHON) -m mypy libs services

test: install
	./scripts/ensure-rabbitmq
	./scripts/ensure-promtool
	./scripts/ensure-chromium
	$(PYTHON) -m pytest $(PYTEST_ARGS)

test-unit: install
	$(PYTHON) -m pytest tests/unit $(PYTEST_ARGS)

check: lint typecheck test

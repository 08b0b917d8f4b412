# Earmark — the targets people expect. `make help` lists them.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   ?= .demo

.DEFAULT_GOAL := help
.PHONY: help venv system demo ui test test-fast test-long test-unit test-integration lint format dags-test clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(BIN)/airflow: requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt -c constraints.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

venv: $(BIN)/airflow  ## Create .venv with every pinned dependency

demo: venv  ## Run a sample day through earmark_daily on the embedded default and print a summary
	$(BIN)/python -m earmark_dev.demo --home $(DEMO)

ui: venv  ## Start Airflow (standalone) on the demo's home: the same runs in the UI
	. $(DEMO)/env.sh && $(BIN)/airflow standalone

dags-test: venv  ## airflow dags test earmark_daily DATE=YYYY-MM-DD on the demo's home
	. $(DEMO)/env.sh && EARMARK_DEADLINE_ALERTS=false $(BIN)/airflow dags test earmark_daily $(DATE)

system:  ## Debian packages the tests need: Chromium, espeak-ng, shellcheck, PostgreSQL, Redis (apt; root or sudo)
	bash .ci/install-system-packages.sh

test: venv system lint  ## Lint, types and every test (unit, DAG, integration, browser, benchmarks), as CI runs it
	$(BIN)/python -m pytest -q -n 3 --dist loadfile -m "not long"

test-long: venv  ## The tests that take minutes on their own: a 4 h recording read in bounded memory, the classifier's memory at real width
	$(BIN)/python -m pytest -q -s -m long

test-fast: venv  ## Unit, DAG and tooling tests on SQLite: no Postgres, harness, browser or benchmark
	EARMARK_TEST_PG=off $(BIN)/python -m pytest -q -n 2 -m "not integration and not bench" \
		tests/unit tests/dags tests/tools

test-unit: venv  ## Unit, DAG and tooling tests (no Celery topology, no browser)
	$(BIN)/python -m pytest -q -m "not long" tests/unit tests/dags tests/tools

test-integration: venv  ## The whole DAG against a real Postgres results DB
	$(BIN)/python -m pytest -q tests/integration

lint: venv  ## ruff check, ruff format --check and the type checker (mypy)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: venv  ## ruff format + autofix
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:  ## Remove the demo's home and caches (keeps .venv)
	rm -rf $(DEMO) .pytest_cache .ruff_cache .hypothesis

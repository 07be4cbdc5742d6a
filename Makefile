# One entry point for everything a developer or CI runs. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
VENV311 := .venv-py311
VENV_CHECKOV := .venv-checkov
# The rehearsal's IAM evaluator (Node), installed exactly as package-lock.json pins it.
IAM_EVALUATOR := rehearsal/iam/node_modules/.package-lock.json
# The Node.js major the lab instances install (user-data.sh), for the built-in app's tests.
APP_NODE := tests/node/node_modules/.package-lock.json
BIN := $(VENV)/bin
REGION ?= us-east-1
export SAM_CLI_TELEMETRY := 0
# The tests talk to moto only: never to a real AWS endpoint, never with real credentials.
TEST_ENV := AWS_DEFAULT_REGION=$(REGION) AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
	AWS_SESSION_TOKEN=testing AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
# pytest's parallel workers (pytest-xdist). 3.11 (unit and contract tests, CPU-bound) takes one
# per core (auto). 3.13 also runs the rehearsals, which spend about a third of their time
# waiting on their clocks (a run's deadline, the world's timers): two workers per core keep the
# cores busy through those waits (docs/performance.md, "Test suite"). Tests that share a class,
# module or package fixture stay on one worker (tests/conftest.py). 0 runs every test in one process.
PYTEST_WORKERS ?= auto
PYTEST_WORKERS_313 ?= $(shell echo $$(( 2 * $$(nproc) )))
XDIST := --dist loadgroup

.PHONY: help setup rehearse emulator bench bench-imports test lint typecheck template build unit unit-py311 local-invoke clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: $(BIN)/.installed $(BIN)/scalelab $(VENV311)/bin/.installed $(VENV_CHECKOV)/bin/.installed $(IAM_EVALUATOR) $(APP_NODE) /usr/bin/shellcheck /usr/bin/chromium ## create the virtual environments and install every pinned tool

$(BIN)/.installed: requirements-dev.txt requirements-test.txt constraints.txt layers/scalelab/requirements.txt
	@py=$$(scripts/find-python 3.13) && echo "setup: Python 3.13 is $$py" && \
	  rm -rf $(VENV) && "$$py" -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	@touch $@

# The `scalelab` command (the offline rehearsal), installed from this checkout.
$(BIN)/scalelab: pyproject.toml $(BIN)/.installed
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

# The tests also run on Python 3.11 where one is installed; without it this is a no-op.
$(VENV311)/bin/.installed: requirements-test.txt constraints.txt layers/scalelab/requirements.txt
	@rm -rf $(VENV311); mkdir -p $(VENV311)/bin
	@if py=$$(scripts/find-python 3.11 2>/dev/null); then \
	  echo "setup: Python 3.11 is $$py" && "$$py" -m venv --clear $(VENV311) && \
	  $(VENV311)/bin/pip install --quiet --disable-pip-version-check -r requirements-test.txt -c constraints.txt; \
	else echo "setup: no Python 3.11 here; the tests run on 3.13 only"; fi
	@touch $@

# checkov has a virtual environment of its own: its dependencies conflict with the toolchain in .venv.
$(VENV_CHECKOV)/bin/.installed: requirements-checkov.txt constraints-checkov.txt
	@py=$$(scripts/find-python 3.13) && rm -rf $(VENV_CHECKOV) && "$$py" -m venv $(VENV_CHECKOV)
	$(VENV_CHECKOV)/bin/pip install --quiet --disable-pip-version-check -r requirements-checkov.txt -c constraints-checkov.txt
	@touch $@

$(IAM_EVALUATOR): rehearsal/iam/package.json rehearsal/iam/package-lock.json
	cd rehearsal/iam && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(APP_NODE): tests/node/package.json tests/node/package-lock.json
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

/usr/bin/shellcheck:
	@command -v shellcheck >/dev/null || { \
	  [ "$$(id -u)" = 0 ] || { echo "setup: shellcheck is missing; install it (apt-get install -y shellcheck) and run again" >&2; exit 2; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null; }

# The HTML report's browser test opens the page in Debian's headless Chromium; without it (and
# not root to install it) that test is skipped with the reason, and setup goes on.
/usr/bin/chromium:
	@command -v chromium >/dev/null || { \
	  [ "$$(id -u)" = 0 ] || { echo "setup: chromium is missing, so the report page's browser test will be skipped; install it with apt-get install -y chromium" >&2; exit 0; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

rehearse: $(BIN)/scalelab $(IAM_EVALUATOR) ## rehearse a whole lab offline (SCENARIO=pass|never-healthy|..., SPEED=600)
	$(BIN)/scalelab rehearse --scenario $(or $(SCENARIO),pass) $(if $(SPEED),--speed $(SPEED))

emulator: $(BIN)/scalelab $(IAM_EVALUATOR) ## keep an emulated account with the stack deployed running, for aws --endpoint-url
	$(BIN)/scalelab emulator

bench: $(BIN)/scalelab $(IAM_EVALUATOR) ## time the pass rehearsal (median of RUNS=5 fresh processes), its modelled time on AWS, and the workflow suite
	$(TEST_ENV) $(BIN)/python rehearsal/bench.py --runs $(or $(RUNS),5) --suite

bench-imports: $(BIN)/scalelab $(IAM_EVALUATOR) ## each handler's cold import beside boto3 and one client (PAIRS=10 paired rounds)
	$(TEST_ENV) $(BIN)/python rehearsal/bench_imports.py --pairs $(or $(PAIRS),10)

# The steps are independent (local-invoke needs build's output; make orders that): they run at
# once, the longest first, and each one's output is printed whole when it ends.
test: setup ## run every check and test (what CI runs)
	@echo "test: unit, unit-py311, local-invoke (after build), lint, typecheck and template at once;"\
	  "each one's output follows when it ends"
	@$(MAKE) --no-print-directory --jobs --output-sync=target unit unit-py311 local-invoke lint typecheck template

lint: setup ## ruff, shellcheck and the layer's import rules (import-linter)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	shellcheck scripts/find-python scripts/docker-engine scripts/lambda-base-image .ci/run \
	  docker/lambda-python3.13/bootstrap layers/scalelab/scalelab/assets/*.sh
	PYTHONPATH=layers/scalelab:rehearsal $(BIN)/lint-imports --no-cache

typecheck: setup ## mypy on the deployed code
	$(BIN)/mypy

template: setup ## cfn-lint, sam validate --lint and checkov
	$(BIN)/cfn-lint template.yaml
	$(TEST_ENV) $(BIN)/sam validate --lint --template template.yaml --region $(REGION)
	CKV_SKIP_PACKAGE_UPDATE_CHECK=true $(VENV_CHECKOV)/bin/checkov -f template.yaml \
	  --framework cloudformation --skip-download --quiet --compact

build: setup ## sam build (needs python3.13 on PATH: found and put there for you)
	@py=$$(scripts/find-python 3.13) && PATH="$$(dirname "$$py"):$$PATH" \
	  $(BIN)/sam build --template template.yaml --build-dir .aws-sam/build

unit: setup ## pytest on Python 3.13 (sam local invoke has its own target), PYTEST_WORKERS_313 at once
	$(TEST_ENV) $(BIN)/python -m pytest -n $(PYTEST_WORKERS_313) $(XDIST) --ignore=tests/local_invoke

# 3.11 runs the unit and contract tests: they reach every line of the layer and the handlers that
# the workflow tests reach on 3.13 (measured with coverage.py: docs/performance.md, "Test suite").
# PY311_TESTS=tests runs the workflow tests on 3.11 too.
PY311_TESTS ?= tests/unit tests/contract
unit-py311: setup ## pytest on Python 3.11, where it is installed: the unit and contract tests (PY311_TESTS)
	@if [ -x $(VENV311)/bin/python ]; then $(TEST_ENV) $(VENV311)/bin/python -m pytest -n $(PYTEST_WORKERS) $(XDIST) -p no:cacheprovider --ignore=tests/reliability --ignore=tests/local_invoke $(PY311_TESTS); \
	else echo "unit-py311: skipped, no Python 3.11 on this machine"; fi

# Docker and the stand-in base image are set up by the tests' fixtures (scripts/docker-engine,
# scripts/lambda-base-image): as root they install and start what is missing; as another
# user without them the tests are skipped, each with the reason.
local-invoke: build ## every function through sam local invoke, in a Lambda-like container, against the emulator
	$(TEST_ENV) $(BIN)/python -m pytest -p no:cacheprovider tests/local_invoke

clean: ## remove the virtual environments and build output
	rm -rf $(VENV) $(VENV311) $(VENV_CHECKOV) rehearsal/iam/node_modules tests/node/node_modules .aws-sam .pytest_cache .mypy_cache .ruff_cache .rehearsal *.egg-info

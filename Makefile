# Everything runs inside .venv, created on first use from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 5000

.DEFAULT_GOAL := help
.PHONY: help install data run test test-fast bench report ui lint format clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the package with dev tools

data: $(STAMP) ## fetch and verify MNIST into the cache (~/.cache/mnist_exp)
	$(BIN)/python -m mnist_exp.data

run: data ## train the default config (pass Hydra overrides with ARGS="epochs=3 optimizer=adam")
	$(BIN)/python -m mnist_exp.run $(ARGS)

test: data ## run the whole test suite, real-MNIST training included
	$(BIN)/pytest

test-fast: $(STAMP) ## run the tests that do not train on the full data set
	$(BIN)/pytest -m "not slow"

bench: data ## time prediction and start-up (ARGS=--quick for a short version); writes outputs/bench.json
	$(BIN)/python -m mnist_exp.bench $(ARGS)

report: $(STAMP) ## figures + Markdown summary of a run: make report RUN=<run_id> [OUT=docs/x]
	$(BIN)/python -m mnist_exp.report $(RUN) $(if $(OUT),--out $(OUT))

ui: $(STAMP) ## browse runs at http://127.0.0.1:5000 (HOST=0.0.0.0 to share)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host $(HOST) --port $(PORT)

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## ruff fix and format
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean: ## remove run outputs and caches (keeps the MLflow store and .venv)
	rm -rf outputs multirun .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +

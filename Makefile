# Everything runs inside .venv, created on first use from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 5000
WORKERS ?= 4
AUTH_CACHE_S ?= 60
BACKEND ?= sqlite:///$(CURDIR)/mlflow.db
ARTIFACTS ?= $(CURDIR)/mlruns
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo)

.DEFAULT_GOAL := help
.PHONY: help install data browser fonts netns-install slurm-install slurm slurm-stop postgres-install postgres postgres-stop run test test-fast bench report ui server serve docs pictures results lint format clean

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

# $(call apt,PACKAGES,WHAT): install Debian's packages with apt-get, as root or through sudo. Where
# apt-get is absent or fails, one line says what is missing and the step succeeds: `make test`
# goes on, and each test that needs the part skips naming it (with CI=true a skip fails).
apt = command -v apt-get >/dev/null || { echo "$(2): missing, and no apt-get here to install it \
	($(1)); the tests that need it will skip"; exit 0; }; { $(SUDO) apt-get update -qq && $(SUDO) \
	env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(1); } || \
	echo "$(2): missing, and apt-get could not install it ($(1)); the tests that need it will skip"

browser: ## install Debian's chromium for the browser tests if it is missing (apt-get; root or sudo)
	@command -v chromium >/dev/null || { $(call apt,chromium,Chromium); }

# Debian's handwriting fonts for the robustness set (mnist_exp/data/robustness.py names the files)
FONTS := fonts-dkg-handwriting fonts-breip fonts-bwht fonts-humor-sans fonts-rufscript \
	fonts-sjfonts fonts-comic-neue fonts-klee
fonts: $(STAMP) ## install Debian's handwriting fonts for the robustness set if missing (apt-get; root or sudo)
	@$(BIN)/python -c "from mnist_exp.data.robustness import handwriting_fonts_missing as m; \
		raise SystemExit(bool(m()))" || { $(call apt,$(FONTS),Debian's handwriting fonts); }

slurm-install: ## install Debian's SLURM (slurmctld, slurmd, munge; slurmdbd on MariaDB for sacct) if missing (apt-get; root or sudo)
	@(for d in slurmctld slurmd munged slurmdbd mariadbd; do command -v $$d >/dev/null || exit 1; done) || \
		{ $(call apt,slurmctld slurmd slurm-client munge slurmdbd mariadb-server,SLURM); }

netns-install: ## install Debian's iproute2 (ip netns: the test hosts of tests/hosts.py) if missing (apt-get; root or sudo)
	@command -v ip >/dev/null || { $(call apt,iproute2,iproute2 (ip netns)); }

postgres-install: ## install Debian's PostgreSQL server if missing (apt-get; root or sudo)
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || { $(call apt,postgresql,PostgreSQL); }

postgres: $(STAMP) postgres-install ## a PostgreSQL on 127.0.0.1 for the store and studies (outputs/postgres); make postgres-stop
	$(BIN)/python -m tests.postgres start outputs/postgres

postgres-stop: ## stop the PostgreSQL `make postgres` started
	$(BIN)/python -m tests.postgres stop outputs/postgres

slurm: $(STAMP) slurm-install ## a one-node SLURM cluster on 127.0.0.1 (outputs/slurm; root); make slurm-stop
	$(BIN)/python -m tests.cluster start outputs/slurm

slurm-stop: ## stop the cluster `make slurm` started
	$(BIN)/python -m tests.cluster stop outputs/slurm

# One worker more than cores: a fifth of a worker's time is waiting (servers starting, SLURM).
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))

test: data browser fonts slurm-install postgres-install netns-install ## run the whole test suite, real-MNIST training included; prints the 25 slowest
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup --durations=25

# No download can hide in the fast tests: every connection but to this machine goes to a dead proxy.
OFFLINE := HTTPS_PROXY=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 \
	HTTP_PROXY=http://127.0.0.1:9 http_proxy=http://127.0.0.1:9 \
	NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost PIP_INDEX_URL=http://127.0.0.1:9/simple

test-fast: $(STAMP) ## the tests that neither train on the full data set nor download (offline, after make data)
	$(OFFLINE) $(BIN)/pytest -m "not slow and not network"

bench: data ## training vs plain Keras, logging, prediction, serving, start-up (ARGS=--quick); writes outputs/bench.json
	$(BIN)/python -m mnist_exp.bench $(ARGS)

report: $(STAMP) ## figures + Markdown summary of a run: make report RUN=<run_id> [OUT=docs/x]
	$(BIN)/python -m mnist_exp.report $(RUN) $(if $(OUT),--out $(OUT))

ui: $(STAMP) ## browse runs at http://127.0.0.1:5000 (HOST=0.0.0.0 to share)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host $(HOST) --port $(PORT)

serve: $(STAMP) ## the draw-a-digit page at http://127.0.0.1:8000 (MODEL=<uri or file>, default: best run)
	$(BIN)/python -m mnist_exp.serve $(if $(MODEL),--model $(MODEL)) --host $(HOST) --port $(or $(SERVE_PORT),8000)

SERVER := $(BIN)/mlflow server --backend-store-uri $(BACKEND) --artifacts-destination $(ARTIFACTS) \
	--host $(HOST) --port $(PORT) --workers $(WORKERS)
# AUTH=1: MLflow's basic-auth app. Its users, its session key and the admin's first password
# (MLFLOW_AUTH_ADMIN_PASSWORD, else one made here) stay in AUTH_DIR; a new user sees nothing until
# granted (MLflow's default: every user reads everything).
AUTH_DIR ?= $(CURDIR)/outputs/server-auth
token = $(BIN)/python -c "import secrets; print(secrets.token_urlsafe(24))"

server: $(STAMP) ## tracking server on http://127.0.0.1:5000 for MLFLOW_TRACKING_URI (BACKEND=postgresql://..., WORKERS=4, AUTH=1)
ifeq ($(AUTH),1)
	@mkdir -p $(AUTH_DIR) && chmod 700 $(AUTH_DIR)
	@[ -s $(AUTH_DIR)/secret_key ] || $(token) > $(AUTH_DIR)/secret_key
	@[ -n "$$MLFLOW_AUTH_ADMIN_PASSWORD" ] || [ -s $(AUTH_DIR)/admin_password ] || \
		{ $(token) > $(AUTH_DIR)/admin_password; echo "user admin, password in $(AUTH_DIR)/admin_password"; }
	@printf '[mlflow]\ndefault_permission = NO_PERMISSIONS\ndatabase_uri = sqlite:///%s/users.db\nadmin_username = admin\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\nauth_cache_ttl_seconds = $(AUTH_CACHE_S)\n' \
		$(AUTH_DIR) > $(AUTH_DIR)/basic_auth.ini
	MLFLOW_AUTH_CONFIG_PATH=$(AUTH_DIR)/basic_auth.ini \
		MLFLOW_FLASK_SERVER_SECRET_KEY="$$(cat $(AUTH_DIR)/secret_key)" \
		MLFLOW_AUTH_ADMIN_PASSWORD="$${MLFLOW_AUTH_ADMIN_PASSWORD:-$$(cat $(AUTH_DIR)/admin_password)}" \
		$(SERVER) --app-name basic-auth
else
	$(SERVER)
endif

docs: $(STAMP) ## build the documentation site into site/ (warnings are errors)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

pictures: $(STAMP) browser ## retake the README's pictures (docs/images) from a short run, in headless Chromium
	$(BIN)/python -m tests.pictures docs/images

results: $(STAMP) ## render the README's and the docs' figures from their records (docs/results/*.json)
	$(BIN)/python -m mnist_exp.results render

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## ruff fix and format
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean: ## remove run outputs and caches (keeps the MLflow store and .venv)
	rm -rf outputs multirun .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +

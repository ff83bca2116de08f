# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export GX_ANALYTICS_ENABLED := false
export MLFLOW_ENABLE_TELEMETRY := false
export DO_NOT_TRACK := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
# a first start of Prefect's temporary server on 2 cores can take longer than its 20 s default
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120

.PHONY: install browser postgres label-studio demo stack test lint mutate clean

install: $(VENV)/.installed

# torch first: on CPU machines torch==$(TORCH_VERSION) is a local CPU wheel, and the project's
# torch range then installs nothing more (an unpinned torch pulls GBs of CUDA packages).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

demo: install
	$(BIN)/finegate demo

# The production stack of deploy/docker-compose.yml without Docker, as local processes on
# loopback (deploy/stack.py): Postgres, Prefect server + process worker, MLflow, Dask scheduler +
# 2 workers; deploys deploy/prefect.yaml, runs it once on the demo drops, keeps the UIs up until
# Ctrl-C, then stops every process. Needs the PostgreSQL server binaries (initdb, postgres).
stack: install postgres
	$(BIN)/python deploy/stack.py stack-workspace

test: install browser postgres label-studio
	$(BIN)/python -m pytest

# The Label Studio server the review-loop test starts on loopback: a separate service in its own
# virtual environment (its pins need not fit the project's); the project talks to it only
# through label-studio-sdk and HTTP. tests/test_label_studio.py finds it at $(LS_VENV), and
# copies the migrated empty database in $(LS_VENV)/template: a server on it starts in seconds
# (migrating a fresh one takes minutes on 2 cores).
LS_VENV ?= .ls-venv
LABEL_STUDIO_VERSION ?= 1.23.2
label-studio: $(LS_VENV)/.installed

$(LS_VENV)/.installed:
	$(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install -q --upgrade pip
	$(LS_VENV)/bin/python -m pip install -q label-studio==$(LABEL_STUDIO_VERSION)
	LATEST_VERSION_CHECK=false $(LS_VENV)/bin/label-studio version --data-dir $(LS_VENV)/template \
	  >/dev/null
	touch $@

# The report is checked in a real headless Chromium (Debian's package), installed here when we
# are root on a Debian-like machine (CI is); elsewhere that one test is skipped, and says so.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	  >/dev/null; } || echo "chromium not installed: the report's browser test will be skipped"

# The production-stack test (tests/test_stack.py) runs a real PostgreSQL server: Debian's
# package, installed here like the browser (elsewhere that test is skipped, and says so).
postgres:
	@{ command -v initdb || ls /usr/lib/postgresql/*/bin/initdb; } >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get update -qq \
	  && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } \
	  || echo "PostgreSQL not installed: the production-stack test will be skipped"

# ruff, and the import-linter contracts in pyproject.toml (layers; stages independent)
lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# Mutation testing of the core data path (ingest, clean, dedup, accounting; [tool.mutmut] in
# pyproject.toml). Slow, so not in CI. It runs in a copy (.mutate/) in which the finegate/tasks
# symlink is a real folder: mutmut names a mutant after its file, and the tests import
# finegate.tasks.*. MUTATE_CHILDREN caps the parallel test processes; MUTANTS names a subset
# (globs: MUTANTS='finegate.tasks.quality.x_*accounting*'), all of them take over an hour.
MUTATE_CHILDREN ?= 2
MUTANTS ?=
mutate: install
	rm -rf .mutate && mkdir .mutate
	cp -rL finegate tests expectations pyproject.toml .mutate/
	cd .mutate && ../$(BIN)/mutmut run --max-children $(MUTATE_CHILDREN) $(MUTANTS); \
	  ../$(BIN)/mutmut results --all true > results.txt; \
	  grep -c ": killed" results.txt | sed 's/^/killed   /'; \
	  grep ": survived" results.txt | sed 's/^/survived /' | head -200

clean:
	rm -rf demo-workspace stack-workspace .pytest_cache .mutate

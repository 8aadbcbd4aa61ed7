# Every set-up step the project needs lives here, so that a fresh clone needs only `make demo` / `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
EMULATOR_PORT ?= 8765

.PHONY: help install test lint typecheck pytest emulator bench clean

help:
	@echo "make test      - create the venv if missing, install everything, lint, type-check and run the tests"
	@echo "make test-unit - the fast unit tests only (pytest -m 'not integration'); make test-integration - the rest"
	@echo "make emulator  - run the Connectif emulator on 127.0.0.1:$(EMULATOR_PORT)"
	@echo "make demo      - embedded PostgreSQL + sample ERP + emulator + airflow standalone, first sync of every DAG, until Ctrl-C"
	@echo "make bench-emulator - upload/import speed and requests/s of the emulator (figures in bench/README.md)"
	@echo "make bench-provider - requests per import while waiting; shared rate-limit bucket from 4 processes"
	@echo "make bench-sync     - sync library vs naive pandas and native dumps on SQLite, PostgreSQL, MySQL, 1M/3M contacts (figures in bench/README.md)"
	@echo "make bench-ui       - monitoring pages' answer times with 1M rejected rows and 1,000 runs (PostgreSQL)"
	@echo "make screenshots    - the monitoring pages in a real browser on a real Airflow; PNGs into docs/"
	@echo "make lint      - ruff;  make typecheck - mypy on plugins/, include/, emulator/, sample_erp/, deploy/ and demo/"
	@echo "make compose-check    - validate docker-compose.yaml (compose parser + what it names), no Docker needed"
	@echo "make test-distributed - the compose topology without Docker: Celery workers, triggerer restart, emulator"

$(STAMP): requirements.txt constraints.txt pyproject.toml setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -r requirements.txt -c constraints.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	@rm -rf *.egg-info  # the build leaves it here; on the path it would declare the entry points a second time
	@touch $@

# The sync library's C accelerators (row hash, SQLite source hash), rebuilt in place when its source changes (editable install).
HASH_EXT := $(VENV)/.hashing-built
$(HASH_EXT): include/connectif_sync/_hashing.c include/connectif_sync/_sqlite_hash.c include/connectif_sync/_hash64.h $(STAMP)
	$(BIN)/python -m pip install -q --no-deps -e .
	@rm -rf *.egg-info  # the build leaves it here; on the path it would declare the entry points a second time
	@touch $@

install: $(STAMP) $(HASH_EXT)

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy plugins/connectif_provider include/connectif_sync emulator sample_erp localdb deploy demo

pytest: install system-deps
	$(BIN)/pytest

test: lint typecheck pytest

# The fast unit suite (no Airflow, no database server, no browser; the emulator still runs) and the rest.
# `pytest -m integration` sets the same marker (tests/fixtures/integration.py decides at collection).
.PHONY: test-unit test-integration
test-unit: install
	$(BIN)/pytest -m "not integration"

test-integration: install system-deps
	$(BIN)/pytest -m integration

emulator: install
	$(BIN)/python -m emulator --host 127.0.0.1 --port $(EMULATOR_PORT)

# The whole pipeline on this machine (embedded PostgreSQL, sample ERP, emulator, airflow standalone) until Ctrl-C;
# state in .demo/ (the database cluster in .demo/pg, stopped on Ctrl-C and started again by the next run).
# DEMO_ARGS passes options to demo/__main__.py, e.g. `make demo DEMO_ARGS=--fresh`; `make demo-clean` forgets it all.
.PHONY: demo demo-clean
demo: install
	$(BIN)/python -m demo $(DEMO_ARGS)

# A PostgreSQL server still running on .demo/pg (a demo killed with SIGKILL) is stopped before its files go.
demo-clean:
	@if [ -d .demo/pg ] && [ -x $(BIN)/python ]; then $(BIN)/python -m localdb.postgres stop .demo/pg; fi
	rm -rf .demo

.PHONY: bench-emulator
bench-emulator: install
	$(BIN)/python bench/emulator_bench.py

.PHONY: bench-provider
bench-provider: install
	$(BIN)/python bench/provider_bench.py

# The sync library against its targets on SQLite, PostgreSQL (embedded) and MariaDB (Debian's mariadb-server, from
# system-deps): naive pandas, the native dumps (`sqlite3 -csv`, `psql \copy`, `mariadb --batch`), 1M/3M rows, the
# commit step, second runs; needs the sqlite3 shell, installed here (as root, apt-get) when missing. Figures go in
# bench/README.md. BENCH_ARGS passes options, e.g. `make bench-sync BENCH_ARGS="--databases mysql --repeat 1"`.
.PHONY: bench-sync
bench-sync: install system-deps
	@command -v sqlite3 >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" != 0 ]; then echo "bench-sync: run as root to apt-get install sqlite3"; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=300 sqlite3; }
	$(BIN)/python bench/sync_bench.py $(BENCH_ARGS)

# The monitoring pages (UI plugin) with 1,000,000 rejected rows and 1,000 runs on the embedded PostgreSQL.
.PHONY: bench-ui
bench-ui: install
	$(BIN)/python bench/ui_bench.py

# The README's screenshots of the monitoring pages: the real-browser test (airflow standalone, emulator,
# chromium) run with CONNECTIF_SCREENSHOTS=docs.
.PHONY: screenshots
screenshots: install system-deps
	CONNECTIF_SCREENSHOTS=$(CURDIR)/docs $(BIN)/pytest -q -p no:cacheprovider tests/plugins/ui/test_browser.py

# ---- deployment: Debian packages the tests need, the compose file check, the no-Docker distributed run ----
.PHONY: system-deps compose-check test-distributed
SYSTEM_PACKAGES := redis-server:redis-server docker-compose:docker-compose chromium:chromium chromedriver:chromium-driver mariadbd:mariadb-server setfacl:acl

# Installs (as root, with apt-get) only the packages whose command is missing: quick when all are there.
system-deps:
	@missing=""; for pair in $(SYSTEM_PACKAGES); do \
	  command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "system-deps: run as root to apt-get install$$missing"; exit 1; fi; \
	  echo "system-deps: apt-get install$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=300 $$missing; \
	fi

compose-check: install system-deps
	$(BIN)/python -m deploy.compose_check

test-distributed: install system-deps
	$(BIN)/python -m deploy.distributed

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache include/connectif_sync/*.so

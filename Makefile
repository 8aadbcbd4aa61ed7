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
	@echo "make emulator  - run the Connectif emulator on 127.0.0.1:$(EMULATOR_PORT)"
	@echo "make demo      - sample ERP + emulator + airflow standalone, first sync of every DAG, until Ctrl-C"
	@echo "make bench-emulator - upload/import speed and requests/s of the emulator (figures in bench/README.md)"
	@echo "make bench-provider - requests per import while waiting; shared rate-limit bucket from 4 processes"
	@echo "make bench-sync     - sync library vs naive pandas and native dumps on SQLite, PostgreSQL, MySQL, 1M/3M contacts (figures in bench/README.md)"
	@echo "make lint      - ruff;  make typecheck - mypy on plugins/, include/, emulator/, deploy/ and demo/"
	@echo "make compose-check    - validate docker-compose.yaml (compose parser + what it names), no Docker needed"
	@echo "make test-distributed - the compose topology without Docker: Celery workers, triggerer restart, emulator"

$(STAMP): requirements.txt constraints.txt pyproject.toml setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -r requirements.txt -c constraints.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	@touch $@

# The sync library's C accelerators (row hash, SQLite source hash), rebuilt in place when its source changes (editable install).
HASH_EXT := $(VENV)/.hashing-built
$(HASH_EXT): include/connectif_sync/_hashing.c include/connectif_sync/_sqlite_hash.c include/connectif_sync/_hash64.h $(STAMP)
	$(BIN)/python -m pip install -q --no-deps -e .
	@touch $@

install: $(STAMP) $(HASH_EXT)

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy plugins/connectif_provider include/connectif_sync emulator deploy demo

pytest: install system-deps
	$(BIN)/pytest

test: lint typecheck pytest

emulator: install
	$(BIN)/python -m emulator --host 127.0.0.1 --port $(EMULATOR_PORT)

# The whole pipeline on this machine (sample ERP, emulator, airflow standalone) until Ctrl-C; state in .demo/.
# DEMO_ARGS passes options to demo/__main__.py, e.g. `make demo DEMO_ARGS=--fresh`; `make demo-clean` forgets it all.
.PHONY: demo demo-clean
demo: install
	$(BIN)/python -m demo $(DEMO_ARGS)

demo-clean:
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

# ---- deployment: Debian packages the tests need, the compose file check, the no-Docker distributed run ----
.PHONY: system-deps compose-check test-distributed
SYSTEM_PACKAGES := redis-server:redis-server docker-compose:docker-compose chromium:chromium chromedriver:chromium-driver mariadbd:mariadb-server

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

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
	@echo "make lint      - ruff;  make typecheck - mypy on plugins/, include/ and emulator/"

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	@touch $@

install: $(STAMP)

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy plugins/connectif_provider include/connectif_sync emulator

pytest: install
	$(BIN)/pytest

test: lint typecheck pytest

emulator: install
	$(BIN)/python -m emulator --host 127.0.0.1 --port $(EMULATOR_PORT)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

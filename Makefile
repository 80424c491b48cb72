# The two commands of the README: `make demo` runs factory-pulse, `make test` tests it.
# Each does its own set-up on a fresh machine (virtual environment, packages, Kafka jars).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test lint demo broker-stop clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m schemas.jsonschema --check

test: lint
	$(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/factory-pulse demo

broker-stop: $(STAMP)
	$(BIN)/factory-pulse broker stop

clean:
	rm -rf $(VENV) .factory .factory-test

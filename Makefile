# The two commands of the README: `make demo` and `make test`. Both set up what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench clean

$(BIN)/safehub: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/safehub
	$(BIN)/safehub kafka fetch

demo: setup
	$(BIN)/safehub demo

# Installs Debian's postgresql and chromium if missing, starts PostgreSQL on loopback, then
# runs every test (unit, integration against a real broker and databases, e2e in Chromium).
test: setup
	bash deploy/dev/system-packages.sh
	SAFEHUB_TEST_POSTGRES_URL=$$(bash deploy/dev/start-postgres.sh) \
	  PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest --durations=15

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info

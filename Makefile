# Set-up and checks, for a fresh machine as much as for daily work. `make demo` and
# `make test` each do everything they need, in this order, and are safe to repeat.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export RAY_AUTH_MODE ?= token

.PHONY: install demo test services promtool lint check-installed

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Re-run pip only when the dependencies change.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

# The main job on the bundled sample, into the embedded SQLite store (./breakwater.sqlite3).
demo: install
	$(BIN)/python -m jobs.ingest data/kystverket-2019-tagblock.nmea
	$(BIN)/breakwater counts

# PostgreSQL and Redis for the integration tests, started if installed but stopped.
services:
	./scripts/services.sh

# promtool checks the alert rules; Debian's prometheus package provides it.
promtool:
	@command -v promtool >/dev/null || { \
	  echo "installing promtool (Debian package prometheus)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	}
	@promtool --version | head -1

lint: install
	$(BIN)/ruff check breakwater actors jobs tests
	$(BIN)/mypy

# Every test, unit and integration, plus lint and types.
test: install services promtool lint
	$(BIN)/python -m pytest

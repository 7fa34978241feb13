# Siyu — `make run` and `make test` are all a new machine needs (Python 3.11+, git, make).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HTMX_VERSION := 2.0.11
HTMX := frontend/static/vendor/htmx.min.js

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast check lint migrate i18n-extract i18n-check bench-ingest bench-identity bench-inbox bench-engagement bench-purchases clean

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(PY):
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Siyu needs Python 3.11 or newer, found " + sys.version.split()[0]'
	@echo "[siyu] creating $(VENV)…"
	@$(PYTHON) -m venv $(VENV)
	@$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	@echo "[siyu] installing Siyu and its dependencies into $(VENV)…"
	@$(PIP) install --quiet --progress-bar off -e '.[test]'
	@touch $@

$(HTMX):
	@bash infra/fetch-htmx.sh $(HTMX_VERSION) $(HTMX)

install: $(VENV)/.installed $(HTMX) ## Create .venv and install Siyu (editable) with test tools

run: install ## Start Siyu with embedded PostgreSQL + Redis, the demo brand and the WeChat simulator
	@$(VENV)/bin/siyu run

test: install ## Run the whole test suite against real PostgreSQL and Redis (browser tests in Chromium)
	@bash infra/ensure-chromium.sh
	@$(VENV)/bin/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-fast: install ## Tests without the browser
	@$(VENV)/bin/pytest -q -p no:cacheprovider -m "not e2e" $(PYTEST_ARGS)

lint: install ## ruff
	@$(VENV)/bin/ruff check src tests

check: lint test ## Lint, then the whole suite

migrate: install ## Apply migrations (embedded PostgreSQL unless DATABASE_URL is set)
	@$(VENV)/bin/siyu migrate

i18n-extract: install ## Refresh the gettext template from the code and templates, and merge it into the catalogs
	@$(VENV)/bin/pybabel extract -F infra/babel.cfg -k N_ -k _ -o frontend/locale/messages.pot --no-location --omit-header src frontend/templates
	@$(VENV)/bin/pybabel update -i frontend/locale/messages.pot -d frontend/locale -D messages --no-fuzzy-matching --omit-header

i18n-check: install ## Fail when a message lacks its zh_CN translation
	@$(VENV)/bin/pytest -q -p no:cacheprovider tests/unit/core/test_i18n.py

bench-ingest: install ## Callbacks/s and latency of the WeChat gateway against a bare endpoint (BENCH_N, BENCH_C)
	@$(PY) bench/ingest.py

bench-identity: install ## Identity graph at 1M identities / 5M events: resolve, merges, timeline, search vs raw SQL (BENCH_SCALE)
	@$(PY) bench/identity.py

bench-inbox: install ## Inbox at 100k open conversations: list page, routing, SSE fan-out vs baselines (BENCH_SCALE)
	@$(PY) bench/inbox.py

bench-purchases: install ## Import of 1M order lines vs a bare COPY; WeChat Pay notification p99 vs a bare endpoint (BENCH_LINES, BENCH_N, BENCH_C)
	@$(PY) bench/purchases.py

bench-engagement: install ## Broadcast to 100k among 50 tenants vs the simulator alone, pacing, rep replies meanwhile, kill/flush, 1M scheduled rows (BENCH_SCALE)
	@$(PY) bench/engagement.py

clean: ## Remove the virtualenv and caches (keeps .siyu data)
	rm -rf $(VENV) .pytest_cache .ruff_cache

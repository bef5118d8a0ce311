# The two commands: `make run` serves the app on http://127.0.0.1:8000, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test install install-dev browser lint bench clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt $(VENV)/.installed
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

.env:
	$(PY) -m connectors_admin.devenv .env

run: $(VENV)/.installed .env
	$(PY) manage.py migrate --no-input
	$(PY) manage.py collectstatic --no-input --verbosity 0
	$(PY) manage.py ensure_admin --url http://$(HOST):$(PORT)/
	$(VENV)/bin/uvicorn connectors_admin.asgi:application --host $(HOST) --port $(PORT) --no-access-log

# Browser tests drive Debian's Chromium through Playwright (Playwright's own browser download cannot work here).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "Installing Debian's chromium for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: $(VENV)/.installed-dev browser
	$(PY) -m pytest $(PYTEST_ARGS)

# ruff for the code, import-linter for the layout: the import contracts in .importlinter (no circles, data one way).
lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# Benchmarks (results and how to read them: docs/PERFORMANCE.md). Each script starts its own upstream, the app under
# uvicorn with production settings and a PostgreSQL database of its own (postgres://postgres@127.0.0.1:5432), then
# stops them; about 20 minutes in all, most of it the 100,000-request memory run.
bench: $(VENV)/.installed
	$(PY) -m bench.latency
	$(PY) -m bench.server_cpu
	$(PY) -m bench.event_write --repeats 300
	$(PY) -m bench.concurrency --requests 200 --upstream-ms 500 --limit 5
	$(PY) -m bench.concurrency --requests 1000 --upstream-ms 1000 --limit 3
	$(PY) -m bench.streaming
	$(PY) -m bench.throughput --clients 64 --requests 100000
	$(PY) -m bench.faults

clean:
	rm -rf $(VENV) staticfiles .pytest_cache test-artifacts

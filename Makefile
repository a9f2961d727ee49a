# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Every run ends with how many tests ran per part, and why a part did not run.
PYTEST := $(PY) -m pytest

.PHONY: run test test-e2e test-all lint screenshots bench clean

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

# The console at / and the HTTP API (/api, /v1, /metrics) on one port, 127.0.0.1:8501 by default
# (.streamlit/config.toml). `streamlit run streamlit_app.py` still serves the console alone.
run: $(STAMP)
	$(PY) -m api

# The fast suite: core and console on SQLite, the store tests on PostgreSQL too (when a server can be started),
# the real llama-server tests (when the binary is built: scripts/build_llama_server.sh). Parts that cannot run
# are skipped with the reason, listed at the end; under CI=true they fail instead.
test: $(STAMP) lint
	$(PYTEST) -n auto --ignore=tests/e2e --cov=orchestrator_core --cov-report=term --cov-fail-under=85

# The browser tests: Debian's chromium (apt-get install chromium) against a real `streamlit run`.
test-e2e: $(STAMP)
	$(PYTEST) -n auto --dist loadfile tests/e2e

test-all: test test-e2e

# Gates: ruff (with import-outside-top-level and operator-precedence on) and mypy strict on the core and console.
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

# Rewrites docs/screenshots/*.png from the current console (same machinery as tests/e2e).
screenshots: $(STAMP)
	$(PY) scripts/screenshots.py

# Figures, not tests: run on a quiet machine (see README "Performance").
bench: $(STAMP)
	$(PY) bench/overhead.py
	$(PY) bench/metrics_queries.py
	$(PY) bench/models_page.py
	$(PY) bench/load_speed.py
	$(PY) bench/cli_startup.py
	$(PY) bench/gateway.py

clean:
	rm -rf $(VENV) .pytest_cache .coverage

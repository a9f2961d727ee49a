# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test bench clean

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

# The console at / and the HTTP API (/api, /v1, /metrics) on one port, 127.0.0.1:8501 by default
# (.streamlit/config.toml). `streamlit run streamlit_app.py` still serves the console alone.
run: $(STAMP)
	$(PY) -m api

test: $(STAMP)
	$(PY) -m pytest -n auto --cov=orchestrator_core --cov-report=term --cov-fail-under=85

bench: $(STAMP)
	$(PY) bench/overhead.py
	$(PY) bench/metrics_queries.py

clean:
	rm -rf $(VENV) .pytest_cache .coverage

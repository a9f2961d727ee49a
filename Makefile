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

run: $(STAMP)
	$(PY) -m streamlit run streamlit_app.py

test: $(STAMP)
	$(PY) -m pytest -n auto --cov=orchestrator_core --cov-report=term --cov-fail-under=85

bench: $(STAMP)
	$(PY) bench/overhead.py
	$(PY) bench/metrics_queries.py

clean:
	rm -rf $(VENV) .pytest_cache .coverage

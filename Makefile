# The two commands of the README: `make run` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test demo lint clean bench

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall when the dependency list changes.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/crewrun up --demo

demo: install
	$(VENV)/bin/crewrun demo --fresh

# Classification, retry policy, redaction and the circuit breaker must keep >= 95 % branch coverage.
COVERAGE := --cov=backend.exceptions --cov=activities.boundary --cov=workflows.policies --cov=backend.breaker \
	--cov-branch --cov-report=term-missing:skip-covered --cov-fail-under=95

test: install
	$(PY) -m pytest $(COVERAGE) $(PYTEST_ARGS)

# Benchmarks (bench/): writes BENCHMARKS.md at the repo root; about 15 minutes on 2 cores.
# CREWRUN_BENCH_QUICK=1 for tiny sizes while developing.
bench: install
	$(PY) -m bench.run

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy backend workflows activities worker.py

clean:
	rm -rf $(VENV) .crewrun .pytest_cache

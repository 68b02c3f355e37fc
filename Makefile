# The two commands of the README: `make run` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Bytecode caching on for everything started from here, whatever the shell says: the suite starts
# dozens of worker, API and server processes, each of which would otherwise compile crewrun's
# modules again (and the workflow sandbox recompiles the workflow module for every run).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install run test test-postgres demo lint clean bench mutation

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall when the dependency list changes.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The console's browser test drives Debian's Chromium (Playwright's own browser downloads are not
# reachable everywhere); installed once, when missing.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
		|| (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null)

run: install
	$(VENV)/bin/crewrun up --demo

demo: install
	$(VENV)/bin/crewrun demo --fresh

# The suite runs in parallel test processes, each with its own dev server, simulator and ports
# (JOBS=1 to run it in one). Coverage tracing costs about a third more CPU everywhere it runs, so
# the error-path gate (classification, retry policy, redaction, the breaker: >= 95 % of branches)
# is measured on those modules' own tests, in a second run of just them.
JOBS ?= 4
GATED_TESTS := tests/test_classifier.py tests/test_boundary.py tests/test_retry_policy.py \
	tests/test_redaction.py tests/test_breaker.py
COVERAGE := --cov=backend.exceptions --cov=activities.boundary --cov=workflows.policies --cov=backend.breaker \
	--cov-branch --cov-report=term-missing:skip-covered --cov-fail-under=95

test: install $(CHROMIUM)
	$(PY) -m pytest -n $(JOBS) $(addprefix --ignore=,$(GATED_TESTS)) $(PYTEST_ARGS)
	$(PY) -m pytest -n 2 $(GATED_TESTS) $(COVERAGE) $(PYTEST_ARGS)

# CI's second pass: the tests whose backend DB is the stack's, again on PostgreSQL (the data-layer
# tests run on both databases in every pass already).
test-postgres: install $(CHROMIUM)
	CREWRUN_TEST_DATABASE=postgresql $(PY) -m pytest -n $(JOBS) -m "stack_db and not load" $(PYTEST_ARGS)

# Mutation testing of the error paths: mutmut (configured in pyproject.toml) mutates classification,
# the attempt, LLM and tool boundaries, retry policy and category traits, the breaker, compensation
# and redaction, and runs each mutant against the fast tests that reach the mutated function
# (SQLite only, no dev server). Not part of `make test`: about 10 minutes on 2 cores. mutants/ is
# made afresh: mutmut keeps a function's results until the function changes, so a survivor would
# never meet the test written to kill it. Writes MUTATION.md; fails when a module kills under 97 %
# of its non-equivalent mutants or a survivor has no reviewed reason (mutation/equivalent.toml).
MUTATION_JOBS ?= 2
mutation: install
	rm -rf mutants
	$(VENV)/bin/mutmut run --max-children $(MUTATION_JOBS)
	$(PY) scripts/mutation_report.py

# Benchmarks (bench/): writes BENCHMARKS.md at the repo root; about 15 minutes on 2 cores.
# CREWRUN_BENCH_QUICK=1 for tiny sizes while developing.
bench: install
	$(PY) -m bench.run

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy backend workflows activities worker.py bench scripts

clean:
	rm -rf $(VENV) .crewrun .pytest_cache

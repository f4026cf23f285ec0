# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
BENCH_TYPED := $(wildcard examples/benchmarks/*.py)

.PHONY: demo test lint venv clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e '.[all]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check recycler storage tests examples
	$(VENV)/bin/ruff format --check recycler storage tests examples
	$(VENV)/bin/mypy
	MYPYPATH=examples/benchmarks $(VENV)/bin/mypy --strict $(BENCH_TYPED)

test: lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/recycler demo

clean:
	rm -rf $(VENV) recycler-demo recycler.db recycler-teachers bench-results

# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
BENCH_TYPED := $(wildcard examples/benchmarks/*.py)
# Debian's chromium: recycler serve's browser tests drive it (never a downloaded browser)
CHROMIUM := /usr/bin/chromium

.PHONY: demo test lint venv clean

$(STAMP): pyproject.toml | $(CHROMIUM)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e '.[all]'
	touch $(STAMP)

# runs only while the file is missing; where apt-get cannot (not root, not Debian) the
# browser tests skip and say why
$(CHROMIUM):
	-DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || \
	  echo "make: could not install Debian's chromium; the browser tests will be skipped"

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

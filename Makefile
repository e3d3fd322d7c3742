# dasr: `make demo` and `make test` set everything up on a fresh Debian machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-all lint typecheck bench soak sysdeps venv etcd clean

# the exact versions come from constraints.txt (pyproject.toml states the ranges that work)
$(STAMP): pyproject.toml constraints.txt dasr/__init__.py  # the version is read from dasr/__init__.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

venv: sysdeps $(STAMP)

sysdeps:
	@scripts/install-system-packages.sh

# etcd for the tests of the elastic run's replicated store: unpacked into .venv, not installed (no service)
etcd: venv
	@scripts/fetch-etcd.sh

demo: venv
	$(VENV)/bin/dasr demo --out exp/demo

# ruff for lint and format, import-linter for the layers; `make test` runs it first, so a lint error fails CI
lint: venv
	$(VENV)/bin/ruff check dasr lab tests scripts examples
	$(VENV)/bin/ruff format --check dasr lab tests scripts examples
	$(VENV)/bin/lint-imports --no-cache

# mypy over the whole package (pyproject [tool.mypy])
typecheck: venv
	$(VENV)/bin/mypy

# the test files run on 2 processes (pytest-xdist; a file's tests stay together, with their module fixtures)
test: venv etcd lint typecheck
	OMP_NUM_THREADS=1 $(PY) -m pytest -q --durations=25 -n 2 --dist loadfile

test-all: venv etcd
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m ''

bench: venv
	$(VENV)/bin/dasr bench data
	$(VENV)/bin/dasr bench train

# faults injected into real runs, 10,000 fuzzed inputs, an 8-worker 1,000-step soak -> docs/results/reliability.md
soak: venv
	OMP_NUM_THREADS=1 $(VENV)/bin/dasr bench reliability

clean:
	rm -rf exp .pytest_cache .mypy_cache

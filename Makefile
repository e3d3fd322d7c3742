# dasr: `make demo` and `make test` set everything up on a fresh Debian machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-all lint typecheck bench soak sysdeps venv clean

$(STAMP): pyproject.toml dasr/__init__.py  # the version is read from dasr/__init__.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,serve]'
	touch $(STAMP)

venv: sysdeps $(STAMP)

sysdeps:
	@scripts/install-system-packages.sh

demo: venv
	$(VENV)/bin/dasr demo --out exp/demo

# ruff for lint and format; `make test` runs it first, so a lint error fails CI
lint: venv
	$(VENV)/bin/ruff check dasr tests scripts
	$(VENV)/bin/ruff format --check dasr tests scripts

# mypy over the files listed in pyproject [tool.mypy]
typecheck: venv
	$(VENV)/bin/mypy

test: venv lint typecheck
	OMP_NUM_THREADS=1 $(PY) -m pytest -q

test-all: venv
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m ''

bench: venv
	$(VENV)/bin/dasr bench data
	$(VENV)/bin/dasr bench train

# faults injected into real runs, 10,000 fuzzed inputs, an 8-worker 1,000-step soak -> docs/results/reliability.md
soak: venv
	OMP_NUM_THREADS=1 $(VENV)/bin/dasr bench reliability

clean:
	rm -rf exp .pytest_cache .mypy_cache

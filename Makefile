# Everything installs through this file, so a fresh machine, CI and a developer do the same.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
WORK   ?= work
DATA   ?= $(WORK)/synthetic
SCALE  ?= 1.0

.PHONY: venv demo test clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

venv: $(STAMP)

## The main job on the embedded default: synthetic data -> ingest every release -> summary.
demo: $(STAMP)
	$(VENV)/bin/melanoma demo --work $(WORK) --scale $(SCALE)

## The test suite.
test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(WORK) results book/_build

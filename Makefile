# Everything installs through this file, so a fresh machine, CI and a developer do the same.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
GRID   ?= params/demo.yaml

.PHONY: venv demo test clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

venv: $(STAMP)

## The main job on the embedded default: synthetic data -> Snakemake grid -> book/_build/html.
demo: $(STAMP)
	$(VENV)/bin/melanoma demo --grid $(GRID)

## The test suite.
test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf work results book/_build book/_generated

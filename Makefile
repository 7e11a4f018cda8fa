# Everything installs through this file, so a fresh machine, CI and a developer do the same.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
GRID   ?= params/demo.yaml

.PHONY: venv demo test clean browser serve

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	@# the web page's runtime (onnxruntime-web, pinned in web/package-lock.json), from the npm registry
	if command -v npm >/dev/null; then cd web && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error; \
	  else echo "npm not found: the book's web page needs it (apt-get install -y nodejs npm)"; fi
	touch $(STAMP)

## Debian's Chromium for the browser test and the book's Fig. 2 (root; never `playwright install`).
browser:
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
	  || echo "WARNING: could not install chromium (not root?): tests/report/test_web.py will be SKIPPED and the book will have no Fig. 2 (as root: apt-get install -y chromium)"

venv: $(STAMP)

## JupyterLab on the notebooks with the project's kernel: the kernel spec `python3` that `make venv`
## registers in .venv/share/jupyter (it runs .venv/bin/python), put first on JUPYTER_PATH so that a
## user-level `python3` kernel of another Python cannot shadow it. LAB_ARGS: more options.
LAB_ARGS ?=
.PHONY: lab
lab: $(STAMP)
	JUPYTER_PATH="$(abspath $(VENV))/share/jupyter" $(VENV)/bin/jupyter lab --ServerApp.root_dir="$(CURDIR)" notebooks/01_ingest.ipynb $(LAB_ARGS)

## requirements.lock: the exact versions of this .venv (pip freeze), for `pip install -r requirements.lock`.
.PHONY: lock
lock: $(STAMP)
	@{ echo "# The exact environment of \`make venv\` (pip freeze; made by \`make lock\`): Python $$($(PY) -c 'import platform; print(platform.python_version())'), $$(uname -sm)."; \
	  echo "# Install: python3 -m venv .venv && .venv/bin/pip install -r requirements.lock && make venv"; \
	  echo "# torch is the CUDA build that PyPI serves for Linux (the nvidia-* wheels); the ranges are in pyproject.toml."; \
	  $(PY) -m pip freeze --exclude-editable --exclude melanoma; } > requirements.lock.tmp
	mv requirements.lock.tmp requirements.lock
	@echo "requirements.lock: $$(grep -c '==' requirements.lock) pinned packages"

## The main job on the embedded default: synthetic data -> Snakemake grid -> book/_build/html.
## (browser first: the book's Fig. 2 is a screenshot of the web page in Debian's Chromium)
demo: $(STAMP) browser
	$(VENV)/bin/melanoma demo --grid $(GRID)

## The built book on http://127.0.0.1:8000 (its web page needs http://, not file://); Ctrl-C stops.
PORT ?= 8000
serve: $(STAMP)
	$(VENV)/bin/melanoma serve --port $(PORT)

## The real samples in ../shared/realdata, end to end to a book (work and results in ../realdata-work).
.PHONY: realdata
realdata: $(STAMP)
	$(VENV)/bin/melanoma demo --grid params/realdata.yaml

## The test suite.
test: $(STAMP) browser
	$(PY) -m pytest -q

## A real one-node SLURM cluster on this machine (root, Debian; installs slurm-wlm + munge when missing):
## start / stop (only the daemons it started, by PID). State, config and logs in .slurm/.
.PHONY: slurm-up slurm-down slurm-demo
slurm-up:
	workflow/slurm/local-cluster.sh up

slurm-down:
	workflow/slurm/local-cluster.sh down

## The demo grid through the SLURM executor to the book (starts the local cluster when no SLURM
## answers, and stops it afterwards): results/slurm-demo/, book in results/slurm-demo/book/.
slurm-demo: $(STAMP)
	PY=$(PY) GRID=$(GRID) workflow/slurm/demo.sh

## Benchmarks → benchmarks/RESULTS.md: quick settings; bench-full adds 224 px and the end-to-end demos.
.PHONY: bench bench-full
bench: $(STAMP)
	$(PY) benchmarks/run_all.py

bench-full: $(STAMP)
	$(PY) benchmarks/run_all.py --full

clean:
	rm -rf work results book/_build book/_generated

# tinystories-lab: the verbs. Each target sets up its own environment on first use.
#   make reproduce [PROFILE=smoke]   run the notebooks headless, figures into figures/$(PROFILE)/
#   make test                        the test suite
#   make lab [PROFILE=smoke]         JupyterLab on notebooks/ (LAB_IP=localhost, LAB_PORT=8888, LAB_FLAGS=...)
#   make test-browser                notebook 06 in a real browser (chromium + playwright: the browser extra)
#   make bench                       the benchmarks in bench/ (most of an hour), then every aim met or not
# TORCH_SPEC picks the torch install when the venv has none: the default is the CPU-friendly pin CI
# uses; `make TORCH_SPEC=torch` takes the newest release, or pre-install any torch >= 2.2 in the venv.

PYTHON ?= python3
VENV ?= .venv
PROFILE ?= smoke
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The kernel every notebook names (metadata.kernelspec): this venv's python, whichever Jupyter opens them.
KERNEL := $(VENV)/share/jupyter/kernels/tinystories-lab/kernel.json
LAB_IP ?= localhost
LAB_PORT ?= 8888
LAB_FLAGS ?=
# root (a container, a cloud box) needs --allow-root, and has no desktop browser to open
ROOT_FLAGS := $(if $(filter 0,$(shell id -u)),--allow-root --no-browser)

.PHONY: setup reproduce test test-browser lab lint bench clean distclean

setup: $(STAMP) $(KERNEL)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -c "import torch" 2>/dev/null || { echo "installing $(TORCH_SPEC)"; $(BIN)/python -m pip install --quiet $(TORCH_SPEC); }
	@echo "installing tinystories-lab and its extras into $(VENV)"
	@$(BIN)/python -m pip install --quiet -e ".[all,dev,vocab]"
	@touch $@

$(KERNEL): $(STAMP)
	@$(BIN)/python -m ipykernel install --sys-prefix --name tinystories-lab --display-name "Python (tinystories-lab)" >/dev/null
	@echo "registered the Jupyter kernel 'Python (tinystories-lab)' ($(VENV)/bin/python)"

reproduce: $(STAMP)
	$(BIN)/tinystories reproduce --profile $(PROFILE)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Jupyter prints the URL with its token once it listens; a taken port is an error, not a silent other port.
# The notebooks' parameters cell reads TINYSTORIES_PROFILE, so PROFILE picks the profile they open on.
lab: $(KERNEL)
	TINYSTORIES_PROFILE=$(PROFILE) $(BIN)/jupyter lab --notebook-dir=notebooks --ip=$(LAB_IP) --port=$(LAB_PORT) \
	  --ServerApp.port_retries=0 --config=tools/jupyter_lab_config.py $(ROOT_FLAGS) $(LAB_FLAGS)

# Needs chromium (Debian: apt-get install chromium) and `pip install -e ".[browser]"`; make test skips it
# without them. Writes screenshots to build/test-artifacts/browser/ and docs/img/.
test-browser: $(KERNEL)
	@$(BIN)/python -c "import playwright" 2>/dev/null || $(BIN)/python -m pip install --quiet -e ".[browser]"
	DOCS_IMG=1 $(BIN)/python -m pytest -q -rs -m browser tests/test_browser.py

lint: $(STAMP)
	$(BIN)/ruff check .

# Each benchmark also writes its table to build/bench/<name>.json; the last step prints every aim in one table.
bench: $(STAMP)
	@rm -rf build/bench && mkdir -p build/bench
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b --json build/bench/$$(basename $$b .py).json || exit 1; done
	@$(BIN)/python bench/summary.py build/bench/*.json

clean:
	rm -rf runs/$(PROFILE) figures/$(PROFILE)

distclean:
	rm -rf runs figures/*/ $(VENV)

# tinystories-lab: the verbs. Each target sets up its own environment on first use.
#   make reproduce [PROFILE=smoke]   run the notebooks headless, figures into figures/$(PROFILE)/
#   make test                        the test suite
#   make lab                         JupyterLab on notebooks/
# TORCH_SPEC picks the torch install when the venv has none: the default is the CPU-friendly pin CI
# uses; `make TORCH_SPEC=torch` takes the newest release, or pre-install any torch >= 2.2 in the venv.

PYTHON ?= python3
VENV ?= .venv
PROFILE ?= smoke
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup reproduce test lab lint bench clean distclean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -c "import torch" 2>/dev/null || { echo "installing $(TORCH_SPEC)"; $(BIN)/python -m pip install --quiet $(TORCH_SPEC); }
	@echo "installing tinystories-lab and its extras into $(VENV)"
	@$(BIN)/python -m pip install --quiet -e ".[all,dev,vocab]"
	@touch $@

reproduce: $(STAMP)
	$(BIN)/tinystories reproduce --profile $(PROFILE)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf runs/$(PROFILE) figures/$(PROFILE)

distclean:
	rm -rf runs figures/*/ $(VENV)

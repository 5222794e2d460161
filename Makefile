# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CACHE  ?= $(or $(SLIMFORMER_CACHE),$(HOME)/.cache/slimformer)
TEACHER := $(CACHE)/teachers/minilm-l6-trec6

.PHONY: install demo test lint clean

# torch first, pinned: it resolves to the local CPU wheel; an unpinned torch pulls GBs of CUDA.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[all,test]'
	touch $(STAMP)

install: $(STAMP)

# The main job on the embedded default: train (or reuse) the MiniLM-L6 teacher on TREC-6, then benchmark it.
demo: install
	$(BIN)/slimformer train --base minilm-l6 --data trec6 --out $(TEACHER)
	$(BIN)/slimformer bench --model $(TEACHER) --data trec6 --threads 1,2 --out runs/demo

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache

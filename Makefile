# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CACHE  ?= $(or $(SLIMFORMER_CACHE),$(HOME)/.cache/slimformer)
TEACHER := $(CACHE)/teachers/minilm-l6-trec6

DEMO   := runs/demo

.PHONY: install browser demo test lint clean

# torch first, pinned: it resolves to the local CPU wheel; an unpinned torch pulls GBs of CUDA.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[all,test]'
	touch $(STAMP)

install: $(STAMP)

# Debian's Chromium renders report.html in the report test (skipped, with a reason, where it cannot be installed).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq chromium >/dev/null) || echo "chromium could not be installed: the report rendering test will be skipped"

# The main job on the embedded default: train (or reuse) the MiniLM-L6 teacher on TREC-6 (64 tokens: the longest
# question has 41, so nothing is cut, and teachers cached before the model-derived default stay valid), then optimize it
# (with a distilled student), write the report and export the recommended variant. Run again: it resumes.
# --selection-slice 0.1: the students' epochs, seed and QAT epoch are chosen on 10% of the training texts, so the
# budget check on validation looks at data no earlier choice has seen.
demo: install
	$(BIN)/slimformer train --base minilm-l6 --data trec6 --max-length 64 --out $(TEACHER)
	$(BIN)/slimformer optimize --model $(TEACHER) --data trec6 --distill --distill-seeds 2 --unlabelled movie-questions \
		--selection-slice 0.1 --compress qat --threads 1,2 \
		--out $(DEMO) \
		$(if $(wildcard $(DEMO)/run.json),--resume,)
	$(BIN)/slimformer export $(DEMO) --out $(DEMO)/bundle --overwrite

test: install browser
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache

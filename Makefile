# DiffSeg reproduction harness. Every target installs what it needs into $(VENV).
# torch is installed first with an exact spec: on CPU-only machines of this project
# 2.13.0 is a local CPU build; on a GPU machine pass TORCH_SPEC to pick a CUDA build.
# The reproduce targets run in outputs/<experiment>/<fingerprint of the settings> (eval/run/identity.py):
# the same command resumes, other RUN_ARGS get their own folder, results are never mixed.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# `make data-<dataset>` builds a root: the one its conf/dataset config names, or ROOT=<folder>.
ROOT ?=
DATA_DOWNLOADS ?= datasets/downloads
# more options of `datasets/prepare.py <dataset>` (e.g. PREPARE_ARGS="--overlap largest_on_top")
PREPARE_ARGS ?=
COCO_ROOT ?= $(or $(ROOT),datasets/coco_stuff27)
# COCO_SUBSET=all keeps the 5000 val2017 images (for dataset.subset=all)
COCO_SUBSET ?= curated
CITYSCAPES_ROOT ?= $(or $(ROOT),datasets/cityscapes)
CITYSCAPES_ZIPS ?= $(DATA_DOWNLOADS)
RUN_ARGS ?=
# `make test` runs the suite in a random order (pytest-randomly); replay one with TEST_SEED=N.
ifndef TEST_SEED
TEST_SEED := $(shell od -An -N2 -tu2 /dev/urandom | tr -d ' ')
endif
EXPLORE_STAMP := $(VENV)/.installed-explore
EXPLORE_ARGS ?= outputs/demo/coco_stuff27

.PHONY: venv test lint bench demo explore explore-deps explore-screenshot data-coco data-cityscapes data-coco-object reproduce-coco reproduce-cityscapes clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check .
	@echo "tests in random order, seed $(TEST_SEED) (replay this order: make test TEST_SEED=$(TEST_SEED))"
	$(PY) -m pytest -q -p randomly --randomly-seed=$(TEST_SEED)

lint: $(STAMP)
	$(PY) -m ruff check .

bench: $(STAMP)
	$(PY) -m eval.bench $(BENCH_ARGS)
	$(PY) -m eval.bench.diffcut
	$(PY) -m eval.bench.mmdit
	$(PY) -m eval.bench.explore

demo: $(STAMP)
	$(PY) -m eval.demo

# The explorer (Gradio, the `explore` extra). Default: the demo run (made first when missing);
# EXPLORE_ARGS="--model tiny --image cat.jpg" or EXPLORE_ARGS="RUN_A RUN_B" for others.
$(EXPLORE_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[dev,explore]'
	@touch $(EXPLORE_STAMP)

explore-deps: $(EXPLORE_STAMP)

explore: $(EXPLORE_STAMP)
	@if [ "$(EXPLORE_ARGS)" = "outputs/demo/coco_stuff27" ] && [ ! -f outputs/demo/coco_stuff27/metrics.json ]; then \
		$(PY) -m eval.demo; fi
	$(PY) -m eval.explore $(EXPLORE_ARGS)

# The README's screenshots, taken by the browser test in a headless Chromium (apt-get install chromium).
explore-screenshot: $(EXPLORE_STAMP)
	EXPLORE_SCREENSHOTS=results/explore $(PY) -m pytest -q tests/test_explore_browser.py

# The datasets of the reproduce targets, with their own variables (COCO_ROOT, COCO_SUBSET,
# CITYSCAPES_ROOT, CITYSCAPES_ZIPS; ROOT works too).
data-coco: $(STAMP)
	$(PY) datasets/prepare.py coco --root $(COCO_ROOT) --downloads $(DATA_DOWNLOADS) --subset $(COCO_SUBSET) $(PREPARE_ARGS)

data-cityscapes: $(STAMP)
	$(PY) datasets/prepare.py cityscapes --root $(CITYSCAPES_ROOT) --zips $(CITYSCAPES_ZIPS) $(PREPARE_ARGS)

# COCO-Object's labels live on the COCO root (its preparation fetches COCO first when missing).
data-coco-object: $(STAMP)
	$(PY) datasets/prepare.py coco-object --root $(COCO_ROOT) --downloads $(DATA_DOWNLOADS) $(PREPARE_ARGS)

# Every other dataset (data-voc, data-context, data-ade20k, and any new one):
# `datasets/prepare.py --help` lists them.
data-%: $(STAMP)
	$(PY) datasets/prepare.py $* $(if $(ROOT),--root $(ROOT)) --downloads $(DATA_DOWNLOADS) $(PREPARE_ARGS)

reproduce-coco: data-coco
	@run_dir=$$($(PY) -m eval.run.identity experiment=coco_stuff27 dataset.root=$(COCO_ROOT) $(RUN_ARGS) --prefix outputs/coco_stuff27) && \
	$(PY) -m eval.run experiment=coco_stuff27 dataset.root=$(COCO_ROOT) hydra.run.dir=$$run_dir $(RUN_ARGS) && \
	$(PY) -m eval.compare $$run_dir --out results/coco_stuff27/compare && \
	$(PY) -m eval.tables $$run_dir --out results/coco_stuff27

reproduce-cityscapes: data-cityscapes
	@run_dir=$$($(PY) -m eval.run.identity experiment=cityscapes dataset.root=$(CITYSCAPES_ROOT) $(RUN_ARGS) --prefix outputs/cityscapes) && \
	$(PY) -m eval.run experiment=cityscapes dataset.root=$(CITYSCAPES_ROOT) hydra.run.dir=$$run_dir $(RUN_ARGS) && \
	$(PY) -m eval.compare $$run_dir --out results/cityscapes/compare && \
	$(PY) -m eval.tables $$run_dir --out results/cityscapes

clean:
	rm -rf outputs multirun .pytest_cache .ruff_cache

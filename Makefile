# DiffSeg reproduction harness. Every target installs what it needs into $(VENV).
# torch is installed first with an exact spec: on CPU-only machines of this project
# 2.13.0 is a local CPU build; on a GPU machine pass TORCH_SPEC to pick a CUDA build.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
COCO_ROOT ?= datasets/coco_stuff27
CITYSCAPES_ROOT ?= datasets/cityscapes
CITYSCAPES_ZIPS ?= datasets/downloads
RUN_ARGS ?=

.PHONY: venv test lint bench demo data-coco data-cityscapes reproduce-coco reproduce-cityscapes tables clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .

bench: $(STAMP)
	$(PY) -m eval.bench $(BENCH_ARGS)

demo: $(STAMP)
	$(PY) -m eval.demo

data-coco: $(STAMP)
	$(PY) datasets/prepare.py coco --root $(COCO_ROOT)

data-cityscapes: $(STAMP)
	$(PY) datasets/prepare.py cityscapes --root $(CITYSCAPES_ROOT) --zips $(CITYSCAPES_ZIPS)

reproduce-coco: data-coco
	$(PY) -m eval.run experiment=coco_stuff27 dataset.root=$(COCO_ROOT) hydra.run.dir=outputs/coco_stuff27 $(RUN_ARGS)
	$(PY) -m eval.tables outputs/coco_stuff27 --out results/coco_stuff27

reproduce-cityscapes: data-cityscapes
	$(PY) -m eval.run experiment=cityscapes dataset.root=$(CITYSCAPES_ROOT) hydra.run.dir=outputs/cityscapes $(RUN_ARGS)
	$(PY) -m eval.tables outputs/cityscapes --out results/cityscapes

clean:
	rm -rf outputs multirun .pytest_cache .ruff_cache

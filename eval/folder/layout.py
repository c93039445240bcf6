"""The names of everything a run folder holds: the one module under ``eval/`` that spells them.

A run folder (``python -m eval.run``, :mod:`eval.merge`, :mod:`eval.rescore`) holds::

    run.json                      the run's identity: settings, data, code, outputs (eval.folder.run_json)
    metrics.json                  totals, provenance, config, image ids (eval.folder.metrics_json)
    per_image.jsonl               one record per image (eval.folder.records); per_image.rank<k>.jsonl per rank
    masks/<method>/<id>.png       saved masks, save_masks=png (eval.folder.masks)
    masks/<method>.json           saved masks, save_masks=coco (a COCO results list, eval.folder.coco_results),
    masks/<method>[.rank<k>].coco.jsonl   built from these parts
    run.lock, run.log             the lock of the run holding the folder, the run's log
    config.yaml, hydra.yaml, overrides.yaml   the composed config, Hydra's, the command line
    qualitative.png               the qualitative grid
    compare.json, compare.md ...  the output of ``python -m eval.compare`` (a folder of its own, or
                                  ``<run>/compare/``; eval.folder.compare_output)

Every other module names these files through the constants and functions here.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "COCO_PART_SUFFIX", "COMPARE_DIR", "COMPARE_JSON", "COMPARE_MD", "CONFIG_YAML", "HYDRA_DIR", "HYDRA_YAML",
    "LOCK_FILE", "LOG_FILE", "MASK_DIR", "METHODS_CSV", "METRICS_JSON", "OVERRIDES_YAML", "PAIRS_CSV",
    "PER_CLASS_IOU_CSV", "PER_CLASS_IOU_PNG", "PER_IMAGE_MIOU_PNG", "QUALITATIVE_PNG", "RECORDS_FILE", "RESULT_FILES",
    "RUN_FOLDER_NAMES", "RUN_JSON", "coco_json_path", "coco_part_glob", "coco_part_path", "extremes_png",
    "is_coco_mask_file", "is_coco_part_of", "is_records_file", "mask_dir", "mask_png_name", "mask_png_path",
    "method_stem", "rank_part", "records_file", "records_files",
]

RUN_JSON = "run.json"
METRICS_JSON = "metrics.json"
RECORDS_FILE = "per_image.jsonl"
_RECORDS_STEM, _RECORDS_SUFFIX = "per_image", ".jsonl"
LOCK_FILE = "run.lock"
LOG_FILE = "run.log"
MASK_DIR = "masks"
_PNG = ".png"
_COCO_JSON = ".json"
COCO_PART_SUFFIX = ".coco.jsonl"
_RANK = ".rank"
CONFIG_YAML = "config.yaml"
HYDRA_YAML = "hydra.yaml"
OVERRIDES_YAML = "overrides.yaml"
HYDRA_DIR = ".hydra"
QUALITATIVE_PNG = "qualitative.png"
COMPARE_DIR = "compare"
COMPARE_JSON = "compare.json"
COMPARE_MD = "compare.md"
METHODS_CSV = "methods.csv"
PAIRS_CSV = "pairs.csv"
PER_CLASS_IOU_CSV = "per_class_iou.csv"
PER_CLASS_IOU_PNG = "per_class_iou.png"
PER_IMAGE_MIOU_PNG = "per_image_miou.png"
_EXTREMES = "extremes_"

# Files whose presence means a folder holds results (a merge or re-score refuses to write over them).
RESULT_FILES = (METRICS_JSON, RUN_JSON)
# Every fixed name above (tests/test_run_folder_owner.py: no other module under eval/ spells one).
RUN_FOLDER_NAMES = (RUN_JSON, METRICS_JSON, RECORDS_FILE, LOCK_FILE, LOG_FILE, MASK_DIR, CONFIG_YAML, HYDRA_YAML,
                    OVERRIDES_YAML, HYDRA_DIR, QUALITATIVE_PNG, COMPARE_DIR, COMPARE_JSON, COMPARE_MD, METHODS_CSV,
                    PAIRS_CSV, PER_CLASS_IOU_CSV, PER_CLASS_IOU_PNG, PER_IMAGE_MIOU_PNG)


def rank_part(rank: int | None) -> str:
    """The suffix of one data-parallel rank's files (``".rank1"``), ``""`` for a single process (None)."""
    return "" if rank is None else f"{_RANK}{rank}"


def records_file(rank: int | None = None) -> str:
    """``per_image.jsonl``, or ``per_image.rank<k>.jsonl`` of rank ``k`` of a data-parallel run."""
    return f"{_RECORDS_STEM}{rank_part(rank)}{_RECORDS_SUFFIX}"


def is_records_file(name: str) -> bool:
    """True for the name of a per-image records file (``per_image.jsonl``, ``per_image.rank<k>.jsonl``)."""
    return name.startswith(_RECORDS_STEM) and name.endswith(_RECORDS_SUFFIX)


def records_files(folder: str | os.PathLike) -> list[Path]:
    """Every per-image records file of a run folder, sorted by name."""
    return sorted(p for p in Path(folder).glob(f"{_RECORDS_STEM}*{_RECORDS_SUFFIX}") if is_records_file(p.name))


def method_stem(name: str) -> str:
    """File-system name of a method (``/`` replaced)."""
    return name.replace("/", "_")


def mask_png_name(image_id: str) -> str:
    """``<image id>.png`` (``/`` replaced): the file name of one image's PNG mask."""
    return f"{image_id.replace('/', '_')}{_PNG}"


def mask_dir(folder: str | os.PathLike, method: str | None = None) -> Path:
    """``<folder>/masks``, or ``<folder>/masks/<method>`` (the PNG masks of one method)."""
    out = Path(folder) / MASK_DIR
    return out if method is None else out / method_stem(method)


def mask_png_path(folder: str | os.PathLike, method: str, image_id: str) -> Path:
    """``<folder>/masks/<method>/<image id>.png``: one saved PNG mask (``save_masks=png``)."""
    return mask_dir(folder, method) / mask_png_name(image_id)


def coco_json_path(folder: str | os.PathLike, method: str) -> Path:
    """``<folder>/masks/<method>.json``: one method's COCO results (``save_masks=coco``)."""
    return mask_dir(folder) / f"{method_stem(method)}{_COCO_JSON}"


def coco_part_path(folder: str | os.PathLike, method: str, rank: int | None = None) -> Path:
    """``<folder>/masks/<method>[.rank<k>].coco.jsonl``: the COCO part lines one process appends."""
    return mask_dir(folder) / f"{method_stem(method)}{rank_part(rank)}{COCO_PART_SUFFIX}"


def coco_part_glob(method: str | None = None) -> str:
    """Glob (inside ``masks/``) of the COCO part files of one method (may match longer names), or of all."""
    return f"{method_stem(method) if method is not None else ''}*{COCO_PART_SUFFIX}"


def is_coco_part_of(name: str, method: str) -> bool:
    """True when ``name`` is a COCO part file of ``method`` (not of another method whose name starts with it)."""
    stem = method_stem(method)
    return name.startswith(stem) and name.endswith(COCO_PART_SUFFIX) and name[len(stem):].startswith(
        (_RANK, COCO_PART_SUFFIX))


def is_coco_mask_file(name: str) -> bool:
    """True for a COCO masks file name inside ``masks/`` (results JSON or part lines)."""
    return name.endswith((COCO_PART_SUFFIX, _COCO_JSON))


def extremes_png(slug: str) -> str:
    """``extremes_<slug>.png``: the worst / best images of one method in a compare output."""
    return f"{_EXTREMES}{slug}{_PNG}"

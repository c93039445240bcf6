"""One run-folder owner: :mod:`eval.folder` names every run-folder file, reads and writes each, and is torch-free.

* measured on the tree (ast): no module under ``eval/`` but ``eval/folder/layout.py`` spells a run-folder
  file name (the names are taken from ``layout.py`` itself), and the checker finds a name where one is spelled;
* ``eval.folder`` imports no torch (a fresh interpreter);
* each file round-trips through :class:`eval.folder.RunFolder` (values asserted);
* a run folder written by commit 04bc1eb (``tests/data/run_folder_04bc1eb``, before this package) is read,
  and ``eval.rescore`` re-scores it to its own totals.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eval.folder import FolderError, RunFolder, RunMismatchError, layout, masks
from eval.folder.compare_output import read_compare, write_compare
from eval.folder.metrics_json import write_metrics
from eval.folder.records import RunRecords, write_records
from eval.folder.run_json import write_run_json

REPO = Path(__file__).resolve().parents[1]
LAYOUT = REPO / "eval" / "folder" / "layout.py"
OLD_FOLDER = Path(__file__).resolve().parent / "data" / "run_folder_04bc1eb"


# ------------------------------------------------------------------------------------ (a) names spelled once
def _layout_names() -> set[str]:
    """Every public string constant of layout.py (read with ast, not imported)."""
    names = set()
    for node in ast.parse(LAYOUT.read_text(encoding="utf-8")).body:
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
                and all(isinstance(t, ast.Name) and not t.id.startswith("_") and t.id != "__all__"
                        for t in node.targets)):
            names.add(node.value.value)
    return names


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def spelled_names(source: str, names: set[str]) -> list[tuple[int, str]]:
    """``(line, name)`` of each run-folder name a module spells: a string equal to a file name (one with a
    dot), or a folder name (``masks``) joined to a path with ``/`` or passed to ``glob``/``rglob``/``joinpath``."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    in_path: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            in_path.update({id(node.left), id(node.right)})
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("glob", "rglob", "joinpath")):
            in_path.update(id(a) for a in node.args)
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in docs:
            continue
        if node.value in names and ("." in node.value.strip(".") or id(node) in in_path):
            found.append((node.lineno, node.value))
    return sorted(found)


def test_layout_names_the_run_folder_files():
    names = _layout_names()
    assert {"run.json", "metrics.json", "per_image.jsonl", "masks", "run.lock", "compare.json", "compare.md",
            ".coco.jsonl", "qualitative.png"} <= names
    assert names >= set(layout.RUN_FOLDER_NAMES)


def test_the_checker_finds_a_spelled_name():
    names = _layout_names()
    source = ('"""A docstring naming metrics.json is fine."""\n'
              'from pathlib import Path\n'
              'x = Path("out") / "metrics.json"\n'
              'y = Path("out") / "masks" / "a.png"\n'
              'z = {"masks": 1, "note": "see metrics.json"}\n'
              'w = Path("out").rglob("run.json")\n')
    assert spelled_names(source, names) == [(3, "metrics.json"), (4, "masks"), (6, "run.json")]


def test_no_module_but_layout_spells_a_run_folder_file_name():
    names = _layout_names()
    offenders = []
    for path in sorted((REPO / "eval").rglob("*.py")):
        if path == LAYOUT:
            continue
        offenders += [f"{path.relative_to(REPO)}:{line}: {name!r}"
                      for line, name in spelled_names(path.read_text(encoding="utf-8"), names)]
    assert offenders == []


# ------------------------------------------------------------------------------------ (b) torch-free
def test_eval_folder_imports_no_torch():
    modules = sorted(f"eval.folder.{p.stem}" for p in (REPO / "eval" / "folder").glob("*.py") if p.stem != "__init__")
    code = ("import importlib, sys\n"
            f"for name in {modules!r}: importlib.import_module(name)\n"
            "import eval.folder; eval.folder.RunFolder\n"
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    assert len(modules) >= 8


# ------------------------------------------------------------------------------------ (c) round trips
def _record(image_id: str, tp: list[int], **extra) -> dict:
    return {"id": image_id, "fp": "f00", "methods": {"A/B": {"tp": tp, "fp": [1, 0], "fn": [0, 2], "valid": 9,
                                                              "segments": 2}}, **extra}


def test_run_json_and_metrics_json_round_trip(tmp_path):
    identity = {"fingerprint": "abc", "settings": {"model": {"name": "m"}}, "data": {"num_ids": 3}, "outputs": {}}
    assert write_run_json(tmp_path, identity) == tmp_path / "run.json"
    records = [_record("b", [1, 2]), {"id": "c", "fp": "f00", "skipped": "OSError: broken"}, _record("a", [3, 0])]
    written = write_metrics(tmp_path, {"A/B": {"miou": 42.5, "images": 2}}, records, run={"dataset": "voc"})
    run = RunFolder(tmp_path)
    assert run.identity == identity
    assert run.settings == {"settings": {"model": {"name": "m"}}, "data": {"num_ids": 3}}
    assert run.metrics == written
    assert run.metrics["image_ids"] == ["a", "b"] and run.metrics["skipped"] == [["c", "OSError: broken"]]
    assert run.metrics["methods"]["A/B"]["miou"] == 42.5 and run.dataset == "voc"
    (tmp_path / "run.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(FolderError, match="run.json is unreadable"):
        RunFolder(tmp_path).identity  # noqa: B018
    assert isinstance(RunMismatchError("x"), RuntimeError)


def test_records_round_trip_over_rank_files(tmp_path):
    RunRecords(tmp_path).append([_record("a", [1, 0]), {"id": "b", "fp": "f00", "skipped": "too dark"}])
    RunRecords(tmp_path, layout.records_file(1)).append([_record("b", [0, 4])])  # another rank evaluated b
    RunRecords(tmp_path).append([_record("a", [5, 5])])  # a later line for a wins
    with open(tmp_path / layout.RECORDS_FILE, "a", encoding="utf-8") as fh:
        fh.write('{"id": "torn"')  # a kill mid-write
    run = RunFolder(tmp_path)
    assert sorted(p.name for p in layout.records_files(tmp_path)) == ["per_image.jsonl", "per_image.rank1.jsonl"]
    assert run.ids == ["a", "b"]
    assert run.records["a"]["methods"]["A/B"]["tp"] == [5, 5] and run.records["b"]["methods"]["A/B"]["tp"] == [0, 4]
    RunRecords(tmp_path)  # opening repairs the torn line
    assert (tmp_path / layout.RECORDS_FILE).read_bytes().endswith(b"\n")
    write_records(tmp_path / "merged", [_record("z", [7, 7])])
    assert RunFolder(tmp_path / "merged").all_records["z"]["methods"]["A/B"]["tp"] == [7, 7]
    assert RunFolder(tmp_path).result_files() == ["per_image.jsonl", "per_image.rank1.jsonl"]


def test_png_masks_round_trip(tmp_path):
    mask = np.arange(12, dtype=np.int64).reshape(3, 4) % 5
    big = (np.arange(12, dtype=np.int64).reshape(3, 4) * 40)  # ids above 255: a 16-bit PNG
    assert masks.write_png_mask(tmp_path, "A/B", "dir/img1", mask) == tmp_path / "masks" / "A_B" / "dir_img1.png"
    masks.write_png_mask(tmp_path, "A/B", "img2", big)
    write_metrics(tmp_path, {"A/B": {}}, [_record("dir/img1", [1, 0]), _record("img2", [0, 1])])
    RunRecords(tmp_path).append([_record("dir/img1", [1, 0]), _record("img2", [0, 1])])
    run = RunFolder.open(tmp_path)
    assert masks.saved_mask_format(tmp_path) == "png" and run.mask_format() == "PNG"
    np.testing.assert_array_equal(run.mask("A/B", "dir/img1"), mask)
    np.testing.assert_array_equal(run.mask("A/B", "img2"), big)
    assert run.mask("A/B", "absent") is None
    kind, source = masks.load_saved_masks(tmp_path, "A/B")
    np.testing.assert_array_equal(masks.read_saved_mask(kind, source, "img2"), big)


def test_coco_masks_round_trip_and_prune(tmp_path):
    from eval.folder.coco_results import mask_to_records

    one = np.array([[0, 0, 3], [3, 3, 3]])
    two = np.array([[7, 1, 1], [7, 7, 1]])
    masks.append_coco_part(tmp_path, "M", [{"image_id": "i1", "records": mask_to_records(one, "i1", {3: 2})}], rank=0)
    masks.append_coco_part(tmp_path, "M", [{"image_id": "i2", "records": mask_to_records(two, "i2")},
                                     {"image_id": "gone", "records": mask_to_records(two, "gone")}], rank=1)
    masks.append_coco_part(tmp_path, "M2", [{"image_id": "i1", "records": mask_to_records(two, "i1")}])  # not M's
    records = {"i1": _record("i1", [1, 0]), "i2": _record("i2", [0, 1])}
    rewritten = masks.prune_mask_parts(tmp_path, records)
    assert [p.name for p in rewritten] == ["M.rank1.coco.jsonl"]  # "gone" has no record: evaluated again
    assert masks.gather_coco_parts(tmp_path, "M", ["i1", "i2"]) == tmp_path / "masks" / "M.json"
    with pytest.raises(RuntimeError, match="no COCO masks of M for 1 evaluated image"):
        masks.gather_coco_parts(tmp_path, "M", ["i1", "gone"])  # pruned: it had no record
    assert masks.saved_mask_format(tmp_path) == "coco"
    write_metrics(tmp_path, {"M": {}}, list(records.values()))
    RunRecords(tmp_path).append(records.values())
    run = RunFolder.open(tmp_path)
    assert run.mask_format() == "COCO RLE"
    np.testing.assert_array_equal(run.mask("M", "i1"), one)
    np.testing.assert_array_equal(run.mask("M", "i2"), two)
    saved = json.loads((tmp_path / "masks" / "M.json").read_text(encoding="utf-8"))
    assert {(r["image_id"], r["segment_id"], r["category_id"]) for r in saved} == {
        ("i1", 0, None), ("i1", 3, 2), ("i2", 1, None), ("i2", 7, None)}


def test_compare_output_round_trip(tmp_path):
    run_dir = tmp_path / "run"
    compare = {"methods": {"A": {"acc": [50.0, 40.0, 60.0]}}, "confidence": 0.9}
    assert write_compare(run_dir / layout.COMPARE_DIR, compare) == run_dir / "compare" / "compare.json"
    found, data = read_compare(run_dir)
    assert found == run_dir / "compare" / "compare.json" and data == compare
    assert read_compare(tmp_path / "elsewhere") is None
    (run_dir / "compare" / "compare.json").write_text("[", encoding="utf-8")
    with pytest.raises(FolderError, match="not valid JSON"):
        read_compare(run_dir / "compare" / "compare.json")


def test_open_names_what_is_missing(tmp_path):
    with pytest.raises(FolderError, match="no such run folder"):
        RunFolder.open(tmp_path / "missing")
    with pytest.raises(FolderError, match="no metrics.json, so the run has not finished"):
        RunFolder.open(tmp_path)
    write_metrics(tmp_path, {"A/B": {}}, [{"id": "a", "fp": "f", "skipped": "x"}])
    with pytest.raises(FolderError, match="no per-image records"):
        RunFolder.open(tmp_path)


# ------------------------------------------------------------------------------------ (d) an older folder
def test_a_folder_written_before_the_owner_is_read():
    run = RunFolder.open(OLD_FOLDER / "run")
    assert run.ids == ["000000000139", "000000000724"]
    assert run.identity["fingerprint"] == "75d39c379c9a7878"
    assert run.settings["settings"]["dataset"]["name"] == "coco_stuff27"
    assert run.metrics["image_ids"] == run.ids and run.metrics["methods"]["DiffSeg"]["images"] == 2
    assert run.mask_format() == "PNG"
    for image_id in run.ids:
        assert run.mask("DiffSeg", image_id).shape == (128, 128)
        assert len(np.unique(run.mask("DiffSeg", image_id))) > 1  # several segments: the totals depend on them
    summed = np.sum([run.records[i]["methods"]["DiffSeg"]["tp"] for i in run.ids], axis=0)
    assert summed.tolist() == run.metrics["methods"]["DiffSeg"]["tp"]


def test_rescore_reads_a_folder_written_before_the_owner(tmp_path):
    from eval.rescore import rescore

    source, data = tmp_path / "run", tmp_path / "data"
    shutil.copytree(OLD_FOLDER / "run", source)
    shutil.copytree(OLD_FOLDER / "dataset", data)
    stored = json.loads((source / "metrics.json").read_text(encoding="utf-8"))["methods"]["DiffSeg"]
    result = rescore(source, "diffseg", tmp_path / "same", data_root=str(data), progress=False)
    assert [result["methods"]["DiffSeg"][k] for k in ("tp", "fp", "fn", "valid", "images")] == \
        [stored[k] for k in ("tp", "fp", "fn", "valid", "images")]
    assert result["provenance"]["rescored"]["source_fingerprint"] == "75d39c379c9a7878"
    # its twin: one saved mask made a single segment changes the re-scored totals
    from diffseg.masks import read_mask_png, write_mask_png

    png = source / "masks" / "DiffSeg" / "000000000139.png"
    write_mask_png(png, np.zeros_like(read_mask_png(png)))
    changed = rescore(source, "diffseg", tmp_path / "twin", data_root=str(data), progress=False)
    assert changed["methods"]["DiffSeg"]["tp"] != stored["tp"]
    assert changed["methods"]["DiffSeg"]["valid"] == stored["valid"]

"""The pinned downloads' checksums live in one data file, eval/data/pinned_files.json, read by eval.data.download.

tests/data/pinned_files_before.json is every record as the dataset modules declared it in code before the move
(dumped from their ``PINNED`` dicts): the table must give back each of them field by field.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path

import pytest

import eval.data.download as dl

BEFORE = json.loads((Path(__file__).parent / "data" / "pinned_files_before.json").read_text(encoding="utf-8"))
FIELDS = ("name", "url", "sha256", "sha1", "md5", "size", "source")


@pytest.fixture
def table(tmp_path, monkeypatch):
    """A writable copy of the table that download.py reads instead (its cache emptied before and after)."""
    copy = tmp_path / "pinned_files.json"
    copy.write_text(dl.PINNED_TABLE.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setattr(dl, "PINNED_TABLE", copy)
    dl._pinned_table.cache_clear()
    yield copy
    dl._pinned_table.cache_clear()


def _edit(path: Path, change) -> None:
    entries = json.loads(path.read_text(encoding="utf-8"))
    change(entries)
    path.write_text(json.dumps(entries), encoding="utf-8")


def test_every_pinned_record_is_the_one_the_code_held_before_the_move():
    assert len(BEFORE) == 10
    merged = dl.pinned_files()
    assert list(merged) == list(BEFORE)  # same keys, same order (dataset module by dataset module)
    for key, before in BEFORE.items():
        module = importlib.import_module(f"eval.data.{before['module']}")
        assert module.PINNED[key] is merged[key]
        assert dataclasses.asdict(merged[key]) == {field: before[field] for field in FIELDS}, key
    # a few values quoted from their sources, written out here
    assert merged["coco_val2017"].sha256 == "4f7e2ccb2866ec5041993c9cf2a952bbed69647b115d0f74da7ce8f4bef82f05"
    assert merged["coco_val2017"].size == 815585330
    assert importlib.import_module("eval.data.voc").PINNED["voc2012_trainval"].md5 == "6cd6e144f989b92b3379bac3b3de84fd"
    assert merged["voc2012_trainval"].size == 1999639040
    assert merged["ade20k_challenge"].digests == {"sha1": "219e1696abb36c8ba3a3afe7fb2f4b4606a897c7"}
    assert merged["cocostuff_stuffthingmaps"].digests == {} and merged["cocostuff_stuffthingmaps"].size is None


def test_each_dataset_module_gets_exactly_its_entries_of_the_table():
    owners = {before["module"] for before in BEFORE.values()}
    assert owners == {"ade20k", "cityscapes", "coco_object", "coco_stuff", "context", "voc"}
    for owner in owners:
        expected = [key for key, before in BEFORE.items() if before["module"] == owner]
        assert list(dl.pinned_files_of(owner)) == expected
        assert importlib.import_module(f"eval.data.{owner}").PINNED == dl.pinned_files_of(owner)
    assert set(dl.PINNED_FILES) == set(BEFORE)  # every entry of the table reaches the merged dict


def test_the_table_file_is_what_the_modules_read(table):
    """Twin: a digest changed in the file is the digest pinned_files_of gives."""
    assert dl.pinned_files_of("voc")["voc2012_trainval"].md5 == "6cd6e144f989b92b3379bac3b3de84fd"
    dl._pinned_table.cache_clear()
    _edit(table, lambda entries: entries["voc2012_trainval"].update(md5="0" * 32, size=7))
    changed = dl.pinned_files_of("voc")["voc2012_trainval"]
    assert (changed.md5, changed.size, changed.sha1) == ("0" * 32, 7, BEFORE["voc2012_trainval"]["sha1"])


@pytest.mark.parametrize(("change", "message"), [
    (lambda e: e["coco_val2017"].pop("sha256"), r"'coco_val2017': missing field\(s\) \['sha256'\]; each"),
    (lambda e: e["coco_val2017"].pop("module"), r"'coco_val2017': missing field\(s\) \['module'\]"),
    (lambda e: e["voc2012_trainval"].update(sha512="ab"), r"'voc2012_trainval': unknown field\(s\) \['sha512'\]; "),
    (lambda e: e["voc2012_trainval"].update(md5="6CD6E144F989B92B3379BAC3B3DE84FD"), r"'voc2012_trainval': md5 must"),
    (lambda e: e["voc2012_trainval"].update(sha1="abc"), r"'voc2012_trainval': sha1 must be null or 40"),
    (lambda e: e["coco_val2017"].update(size="815585330"), r"'coco_val2017': size must"),
    (lambda e: e["coco_val2017"].update(size=True), r"'coco_val2017': size must"),
    (lambda e: e["ade20k_challenge"].update(source=""), r"'ade20k_challenge': source must be a non-empty string"),
    (lambda e: e.update(ade20k_challenge=["a", "list"]), r"'ade20k_challenge' must be an object"),
])
def test_a_malformed_entry_is_refused_naming_its_key(table, change, message):
    _edit(table, change)
    with pytest.raises(ValueError, match=message):
        dl.pinned_files_of("voc")


def test_a_repeated_key_and_an_unknown_module_are_refused(table):
    text = table.read_text(encoding="utf-8")
    first = text.index('"voc2012_trainval"')
    table.write_text(text[:first] + text[first:].replace('"voc2012_trainval"', '"coco_val2017"', 1), encoding="utf-8")
    with pytest.raises(ValueError, match="'coco_val2017' appears twice"):
        dl.pinned_files_of("voc")
    table.write_text(text, encoding="utf-8")
    dl._pinned_table.cache_clear()
    with pytest.raises(ValueError, match=r"no entry of module 'vocc'; its modules are \['ade20k', "):
        dl.pinned_files_of("vocc")

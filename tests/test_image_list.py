"""Which image list a run rests on: the benchmark's own (``standard``) or another, named in the provenance."""

from __future__ import annotations

import pytest
from hydra_compose import run_config

from eval.data import coco_stuff
from eval.data.ade20k import Ade20k150
from eval.data.base import StandardList, ids_sha256
from eval.data.coco_stuff import CocoStuff27
from eval.data.synthetic import write_synthetic_coco_stuff
from eval.data.voc import Voc21
from eval.run import evaluate
from eval.run.provenance import build_provenance


def _ade_root(root, count):
    folder = root / "images" / "validation"
    folder.mkdir(parents=True)
    for i in range(1, count + 1):  # the dataset lists the image files; they are not read here
        (folder / f"ADE_val_{i:08d}.jpg").touch()
    return root


def test_ade20k_validation_images_are_the_standard_list_and_four_are_not(tmp_path):
    full = Ade20k150(_ade_root(tmp_path / "full", 2000)).image_list()
    assert full == {"standard": True, "name": "ADEChallengeData2016 validation", "count": 2000,
                    "sha256": ids_sha256(f"ADE_val_{i:08d}" for i in range(1, 2001))}
    assert Ade20k150(tmp_path / "full", limit=4).image_list()["standard"] is True  # a limit: partial, same list
    four = Ade20k150(_ade_root(tmp_path / "four", 4)).image_list()
    assert four["standard"] is False and four["count"] == 4
    assert four["name"] == f"the images under {tmp_path / 'four' / 'images' / 'validation'}"


def test_voc_list_is_standard_by_its_count_and_split(tmp_path):
    lists = tmp_path / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "val.txt").write_text("".join(f"2007_{i:06d}\n" for i in range(1449)))
    (lists / "train.txt").write_text("".join(f"2008_{i:06d}\n" for i in range(1449)))
    assert Voc21(tmp_path).image_list()["standard"] is True
    assert Voc21(tmp_path, split="train").image_list()["standard"] is False  # another split: another list
    (lists / "val.txt").write_text("2007_000033\n2007_000042\n")
    assert Voc21(tmp_path).image_list() == {"standard": False, "name": "val.txt", "count": 2,
                                            "sha256": ids_sha256(["2007_000042", "2007_000033"])}


def test_coco_curated_list_is_recognised_by_the_hash_of_its_ids(tmp_path, monkeypatch):
    ids = write_synthetic_coco_stuff(tmp_path, num_images=4, seed=1)
    listed = CocoStuff27(tmp_path).image_list()
    assert listed["standard"] is False and listed["count"] == 4 and listed["name"] == coco_stuff.DEFAULT_LIST_FILE
    assert listed["sha256"] == ids_sha256(reversed(ids))  # of the sorted ids: the order of the file does not count
    assert coco_stuff.STANDARD_LISTS["curated"].count == 2175
    monkeypatch.setitem(coco_stuff.STANDARD_LISTS, "curated", StandardList("the pinned list", 4, ids_sha256(ids)))
    assert CocoStuff27(tmp_path).image_list()["standard"] is True
    assert CocoStuff27(tmp_path).image_list()["name"] == "the pinned list"


def test_provenance_names_a_non_standard_list_and_not_the_standard_one():
    kwargs = dict(fingerprint="f", settings={}, data={"num_ids": 4}, random_weights=False, evaluated=4, skipped=0,
                  selected=4, protocol={})
    other = {"standard": False, "name": "x.txt", "count": 4, "sha256": "ab12cd34ef56" + "0" * 52}
    prov = build_provenance(**kwargs, image_list=other)
    assert prov["image_list"] == other and prov["notes"] == ["non-standard image list: 4 images, sha256 ab12cd34ef56"]
    standard = build_provenance(**kwargs, image_list={**other, "standard": True})
    assert standard["image_list"]["standard"] is True and standard["notes"] == []
    assert "image_list" not in build_provenance(**kwargs)


@pytest.fixture(scope="module")
def four_id_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco4")
    ids = write_synthetic_coco_stuff(root, num_images=4, seed=2)
    return ids, evaluate(run_config(root, tmp_path_factory.mktemp("out")))


def test_a_coco_root_listing_four_ids_is_a_complete_run_on_a_non_standard_list(four_id_run):
    ids, result = four_id_run
    prov = result["provenance"]
    assert prov["partial"] is False and prov["images"]["dataset"] == 4
    assert prov["image_list"] == {"standard": False, "name": coco_stuff.DEFAULT_LIST_FILE, "count": 4,
                                  "sha256": ids_sha256(ids)}
    assert f"non-standard image list: 4 images, sha256 {ids_sha256(ids)[:12]}" in prov["notes"]

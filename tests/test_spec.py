"""The typed run spec (:mod:`eval.spec`): built once from the composed config, frozen, the one validator.

* Only the spec builder (and at most two more modules) name Hydra's config objects, measured on the tree.
* A spec cannot be changed once built, and holds no Hydra config object anywhere (components never see one).
* A bad setting is named with its allowed range and value, every problem on one line.
* The fingerprint computed from the spec equals the one the config-based code gave (old folders resume).
* Each segmenter is built once per run (it was built twice: by the validator and by the runner).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch
from hydra_compose import compose_eval, run_config, synthetic_coco_stuff_root
from omegaconf import DictConfig, ListConfig

import diffseg
from eval.run import evaluate
from eval.run.identity import _fingerprint, result_settings
from eval.spec import RunSpec, SettingError, build_spec

REPO = Path(__file__).resolve().parents[1]
_NAMED = re.compile(r"DictConfig|OmegaConf")


def test_hydra_config_objects_are_named_in_at_most_three_modules():
    named = sorted(str(p.relative_to(REPO)) for folder in ("eval", "diffseg", "datasets")
                   for p in (REPO / folder).rglob("*.py") if _NAMED.search(p.read_text(encoding="utf-8")))
    assert "eval/spec/build.py" in named
    assert len(named) <= 3, named
    assert not [p for p in named if p.startswith("eval/run/")], named  # the runner and its parts read the spec


def _config_objects(value, path="spec", seen=None) -> list[str]:
    """Paths inside ``value`` (dataclasses, dicts, lists, a segmenter's attributes) holding a Hydra config object."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return []
    seen.add(id(value))
    if isinstance(value, (DictConfig, ListConfig)):
        return [path]
    if dataclasses.is_dataclass(value):
        items = [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]
    elif isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, (list, tuple)):
        items = list(enumerate(value))
    elif type(value).__module__.startswith("diffseg"):
        items = list(vars(value).items())
    else:
        return []
    return [hit for key, item in items for hit in _config_objects(item, f"{path}.{key}", seen)]


def test_the_spec_is_frozen_and_plain(tmp_path):
    spec = build_spec(compose_eval(["experiment=demo", f"paths.output_dir={tmp_path}"]))
    assert isinstance(spec, RunSpec)
    for target, name, value in ((spec, "run_name", "x"), (spec.options, "batch_size", 2),
                                (spec.model, "timestep", 1), (spec.methods[0], "segmenter", None)):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(target, name, value)
    assert isinstance(spec.methods, tuple)
    assert [m.name for m in spec.methods] == ["DiffSeg", "DiffSeg-fp32", "K-Means-C", "K-Means-S"]
    assert (spec.options.batch_size, spec.options.device, spec.options.save_masks) == (1, "cpu", "png")
    assert (spec.data.name, spec.model.name, spec.protocol.name) == ("coco_stuff27", "tiny-random", "diffseg")
    assert spec.options.output_dir == str(tmp_path)
    assert _config_objects(spec) == []


def test_bad_settings_are_named_with_their_range_on_one_line(tmp_path):
    cfg = compose_eval(["experiment=demo", f"paths.output_dir={tmp_path}", "batch_size=0", "dataset.limit=-3",
                        "model.timestep=1000", "cache.max_gb=-1", "methods.diffseg.segmenter.num_points=999"])
    with pytest.raises(SettingError) as info:
        build_spec(cfg)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("5 setting(s) outside the allowed range (nothing was written): ")
    for expected in ("batch_size: expected an integer >= 1, got 0",
                     "dataset.limit: expected an integer >= 0 or null, got -3",
                     "model.timestep: expected an integer in [0, 1000), got 1000",
                     "cache.max_gb: expected a positive number, got -1",
                     "methods.diffseg.segmenter.num_points: expected an integer in [2, 64]"):
        assert expected in message
    assert build_spec(compose_eval(["experiment=demo", f"paths.output_dir={tmp_path}"])).options.batch_size == 1


# Fingerprints of these configs as the config-based code (before eval.spec, commit 04bc1eb) computed them, on a
# fixed image universe: a change here means every existing run folder of them is refused on resume. The two
# Seg4Diff-protocol experiments moved with the redesign on purpose (their protocol node lost the geometry's
# ``_target_``, eval.metrics.protocols; cityscapes_seg4diff now runs dataset=cityscapes19): 04bc1eb gave
# demo_mmdit 0079fb4ca72d4965 and cityscapes_seg4diff f80b70e34d2f4a5c. Their folders re-score (eval.rescore)
# but do not resume.
_DATA = {"ids_sha256": "0" * 64, "num_ids": 8, "synthetic": True}
_OLD_FINGERPRINTS = {"demo": "e933c17cf9d0bb33", "coco_stuff27_diffcut": "7f798cfd23c3488d",
                     "demo_mmdit": "69aa5339e1c1499d", "cityscapes_seg4diff": "fad0cd4f859937d0"}


@pytest.mark.parametrize("experiment", sorted(_OLD_FINGERPRINTS))
def test_the_fingerprint_from_the_spec_equals_the_config_based_one(experiment):
    cfg = compose_eval([f"experiment={experiment}", "paths.output_dir=/tmp/x", "dataset.root=/data/x", "device=cpu"])
    settings = result_settings(build_spec(cfg), torch.device("cpu"))
    assert _fingerprint(settings, _DATA) == _OLD_FINGERPRINTS[experiment]
    other = result_settings(build_spec(compose_eval([f"experiment={experiment}", "paths.output_dir=/tmp/x",
                                                     "device=cpu", "aggregation=only_64"])), torch.device("cpu"))
    assert _fingerprint(other, _DATA) != _OLD_FINGERPRINTS[experiment]  # the twin: a result setting moves it


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return synthetic_coco_stuff_root(tmp_path_factory, num_images=2, seed=3)


def test_each_segmenter_is_built_once_per_run(root, tmp_path, monkeypatch):
    built = {"DiffSeg": 0, "KMeansSegmenter": 0}
    for cls in (diffseg.DiffSeg, diffseg.KMeansSegmenter):
        original = cls.__init__

        def counting(self, *args, _original=original, _name=cls.__name__, **kwargs):
            built[_name] += 1
            _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", counting)
    spec = build_spec(run_config(root, tmp_path / "run", "methods=diffseg_kmeans", "grid_images=0"))
    assert built == {"DiffSeg": 1, "KMeansSegmenter": 2}
    result = evaluate(spec)
    assert sorted(result["methods"]) == ["DiffSeg", "K-Means-C", "K-Means-S"]
    assert all(m["images"] == 2 for m in result["methods"].values())
    assert built == {"DiffSeg": 1, "KMeansSegmenter": 2}  # the run used the spec's segmenters

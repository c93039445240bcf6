"""The attention cache serves an input's own attention: keyed by content, checked on read."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
import torch
from hydra_compose import FAST_DIFFSEG, MULTI_SEGMENT, assert_multi_segment, compose_eval
from safetensors.torch import load_file

import diffseg
from eval.data.synthetic import write_synthetic_coco_stuff
from eval.run import evaluate, identity, passes
from eval.run.cache import AttentionCache, input_key, source_digest
from eval.run.identity import CodeVersionError, result_settings
from eval.run.passes import BackbonePasses
from eval.spec import build_spec

FAST = [*FAST_DIFFSEG, "dataset.limit=4"]


def run(root: Path, out: Path, *extra: str) -> dict:
    return evaluate(compose_eval([*FAST, f"dataset.root={root}", f"paths.output_dir={out}", *extra]))


def totals(result: dict) -> dict:
    return {name: (m["tp"], m["fp"], m["fn"], m["valid"], m["acc"], m["miou"]) for name, m in result["methods"].items()}


def maps(seed: int) -> dict[int, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {4: torch.rand(16, 16, generator=g), 2: torch.rand(4, 4, generator=g)}


@pytest.fixture
def fresh_memory():
    AttentionCache.clear_memory()
    yield
    AttentionCache.clear_memory()


def test_key_is_the_content_of_the_preprocessed_image():
    image = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    same = image.clone()
    other = image.clone()
    other[0, 0, 0] = torch.nextafter(other[0, 0, 0], torch.tensor(2.0))  # one float, one ulp
    assert input_key(image) == input_key(same)
    assert input_key(other) != input_key(image)
    assert input_key(image.reshape(3, 4, 16)) != input_key(image)  # shape is part of the key


@pytest.mark.parametrize("damage", ["truncate", "flip_a_map_byte", "empty"])
def test_a_damaged_disk_entry_is_never_used_and_is_overwritten(tmp_path, caplog, damage):
    cache = AttentionCache("disk", {"model": "x"}, directory=tmp_path)
    key = input_key(torch.zeros(3, 4, 4))
    cache.put(key, maps(1))
    path = cache.file(key)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(bytes(data[: len(data) - 100]))
    elif damage == "flip_a_map_byte":  # the file stays a valid safetensors file; only a float changes
        data[-3] ^= 0x10
        path.write_bytes(bytes(data))
    else:
        path.write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="eval.run.cache"):
        assert cache.get(key) is None
    assert str(path) in caplog.text and "recomputing and overwriting" in caplog.text
    assert (cache.hits, cache.misses, cache.rejected) == (0, 1, 1)
    cache.put(key, maps(1))  # what the runner does after a miss
    again = cache.get(key)
    assert again is not None and all(torch.equal(again[s], maps(1)[s]) for s in (4, 2))


def test_memory_entries_of_other_content_are_not_shared(fresh_memory):
    cache = AttentionCache("memory", {"model": "x"})
    a, b = input_key(torch.zeros(3, 4, 4)), input_key(torch.ones(3, 4, 4))
    cache.put(a, maps(1))
    assert cache.get(b) is None and torch.equal(cache.get(a)[4], maps(1)[4])


def test_two_roots_sharing_ids_through_one_disk_cache_give_the_uncached_numbers(tmp_path, fresh_memory):
    """Same ids, other pixels: the second root's run must not take the first root's attention."""
    root_a, root_b = tmp_path / "a", tmp_path / "b"
    ids_a = write_synthetic_coco_stuff(root_a, num_images=4, seed=21)
    ids_b = write_synthetic_coco_stuff(root_b, num_images=4, seed=22)
    assert ids_a == ids_b
    cache = [f"cache.dir={tmp_path / 'cache'}"]
    uncached_a = assert_multi_segment(run(root_a, tmp_path / "uncached_a"))
    from_b = run(root_b, tmp_path / "b_run", "cache=disk", *cache)
    assert from_b["cache"]["misses"] == 4
    assert totals(from_b) != totals(uncached_a)  # the two roots do give different numbers
    a = run(root_a, tmp_path / "a_run", "cache=disk", *cache)
    assert (a["cache"]["hits"], a["cache"]["misses"]) == (0, 4)  # nothing of root b's served
    assert totals(a) == totals(uncached_a)  # to the bit
    again = run(root_a, tmp_path / "a_again", "cache=disk", *cache)
    assert (again["cache"]["hits"], again["cache"]["misses"]) == (4, 0)
    assert totals(again) == totals(uncached_a)
    # The memory cache of one process: the same.
    run(root_b, tmp_path / "b_mem", "cache=memory")
    a_mem = run(root_a, tmp_path / "a_mem", "cache=memory")
    assert a_mem["cache"]["hits"] == 0 and totals(a_mem) == totals(uncached_a)


def test_a_truncated_entry_in_a_run_is_recomputed_with_the_same_numbers(tmp_path, caplog):
    root = tmp_path / "data"
    write_synthetic_coco_stuff(root, num_images=4, seed=23)
    cache = ["cache=disk", f"cache.dir={tmp_path / 'cache'}"]
    first = assert_multi_segment(run(root, tmp_path / "first", *cache))
    entries = sorted((tmp_path / "cache").rglob("*.safetensors"))
    assert len(entries) == 4
    victim = entries[0]
    victim.write_bytes(victim.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING, logger="eval.run.cache"):
        second = run(root, tmp_path / "second", *cache)
    assert str(victim) in caplog.text
    assert {k: second["cache"][k] for k in ("mode", "hits", "misses", "rejected", "evicted")} == {
        "mode": "disk", "hits": 3, "misses": 1, "rejected": 1, "evicted": 0}
    assert totals(second) == totals(first)
    assert len(victim.read_bytes()) > 1000  # overwritten with the recomputed maps
    third = run(root, tmp_path / "third", *cache)
    assert third["cache"]["hits"] == 4 and totals(third) == totals(first)


def test_random_maps_in_the_cache_change_the_totals(tmp_path):
    """Twin of the equality tests above: the totals see the maps served (valid checksums, other floats)."""
    root = tmp_path / "data"
    write_synthetic_coco_stuff(root, num_images=4, seed=23)
    cache = ["cache=disk", f"cache.dir={tmp_path / 'cache'}"]
    first = assert_multi_segment(run(root, tmp_path / "first", *cache))
    g = torch.Generator().manual_seed(0)
    entries = sorted((tmp_path / "cache").rglob("*.safetensors"))
    assert len(entries) == 4
    for path in entries:  # rows normalised like attention, checksums valid: only the content is wrong
        stored = {int(k): v for k, v in load_file(path).items()}
        fake = {s: torch.softmax(8 * torch.rand(m.shape, generator=g), dim=-1) for s, m in stored.items()}
        os.remove(path)
        cache_obj = AttentionCache("disk", {}, directory=tmp_path / "scratch")
        cache_obj.put("x", fake)
        shutil.move(cache_obj.file("x"), path)
    served = run(root, tmp_path / "served", *cache)
    assert (served["cache"]["hits"], served["cache"]["rejected"]) == (4, 0)
    assert totals(served) != totals(first)


def test_a_changed_library_source_misses(tmp_path, monkeypatch):
    """25.1: the key holds the source of the library computing the maps (here a copy of diffseg, edited)."""
    library = tmp_path / "diffseg"
    shutil.copytree(Path(diffseg.__file__).parent, library, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(passes, "library_digest", lambda: source_digest(library))
    root = tmp_path / "data"
    write_synthetic_coco_stuff(root, num_images=4, seed=23)
    cache = ["cache=disk", f"cache.dir={tmp_path / 'cache'}", "dataset.limit=2"]
    first = run(root, tmp_path / "first", *cache)
    assert first["cache"]["misses"] == 2
    assert run(root, tmp_path / "again", *cache)["cache"]["hits"] == 2
    backbone = library / "backbone.py"
    backbone.write_text(backbone.read_text().replace("latents = ", "latents = 1.5 * ", 1))
    edited = run(root, tmp_path / "edited", *cache)
    assert (edited["cache"]["hits"], edited["cache"]["misses"]) == (0, 2)
    assert len({p.parent for p in (tmp_path / "cache").rglob("*.safetensors")}) == 2  # two settings


def _base(overrides: tuple[str, ...]) -> list[str]:
    """FAST, without the tiny backbone's sharpening when another model is chosen."""
    other_model = any(o.startswith("model=") for o in overrides)
    return [o for o in FAST if not (other_model and o == MULTI_SEGMENT)]


def _prefix(*overrides: str, tmp_path: Path) -> str:
    cfg = compose_eval([*_base(overrides), "cache=disk", f"cache.dir={tmp_path}", *overrides])
    return BackbonePasses(build_spec(cfg), torch.device("cpu"), []).cache.prefix


def _fingerprint_settings(*overrides: str) -> dict:
    return result_settings(build_spec(compose_eval([*_base(overrides), *overrides])), torch.device("cpu"))


def test_library_versions_change_the_key_and_refuse_a_resume(tmp_path, monkeypatch):
    """25.1: a torch or diffusers upgrade misses the cache and is refused on resume like a code change."""
    import diffusers

    before = _prefix(tmp_path=tmp_path)
    root = tmp_path / "data"
    write_synthetic_coco_stuff(root, num_images=4, seed=23)
    run(root, tmp_path / "run", "dataset.limit=2")
    code_before = identity.code_version()["id"]
    assert f" torch-{torch.__version__} diffusers-{diffusers.__version__}" in code_before
    for module, name in ((torch, "torch"), (diffusers, "diffusers")):
        with monkeypatch.context() as patch:
            patch.setattr(module, "__version__", "99.0.0")
            assert _prefix(tmp_path=tmp_path) != before
            assert identity.code_version()["id"] != code_before and f"{name}-99.0.0" in identity.code_version()["id"]
            with pytest.raises(CodeVersionError, match=f"{name}-99.0.0"):
                run(root, tmp_path / "run")
            extended = run(root, tmp_path / f"run_{name}", "dataset.limit=2")  # a new folder is fine
            assert extended["code"]["libraries"][name] == "99.0.0"
    assert _prefix(tmp_path=tmp_path) == before


def test_head_chunk_is_in_the_cache_key_and_the_fingerprint(tmp_path):
    """25.1: the head chunking rounds the head sum (bitwise other maps), so it separates maps and folders."""
    keys = {_prefix(f"model.head_chunk={c}", tmp_path=tmp_path) for c in ("null", 1, 2)}
    assert len(keys) == 3
    settings = [_fingerprint_settings(f"model.head_chunk={c}") for c in ("null", 1, 2)]
    assert [s["model"]["head_chunk"] for s in settings] == [None, 1, 2]


def test_device_name_and_threads_are_in_the_key(tmp_path, monkeypatch):
    base = _prefix(tmp_path=tmp_path)
    monkeypatch.setattr(passes, "cpu_name", lambda: "another CPU")
    assert _prefix(tmp_path=tmp_path) != base
    monkeypatch.undo()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert _prefix(tmp_path=tmp_path) != base
    finally:
        torch.set_num_threads(threads)


SD = ["model=sd15", "model.size=128"]


def test_local_weights_are_keyed_by_their_content(tmp_path):
    """25.13c: a local weights file (or folder) replaced under the same path changes the key and the fingerprint."""
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"one")
    local = [*SD, f"model.name={weights}"]
    key, settings = _prefix(*local, tmp_path=tmp_path), _fingerprint_settings(*local)
    weights.write_bytes(b"two")
    os.utime(weights, ns=(1, 1))
    assert _prefix(*local, tmp_path=tmp_path) != key
    changed = _fingerprint_settings(*local)
    assert changed["weights"]["model_id"]["sha256"] != settings["weights"]["model_id"]["sha256"]
    folder = tmp_path / "sd"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"a")
    as_folder = [*SD, f"model.name={folder}"]
    key = _prefix(*as_folder, tmp_path=tmp_path)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"b")
    os.utime(folder / "unet" / "diffusion_pytorch_model.safetensors", ns=(2, 2))
    assert _prefix(*as_folder, tmp_path=tmp_path) != key


def test_a_hub_revision_is_keyed_by_the_commit_it_resolves_to(tmp_path, monkeypatch):
    """25.13c: ``revision: null`` follows the repo's main; the key names the commit the local cache holds."""
    import huggingface_hub.constants

    hub = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    repo = hub / "models--someone--sd"
    for commit in ("a" * 40, "b" * 40):
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "model_index.json").write_text("{}")
    (repo / "refs").mkdir()
    on_hub = [*SD, "model.name=someone/sd"]
    (repo / "refs" / "main").write_text("a" * 40)
    first = _prefix(*on_hub, tmp_path=tmp_path)
    (repo / "refs" / "main").write_text("b" * 40)  # main moved: other weights under the same name
    moved = _prefix(*on_hub, tmp_path=tmp_path)
    assert moved != first
    assert _prefix(*on_hub, f"model.backbone.revision={'a' * 40}", tmp_path=tmp_path) != moved
    cfg = compose_eval([*_base(on_hub), *on_hub, "cache=disk", f"cache.dir={tmp_path}"])
    source = BackbonePasses(build_spec(cfg), torch.device("cpu"), [])
    assert source.weights["model_id"] == {"revision": None, "commit": "b" * 40}
    assert not source.needs_backbone  # every map may come from the cache
    assert _fingerprint_settings(*on_hub, "model.backbone.revision=v2")["model"]["backbone"]["revision"] == "v2"
    (repo / "refs" / "main").unlink()  # not in the local cache: the weights are loaded first, then keyed
    assert BackbonePasses(build_spec(cfg), torch.device("cpu"), []).needs_backbone


def _entry(seed: int) -> dict[int, torch.Tensor]:
    return {8: torch.rand(64, 64, generator=torch.Generator().manual_seed(seed))}  # 16 KiB


def test_the_disk_cache_stays_under_max_gb_least_recently_used_out_first(tmp_path, caplog):
    """26.6: cache.max_gb bounds the disk cache; a hit counts as a use; the size is logged."""
    entry_bytes = 64 * 64 * 4
    budget_gb = 2.5 * entry_bytes / 2**30  # room for two entries
    with caplog.at_level(logging.INFO, logger="eval.run.cache"):
        cache = AttentionCache("disk", {"model": "x"}, max_gb=budget_gb, directory=tmp_path)
        assert "holds 0 entries" in caplog.text
        cache.put("a", _entry(1))
        cache.put("b", _entry(2))
        os.utime(cache.file("a"), ns=(10**9, 10**9))
        os.utime(cache.file("b"), ns=(2 * 10**9, 2 * 10**9))
        assert cache.get("a") is not None  # a is now the most recently used
        cache.put("c", _entry(3))
    assert [cache.file(k).exists() for k in "abc"] == [True, False, True]  # b, least recently used, went
    assert cache.evicted == 1 and cache.size_bytes <= cache.max_bytes
    assert "evicted 1 least recently used entries" in caplog.text and "now holds 2 entries" in caplog.text
    # Another setting in the same directory shares the budget; a new process sees what is there.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="eval.run.cache"):
        other = AttentionCache("disk", {"model": "y"}, max_gb=budget_gb, directory=tmp_path)
    assert "holds 2 entries" in caplog.text
    os.utime(cache.file("a"), ns=(10**9, 10**9))
    other.put("d", _entry(4))
    assert [cache.file("a").exists(), cache.file("c").exists(), other.file("d").exists()] == [False, True, True]
    assert len(list(tmp_path.rglob("*.safetensors"))) == 2


def test_a_tiny_max_gb_writes_nothing(tmp_path, caplog):
    """26.6: ``cache=disk cache.max_gb=0.000001`` wrote every entry; now none (one entry is larger)."""
    root = tmp_path / "data"
    write_synthetic_coco_stuff(root, num_images=4, seed=23)
    with caplog.at_level(logging.INFO, logger="eval.run.cache"):
        result = run(root, tmp_path / "out", "cache=disk", f"cache.dir={tmp_path / 'cache'}", "cache.max_gb=0.000001",
                     "dataset.limit=2")
    assert not list((tmp_path / "cache").rglob("*.safetensors"))
    assert result["cache"]["too_large"] == 2 and result["cache"]["size_gb"] == 0
    assert "more than max_gb=1e-06: nothing is written" in caplog.text

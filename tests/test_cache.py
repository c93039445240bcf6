"""The attention cache serves an input's own attention: keyed by content, checked on read."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from hydra_compose import compose_eval

from eval.data.synthetic import write_synthetic_coco_stuff
from eval.run import evaluate
from eval.run.cache import AttentionCache, input_key

FAST = ["experiment=coco_stuff27_diffseg", "model=tiny", "dataset.size=128", "batch_size=2", "num_workers=0",
        "progress=false", "device=cpu", "dataset.limit=4"]


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
    uncached_a = run(root_a, tmp_path / "uncached_a")
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
    first = run(root, tmp_path / "first", *cache)
    entries = sorted((tmp_path / "cache").rglob("*.safetensors"))
    assert len(entries) == 4
    victim = entries[0]
    victim.write_bytes(victim.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING, logger="eval.run.cache"):
        second = run(root, tmp_path / "second", *cache)
    assert str(victim) in caplog.text
    assert second["cache"] == {"mode": "disk", "hits": 3, "misses": 1, "rejected": 1}
    assert totals(second) == totals(first)
    assert len(victim.read_bytes()) > 1000  # overwritten with the recomputed maps
    third = run(root, tmp_path / "third", *cache)
    assert third["cache"]["hits"] == 4 and totals(third) == totals(first)

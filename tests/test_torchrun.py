"""``torchrun`` data-parallel runs (gloo on CPU) equal a single-process run, and resume with another N."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra_compose import MULTI_SEGMENT, assert_multi_segment, compose_eval, synthetic_coco_stuff_root

from eval.run import evaluate
from eval.run.records import load_run_records

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")
# batch_size=1: the CPU UNet's floats depend on how images are batched (~1e-6), so equal
# batch composition is what makes ranks and one process exactly comparable.
ARGS = ["experiment=coco_stuff27", "model=tiny", "dataset.size=128", "batch_size=1", "num_workers=0",
        "progress=false", "device=cpu", "save_masks=true", "methods.kmeans_c.segmenter.n_init=1",
        "methods.kmeans_s.segmenter.n_init=1", "methods.diffseg_fp32=null", MULTI_SEGMENT]

pytestmark = pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed beside this python")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return synthetic_coco_stuff_root(tmp_path_factory, num_images=7, seed=21)


@pytest.fixture(scope="module")
def single(root, tmp_path_factory) -> dict:
    """The one-process reference, on one torch thread like each rank (OMP_NUM_THREADS=1): exact
    totals are compared, so both sides run at the same thread count (and batch size)."""
    out = tmp_path_factory.mktemp("single")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return assert_multi_segment(evaluate(compose_eval([*ARGS, f"dataset.root={root}", f"paths.output_dir={out}"])))
    finally:
        torch.set_num_threads(threads)


def torchrun(root: Path, out: Path, nproc: int = 2, **popen) -> subprocess.Popen:
    cmd = [str(TORCHRUN), "--standalone", f"--nproc-per-node={nproc}", "-m", "eval.run", *ARGS,
           f"dataset.root={root}", f"hydra.run.dir={out}"]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, **popen)


def totals(result: dict) -> dict:
    return {name: {k: m[k] for k in ("tp", "fp", "fn", "valid", "images", "acc", "miou", "mean_segments")}
            for name, m in result["methods"].items()}


def test_two_ranks_equal_one_process_and_each_image_is_evaluated_once(root, single, tmp_path):
    proc = torchrun(root, tmp_path)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    result = json.loads((tmp_path / "metrics.json").read_text())
    for name, ours in totals(result).items():
        ref = totals(single)[name]
        assert ours["tp"] == ref["tp"] and ours["fp"] == ref["fp"] and ours["fn"] == ref["fn"], name
        assert ours["acc"] == pytest.approx(ref["acc"], abs=1e-9)
        assert ours["miou"] == pytest.approx(ref["miou"], abs=1e-9)
    per_rank = [[json.loads(line)["id"] for line in (tmp_path / f"per_image.rank{r}.jsonl").read_text().splitlines()]
                for r in range(2)]
    assert not set(per_rank[0]) & set(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == sorted(single["image_ids"])
    assert abs(len(per_rank[0]) - len(per_rank[1])) <= 1
    assert not (tmp_path / "per_image.jsonl").exists()
    assert result["image_ids"] == single["image_ids"]
    assert len(list((tmp_path / "masks" / "DiffSeg").glob("*.png"))) == 7
    log = (tmp_path / "run.log").read_text()
    assert "data-parallel: 2 ranks" in log and log.count("run folder:") == 1  # rank 0 alone logs
    assert result["provenance"]["threads"] == single["provenance"]["threads"] == {"1": 7}  # what makes them equal
    assert "terminate called" not in err  # each rank destroys its process group (no gloo thread outlives it)


def test_killed_two_rank_run_resumes_with_one_process_to_the_same_totals(root, single, tmp_path):
    proc = torchrun(root, tmp_path)
    deadline = time.time() + 300
    while time.time() < deadline and not any(p.stat().st_size for p in tmp_path.glob("per_image.rank*.jsonl")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)  # torchrun forwards it to both ranks
    proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert not (tmp_path / "metrics.json").exists()
    done = len([r for r in load_run_records(tmp_path).values() if "methods" in r])
    assert 1 <= done < 7
    twin = tmp_path.parent / f"{tmp_path.name}_twin"
    shutil.copytree(tmp_path, twin)
    rank_file = max((p for p in twin.glob("per_image.rank*.jsonl")), key=lambda p: p.stat().st_size)
    records = [json.loads(line) for line in rank_file.read_text().splitlines()]
    for record in records:  # one wrong record read: every method's first class counts change
        for stats in record.get("methods", {}).values():
            stats["tp"][0], stats["fn"][0] = stats["tp"][0] + 1000, stats["fn"][0] + 7
    rank_file.write_text("".join(json.dumps(r) + "\n" for r in records))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks and `single`: exact totals are compared
    try:
        resumed = evaluate(compose_eval([*ARGS, f"dataset.root={root}", f"paths.output_dir={tmp_path}"]))
        perturbed = evaluate(compose_eval([*ARGS, f"dataset.root={root}", f"paths.output_dir={twin}"]))
    finally:
        torch.set_num_threads(threads)
    assert resumed["timing"]["images_this_invocation"] == 7 - done
    assert totals(resumed) == totals(single)
    # Twin: the resume reads the ranks' records; wrong ones change the totals of every method.
    assert all(totals(perturbed)[name]["tp"] != totals(single)[name]["tp"] for name in totals(single))


def test_a_run_destroys_the_process_group_it_created(monkeypatch):
    """25.12: a gloo group left to the interpreter's exit can abort the rank (its threads outlive their owner)."""
    import torch.distributed as dist

    from eval.run import distributed

    def single_rank_group(device):
        if not dist.is_initialized():
            dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        return distributed.Dist()

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(distributed, "init_from_env", single_rank_group)
    assert not dist.is_initialized()
    with distributed.process_group(torch.device("cpu")) as ctx:
        assert dist.is_initialized() and ctx.rank == 0
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match="stop"), distributed.process_group(torch.device("cpu")):
        assert dist.is_initialized()
        raise RuntimeError("stop")
    assert not dist.is_initialized()
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:  # a group the caller made is the caller's
        with distributed.process_group(torch.device("cpu")):
            pass
        assert dist.is_initialized()
    finally:
        dist.destroy_process_group()


def test_slurm_tasks_become_torch_distributed_ranks(monkeypatch):
    from eval.run.distributed import export_slurm_env

    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE"):
        # setenv first: it records the current value (or its absence), so the variables
        # export_slurm_env writes are removed again afterwards; a delenv of an absent key records nothing.
        monkeypatch.setenv(key, "unset")
        monkeypatch.delenv(key)
    slurm = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "8", "SLURM_PROCID": "5",
             "SLURM_LOCALID": "1",
             "SLURM_NODEID": "1", "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": "gpu[07-08]",
             "SLURM_STEP_NODELIST": "gpu[07-08]"}
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    export_slurm_env()
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("5", "8", "1")
    assert os.environ["MASTER_ADDR"] == "gpu07" and os.environ["LOCAL_WORLD_SIZE"] == "4"
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun inside a SLURM job keeps its own values
    export_slurm_env()
    assert os.environ["RANK"] == "0"

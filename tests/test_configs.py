"""Every config composes, every buildable node instantiates, and experiments mean what they say."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate
from hydra_compose import EXPERIMENTS, compose_eval
from omegaconf import OmegaConf

from diffseg import DiffCut, DiffSeg, KMeansSegmenter
from eval.methods import build_methods


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_builds(experiment, tmp_path):
    cfg = compose_eval([f"experiment={experiment}", f"paths.output_dir={tmp_path}"])
    OmegaConf.resolve(cfg)
    methods = build_methods(cfg)
    assert methods and len({m.name for m in methods}) == len(methods)
    for m in methods:
        assert isinstance(m.segmenter, (DiffSeg, KMeansSegmenter, DiffCut))
    assert cfg.dataset.dataset._target_.startswith("eval.data.")
    assert cfg.model.backbone._target_.startswith("diffseg.")


def test_paper_tables_use_the_paper_settings(tmp_path):
    coco = compose_eval(["experiment=coco_stuff27", f"paths.output_dir={tmp_path}"])
    names = [m.name for m in build_methods(coco)]
    assert names == ["DiffSeg", "DiffSeg-fp32", "K-Means-C", "K-Means-S"]
    seg = {m.name: m for m in build_methods(coco)}
    assert seg["DiffSeg"].segmenter.thresholds == [1.1, 1.1, 1.1]
    assert seg["DiffSeg"].segmenter.kl_precision == "float16"
    assert seg["DiffSeg-fp32"].segmenter.kl_precision == "float32"
    assert seg["K-Means-C"].segmenter.num_clusters == 6 and not seg["K-Means-C"].clusters_from_labels
    assert seg["K-Means-S"].clusters_from_labels
    assert coco.model.name == "CompVis/stable-diffusion-v1-4" and coco.model.timestep == 300
    assert coco.model.noise is False
    city = compose_eval(["experiment=cityscapes", f"paths.output_dir={tmp_path}"])
    assert {m.name: m for m in build_methods(city)}["DiffSeg"].segmenter.thresholds == [0.9] * 3


def test_table_row_experiments_keep_one_method(tmp_path):
    cfg = compose_eval(["experiment=cityscapes_kmeans_s", f"paths.output_dir={tmp_path}"])
    assert [m.name for m in build_methods(cfg)] == ["K-Means-S"]


def test_ablations_tag_their_variants(tmp_path):
    cfg = compose_eval(["experiment=ablation_kl_threshold", f"paths.output_dir={tmp_path}"])
    methods = build_methods(cfg)
    assert cfg.run_name == "ablation_kl_threshold"
    assert [m.ablation["value"] for m in methods] == [0.5, 0.7, 0.9, 1.1, 1.3]
    assert [m.segmenter.thresholds[0] for m in methods] == [0.5, 0.7, 0.9, 1.1, 1.3]
    agg = build_methods(compose_eval(["experiment=ablation_aggregation", f"paths.output_dir={tmp_path}"]))
    assert [m.weights for m in agg] == [None, {64: 1.0}, {32: 1.0}, {16: 1.0}, {8: 1.0}]
    anchors = build_methods(compose_eval(["experiment=ablation_anchors", f"paths.output_dir={tmp_path}"]))
    assert [m.segmenter.num_points for m in anchors] == [4, 8, 16, 32]
    timestep = compose_eval(["experiment=ablation_timestep", f"paths.output_dir={tmp_path}"],
                            return_hydra_config=True)
    assert timestep.hydra.sweeper.params["model.timestep"] == "100,200,300,400,500"
    assert timestep.run_name == "ablation_timestep" and timestep.ablation.param == "timestep"
    demo = compose_eval(["experiment=demo", f"paths.output_dir={tmp_path}"])
    assert "demo" not in demo and demo.model.name == "tiny-random" and demo.device == "cpu"


def test_tiny_model_config_builds_offline(tmp_path):
    cfg = compose_eval(["model=tiny", f"paths.output_dir={tmp_path}"])
    backbone = instantiate(cfg.model.backbone)
    assert backbone.unet.config.sample_size == 64


def test_slurm_launcher_config_composes(tmp_path):
    cfg = compose_eval(["experiment=coco_stuff27", "hydra/launcher=slurm", f"paths.output_dir={tmp_path}"],
                       return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.gpus_per_node == 1


def test_paper_experiments_run_the_backbone_in_float32_with_tf32_off(tmp_path):
    import torch

    from diffseg.devices import resolve_dtype

    for experiment in ("coco_stuff27", "cityscapes"):
        cfg = compose_eval([f"experiment={experiment}", f"paths.output_dir={tmp_path}"])
        assert cfg.model.dtype == "float32"
    torch.backends.cuda.matmul.allow_tf32 = True
    assert resolve_dtype("float32") is torch.float32
    assert torch.backends.cuda.matmul.allow_tf32 is False and torch.backends.cudnn.allow_tf32 is False
    assert resolve_dtype("float16") is torch.float16
    with pytest.raises(ValueError, match="model.dtype"):
        resolve_dtype("auto")

"""Every config composes, every buildable node instantiates, and experiments mean what they say."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate
from hydra_compose import CONF_DIR, EXPERIMENTS, compose_eval
from omegaconf import OmegaConf

from diffseg import DiffCut, DiffSeg, KMeansSegmenter, Seg4Diff
from eval.run.methods import build_methods


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_builds(experiment, tmp_path):
    cfg = compose_eval([f"experiment={experiment}", f"paths.output_dir={tmp_path}"])
    OmegaConf.resolve(cfg)
    methods = build_methods(cfg)
    assert methods and len({m.name for m in methods}) == len(methods)
    for m in methods:
        assert isinstance(m.segmenter, (DiffSeg, KMeansSegmenter, DiffCut, Seg4Diff))
    assert cfg.dataset._target_.startswith("eval.data.")
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


GROUPS = ("dataset", "model", "method", "methods", "aggregation", "cache")
GROUP_OPTIONS = sorted((p.parent.name, p.stem) for group in GROUPS for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS)
def test_every_group_option_composes(group, option, tmp_path):
    override = f"+method@methods.extra={option}" if group == "method" else f"{group}={option}"
    cfg = compose_eval([override, f"paths.output_dir={tmp_path}"])
    OmegaConf.resolve(cfg)
    if (group, option) == ("methods", "none"):
        with pytest.raises(ValueError, match="no method configured"):  # experiments add their own to it
            build_methods(cfg)
    elif group == "methods":
        assert all(isinstance(m.segmenter, (DiffSeg, KMeansSegmenter, Seg4Diff)) for m in build_methods(cfg))
    elif group == "method":
        assert "extra" in [key for key, node in cfg.methods.items() if node is not None]
    elif group in ("dataset", "model"):
        assert cfg[group]._target_.startswith("eval.data.") if group == "dataset" else cfg.model.backbone._target_


def test_methods_group_picks_the_rows(tmp_path):
    def names(*overrides):
        return [m.name for m in build_methods(compose_eval([*overrides, f"paths.output_dir={tmp_path}"]))]

    assert names() == ["DiffSeg", "DiffSeg-fp32", "K-Means-C", "K-Means-S"]  # methods=paper, the default
    assert names("methods=diffseg_only") == ["DiffSeg"]
    assert names("methods=diffseg_kmeans") == ["DiffSeg", "K-Means-C", "K-Means-S"]
    assert names("methods=none", "+method@methods.mine=kmeans_c") == ["K-Means-C"]
    fp32 = build_methods(compose_eval(["experiment=ablation_kl_threshold_fp32", f"paths.output_dir={tmp_path}"]))
    assert [m.name for m in fp32][0] == "DiffSeg-fp32@kl=0.5"
    assert {m.segmenter.kl_precision for m in fp32} == {"float32"} and fp32[0].ablation["method"] == "DiffSeg-fp32"


def test_dataset_config_that_disagrees_with_its_class_is_refused(tmp_path):
    from eval.data.synthetic import write_synthetic_voc
    from eval.instantiate import build_dataset

    ids = write_synthetic_voc(tmp_path / "voc", num_images=2, seed=0, size_range=(32, 48))
    cfg = compose_eval(["dataset=voc21", f"dataset.root={tmp_path / 'voc'}", "dataset.size=16",
                        f"paths.output_dir={tmp_path}"])
    dataset = build_dataset(cfg.dataset)
    assert dataset.ids == ids and dataset.num_classes == 21 and dataset.image_size == 512
    with pytest.raises(ValueError, match="num_classes: 20"):
        build_dataset(compose_eval(["dataset=voc21", f"dataset.root={tmp_path / 'voc'}", "dataset.num_classes=20",
                                    f"paths.output_dir={tmp_path}"]).dataset)

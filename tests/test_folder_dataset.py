"""`dataset=folder`: a folder of one's own images and label PNGs, evaluated like a benchmark."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hydra_compose import compose_eval, interrupt_unet_pass
from PIL import Image

from diffseg.preprocess import LabelFormatError
from eval.data.folder import FolderDataset, UnpairedFilesError
from eval.data.loader import DatasetNotFoundError
from eval.data.synthetic import write_synthetic_folder
from eval.run import evaluate, run_cli
from eval.spec import SettingError

REPO = Path(__file__).resolve().parents[1]
SIDE = 128  # square images at the evaluation size: the labels are scored exactly as written
CLASSES = 4
FAST = ["dataset=folder", f"dataset.num_classes={CLASSES}", "model=tiny", f"dataset.size={SIDE}", "batch_size=2",
        "num_workers=0", "progress=false", "device=cpu"]
KMEANS = ("methods=kmeans_c_only", "methods.kmeans_c.segmenter.n_init=1")
EVERY_METHOD = ("methods.kmeans_c.segmenter.n_init=1", "methods.kmeans_s.segmenter.n_init=1")


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("own")
    write_synthetic_folder(root, num_images=3, seed=2, num_classes=CLASSES, shape=(SIDE, SIDE))
    return root


def config(root: Path, out: Path, *extra: str):
    return compose_eval([*FAST, f"dataset.root={root}", f"paths.output_dir={out}", *extra])


def label_histogram(root: Path) -> list[int]:
    """Pixels of each class over every label file, read straight from the PNGs (255 = ignored)."""
    counts = np.zeros(CLASSES, dtype=np.int64)
    for png in sorted((root / "labels").glob("*.png")):
        values = np.asarray(Image.open(png)).ravel()
        counts += np.bincount(values[values < CLASSES], minlength=CLASSES)
    return counts.tolist()


def record_sums(out: Path, method: str) -> tuple[list[int], list[int], list[int]]:
    """Per-class tp, fp, fn summed over the run's per-image records."""
    tp, fp, fn = np.zeros(CLASSES, int), np.zeros(CLASSES, int), np.zeros(CLASSES, int)
    for line in (out / "per_image.jsonl").read_text().splitlines():
        stats = json.loads(line)["methods"][method]
        tp, fp, fn = tp + stats["tp"], fp + stats["fp"], fn + stats["fn"]
    return tp.tolist(), fp.tolist(), fn.tolist()


@pytest.mark.parametrize("protocol", ["diffseg", "diffcut"])
def test_every_method_runs_on_a_folder_and_its_totals_are_the_labels(folder_root, tmp_path, protocol):
    result = evaluate(config(folder_root, tmp_path, f"protocol={protocol}", *EVERY_METHOD))
    assert list(result["methods"]) == ["DiffSeg", "DiffSeg-fp32", "K-Means-C", "K-Means-S"]
    assert result["run"]["dataset"] == "folder" and result["run"]["protocol"] == protocol
    hist = label_histogram(folder_root)
    assert min(hist) > 0 and sum(hist) < 3 * SIDE * SIDE  # every class present, and ignored pixels
    for name, m in result["methods"].items():
        assert m["images"] == 3 and len(m["iou"]) == CLASSES
        assert (m["tp"], m["fp"], m["fn"]) == record_sums(tmp_path, name)
        if protocol == "diffseg":  # every labelled pixel is matched or missed: tp + fn is the label histogram
            assert [t + f for t, f in zip(m["tp"], m["fn"], strict=True)] == hist
            assert m["valid"] == sum(hist)
    prov = result["provenance"]
    assert prov["images"] == {"evaluated": 3, "skipped": 0, "selected": 3, "dataset": 3} and not prov["partial"]
    assert prov["image_list"]["standard"] is False and prov["image_list"]["count"] == 3
    assert f"non-standard image list: 3 images, sha256 {prov['image_list']['sha256'][:12]}" in prov["notes"]
    assert result["config"]["dataset"]["num_classes"] == CLASSES


def test_interrupted_folder_run_resumes_to_the_same_totals(folder_root, tmp_path, monkeypatch):
    # K-Means-C: several segments per image (the tiny random backbone gives DiffSeg one)
    clean = evaluate(config(folder_root, tmp_path / "clean", *KMEANS))
    restore = interrupt_unet_pass(monkeypatch)  # the second batch is interrupted
    with pytest.raises(KeyboardInterrupt):
        evaluate(config(folder_root, tmp_path / "resumed", *KMEANS))
    restore()
    first = [json.loads(line) for line in (tmp_path / "resumed" / "per_image.jsonl").read_text().splitlines()]
    assert len(first) == 2  # the first batch
    resumed = evaluate(config(folder_root, tmp_path / "resumed", *KMEANS))
    assert resumed["timing"]["images_this_invocation"] == 1
    assert resumed["methods"]["K-Means-C"] == clean["methods"]["K-Means-C"]
    assert resumed["provenance"]["fingerprint"] == clean["provenance"]["fingerprint"]
    # the replayed records count: the first batch alone gives other totals, with several segments per image
    assert sum(sum(r["methods"]["K-Means-C"]["tp"]) for r in first) < sum(clean["methods"]["K-Means-C"]["tp"])
    assert clean["methods"]["K-Means-C"]["mean_segments"] > 1
    # another class count is another run: the folder refuses it
    with pytest.raises(Exception, match="num_classes"):
        evaluate(config(folder_root, tmp_path / "resumed", *KMEANS, "dataset.num_classes=5"))


def _refusal(capsys, cfg) -> str:
    assert run_cli(cfg) == 2
    err = capsys.readouterr().err.strip()
    return err


def test_refusals_are_one_line_naming_the_layout_files_and_values(tmp_path, capsys):
    missing = _refusal(capsys, config(tmp_path / "nowhere", tmp_path / "o1", "methods=diffseg_only"))
    assert len(missing.splitlines()) == 1 and str(tmp_path / "nowhere") in missing
    assert f"{tmp_path / 'nowhere' / 'images'}/<name>.jpg" in missing and "labels" in missing

    root = tmp_path / "own"
    write_synthetic_folder(root, num_images=3, seed=1, num_classes=CLASSES, shape=(SIDE, SIDE))
    (root / "labels" / "img_001.png").rename(root / "labels" / "stray.png")
    unpaired = _refusal(capsys, config(root, tmp_path / "o2", "methods=diffseg_only"))
    assert len(unpaired.splitlines()) == 1
    assert "1 image(s) without a label" in unpaired and "img_001.jpg" in unpaired
    assert "1 label(s) without an image" in unpaired and "stray.png" in unpaired

    (root / "labels" / "stray.png").rename(root / "labels" / "img_001.png")
    values = np.asarray(Image.open(root / "labels" / "img_002.png")).copy()
    values[5:7, 5:9] = 9  # 8 pixels of a value that is neither a class (0..3) nor the ignore index 255
    Image.fromarray(values, mode="L").save(root / "labels" / "img_002.png")
    bad = _refusal(capsys, config(root, tmp_path / "o3", "methods=diffseg_only"))
    assert len(bad.splitlines()) == 1
    assert f"{root / 'labels' / 'img_002.png'} holds value(s) 9 (8 pixels)" in bad and "classes 0..3" in bad

    with pytest.raises(SettingError, match=r"dataset.num_classes: the folder dataset needs"):
        evaluate(compose_eval([*FAST, "methods=diffseg_only", "dataset.num_classes=null", f"dataset.root={root}",
                               f"paths.output_dir={tmp_path / 'o4'}"]))
    with pytest.raises(SettingError, match=r"dataset.ignore_index: 2 is class 2"):
        evaluate(config(root, tmp_path / "o5", "methods=diffseg_only", "dataset.ignore_index=2"))
    assert not (tmp_path / "o4").exists() and not (tmp_path / "o5").exists()


def test_folder_settings_names_suffixes_and_ignore(tmp_path):
    root = tmp_path / "own"
    ids = write_synthetic_folder(root, num_images=2, seed=4, num_classes=3, ignore_index=None, shape=(40, 60),
                                 image_dir="rgb", label_dir="rgb", image_suffix=".png", label_suffix="_mask.png")
    assert ids == ["img_000", "img_001"]
    data = FolderDataset(root, size=32, num_classes=3, ignore_index=None, class_names=["sky", "road", "car"],
                         image_dir="rgb", label_dir="rgb", image_suffix=".png", label_suffix="_mask.png")
    assert data.ids == ids and data.classes == ("sky", "road", "car") and data.ignore_values == ()
    image, label, image_id = data[1]
    assert image.shape == (3, 32, 32) and image_id == "img_001" and set(label.unique().tolist()) <= {0, 1, 2}
    assert FolderDataset(root, num_classes=3, image_dir="rgb", label_dir="rgb", image_suffix=".png",
                         label_suffix="_mask.png").classes == ("class_0", "class_1", "class_2")
    with pytest.raises(LabelFormatError, match="holds value"):  # 255 with no ignore index: refused, not ignored
        shutil.copy(root / "rgb" / "img_000_mask.png", tmp_path / "keep.png")
        values = np.asarray(Image.open(tmp_path / "keep.png")).copy()
        values[0, 0] = 255
        Image.fromarray(values, mode="L").save(root / "rgb" / "img_000_mask.png")
        FolderDataset(root, num_classes=3, ignore_index=None, image_dir="rgb", label_dir="rgb",
                      image_suffix=".png", label_suffix="_mask.png").label("img_000")
    with pytest.raises(ValueError, match="class_names: expected a list of num_classes=3"):
        FolderDataset(root, num_classes=3, class_names=["a"])
    with pytest.raises(ValueError, match="labels and images must differ"):
        FolderDataset(root, num_classes=3, image_dir="x", label_dir="x", image_suffix=".png", label_suffix=".png")
    with pytest.raises(UnpairedFilesError):
        FolderDataset(root, num_classes=3, image_dir="rgb", label_dir="rgb", image_suffix=".png",
                      label_suffix="_other.png")
    with pytest.raises(DatasetNotFoundError, match="no \\*.jpg images"):
        FolderDataset(root, num_classes=3, image_dir="rgb", label_dir="rgb", label_suffix="_mask.png")


def test_prepare_folder_checks_a_root_and_refuses_a_missing_one(tmp_path, prepare, capsys):
    assert prepare.main(["folder", "--root", str(tmp_path / "nowhere"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "nothing to download" in err and f"{tmp_path / 'nowhere'}/images/<name>.jpg" in err
    root = tmp_path / "own"
    write_synthetic_folder(root, num_images=2, seed=1, num_classes=CLASSES, shape=(64, 64))
    assert prepare.main(["folder", "--root", str(root), "--num-classes", str(CLASSES), "--quiet"]) == 0
    assert f"ready: {root} (2 images paired with labels; labels within {CLASSES} classes)" in capsys.readouterr().out
    assert prepare.main(["folder", "--root", str(root), "--num-classes", "2", "--quiet"]) == 2
    assert "holds value(s)" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_data_folder_runs_the_check():
    out = subprocess.run(["make", "-n", "data-folder", "ROOT=/data/mine", "STAMP=", "PY=python"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert "python datasets/prepare.py folder --root /data/mine" in out

"""`python -m diffseg.segment` writes a mask and an overlay per image, reports bad files, turns photos
upright by their EXIF orientation and scales 16-bit images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

import diffseg.segment
import diffseg.testing.tiny
from diffseg.masks import read_mask_png
from diffseg.segment import main, output_names


def test_segment_cli_writes_masks_and_overlays(tmp_path, capsys):
    rng = np.random.default_rng(1)
    good = tmp_path / "street.png"
    Image.fromarray(rng.integers(0, 255, (256, 320, 3), dtype=np.uint8)).save(good)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    out = tmp_path / "out"
    assert main([str(good), str(bad), "--out", str(out), "--tiny", "--kl-precision", "float32"]) == 1  # one failed
    mask = read_mask_png(out / "street_mask.png")
    assert mask.shape == (512, 512) and mask.min() >= 0
    captured = capsys.readouterr()
    assert f"{len(np.unique(mask))} segments" in captured.out
    assert "RANDOM WEIGHTS" in captured.out
    assert "320 x 256 cut to its centre 256 x 256 (64 px of width dropped)" in captured.out
    assert "1 of 2 input(s) could not be read" in captured.err
    overlay = np.array(Image.open(out / "street_overlay.png"))
    assert overlay.shape == (512, 512, 3)
    assert "broken.jpg" in captured.err
    assert not (out / "broken_mask.png").exists()
    assert sorted(p.name for p in out.iterdir()) == ["street_mask.png", "street_overlay.png"]  # no temporaries


def test_segment_cli_rejects_bad_settings(tmp_path, capsys):
    assert main([str(tmp_path / "x.png"), "--out", str(tmp_path), "--tiny", "--kl-threshold", "0"]) == 2
    assert "kl_threshold" in capsys.readouterr().err


@pytest.mark.parametrize(("extra", "words"), [
    (["--device", "cuda"], ["--device cuda", "CUDA is not available"]),
    (["--num-points", "1000"], ["--num-points", "[2, 64]", "1000"]),
    (["--num-points", "1"], ["--num-points", ">= 2"]),
    (["--timestep", "5000"], ["--timestep", "[0, 1000)", "5000"]),
    (["--timestep", "-1"], ["--timestep", "[0, 1000)"]),
    (["--model", "CompVis/stable-diffusion-v1-4"], ["--model", "--tiny", "exclude each other"]),
])
def test_segment_cli_refuses_bad_settings_with_exit_2(tmp_path, capsys, extra, words):
    if extra[:2] == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.png")
    assert main([str(tmp_path / "x.png"), "--out", str(tmp_path / "out"), "--tiny", *extra]) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_segment_cli_refuses_an_out_that_is_a_file(tmp_path, capsys):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.png")
    (tmp_path / "taken").write_text("mine")
    assert main([str(tmp_path / "x.png"), "--out", str(tmp_path / "taken"), "--tiny"]) == 2
    assert "--out" in capsys.readouterr().err and (tmp_path / "taken").read_text() == "mine"


def test_inputs_sharing_a_stem_get_distinct_outputs(tmp_path, capsys, monkeypatch):
    small = diffseg.testing.tiny.tiny_backbone
    monkeypatch.setattr(diffseg.testing.tiny, "tiny_backbone", lambda **kw: small(**kw, input_size=128))  # fast: 128 px
    rng = np.random.default_rng(4)
    paths = [tmp_path / "a" / "photo.png", tmp_path / "b" / "photo.png", tmp_path / "a" / "photo.jpg",
             tmp_path / "a" / "other.png"]
    for path in paths:
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path)
    assert output_names(paths) == ["a__photo.png", "b__photo.png", "a__photo.jpg", "other"]
    with pytest.raises(ValueError, match="more than once"):
        output_names([paths[0], tmp_path / "b" / ".." / "a" / "photo.png"])
    out = tmp_path / "out"
    assert main([*map(str, paths[:3]), "--out", str(out), "--tiny", "--num-points", "4"]) == 0
    masks = sorted(p.name for p in out.glob("*_mask.png"))
    assert masks == ["a__photo.jpg_mask.png", "a__photo.png_mask.png", "b__photo.png_mask.png"]
    assert "a/photo.jpg -> a__photo.jpg_mask.png (inputs share the stem 'photo')" in capsys.readouterr().out


def test_help_says_exif_is_applied(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "EXIF orientation" in text and "--ignore-exif" in text and "16-bit" in text


class _Decoded(Exception):
    """Raised by the spy below once the CLI has decoded an image (the rest is tested above)."""


@pytest.fixture
def seen(monkeypatch):
    """The uint8 (3, H, W) images the CLI hands to the pre-processing, in order; the run stops there."""
    images: list[torch.Tensor] = []

    def spy(image, size=512):
        images.append(image.clone())
        raise _Decoded

    monkeypatch.setattr(diffseg.segment, "preprocess_image", spy)
    return images


def _orientation6_jpeg(path) -> np.ndarray:
    """A 32 x 48 JPEG tagged Orientation=6 (display = stored turned 90 degrees clockwise); its stored pixels."""
    yy, xx = np.mgrid[0:32, 0:48]
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.stack([xx * 5, yy * 7, 255 - xx * 5], axis=-1).astype(np.uint8)).save(path, exif=exif)
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def test_segment_cli_applies_exif_orientation(tmp_path, seen):
    stored = _orientation6_jpeg(tmp_path / "photo.jpg")
    args = [str(tmp_path / "photo.jpg"), "--tiny"]
    with pytest.raises(_Decoded):
        main([*args, "--out", str(tmp_path / "a")])
    with pytest.raises(_Decoded):
        main([*args, "--out", str(tmp_path / "b"), "--ignore-exif"])
    upright, raw = (img.permute(1, 2, 0).numpy() for img in seen)
    np.testing.assert_array_equal(upright, np.rot90(stored, k=-1))  # shape (48, 32, 3)
    np.testing.assert_array_equal(raw, stored)  # shape (32, 48, 3): the benchmark's pixel grid


def test_segment_cli_scales_16bit_images(tmp_path, seen):
    gray8 = np.random.default_rng(2).integers(0, 256, size=(24, 24), dtype=np.uint8)
    low = np.random.default_rng(3).integers(0, 256, size=gray8.shape).astype(np.uint16)
    Image.fromarray(gray8.astype(np.uint16) * 256 + low).save(tmp_path / "deep.png")
    with pytest.raises(_Decoded):
        main([str(tmp_path / "deep.png"), "--out", str(tmp_path / "o"), "--tiny"])
    np.testing.assert_array_equal(seen[0].numpy(), np.repeat(gray8[None], 3, axis=0))


def _no_model(**kwargs):
    raise AssertionError("the model was loaded")


def test_segment_cli_segments_the_images_of_a_folder(tmp_path, capsys, monkeypatch):
    small = diffseg.testing.tiny.tiny_backbone
    monkeypatch.setattr(diffseg.testing.tiny, "tiny_backbone", lambda **kw: small(**kw, input_size=128))  # fast: 128 px
    rng = np.random.default_rng(5)
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    for name in ("b.png", "a.JPG", "nested/c.png"):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert main([str(folder), "--out", str(out), "--tiny", "--num-points", "4"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_mask.png", "a_overlay.png", "b_mask.png", "b_overlay.png"]
    captured = capsys.readouterr()
    assert "not found" not in captured.err and "notes.txt" not in captured.out + captured.err


def test_segment_cli_refuses_a_folder_without_images_before_loading_the_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(diffseg.testing.tiny, "tiny_backbone", _no_model)
    monkeypatch.setattr(diffseg.segment.StableDiffusionBackbone, "from_pretrained", _no_model)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    for extra in (["--tiny"], []):
        assert main([str(tmp_path / "empty"), "--out", str(tmp_path / "out"), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(tmp_path / "empty") in err[0] and "no image files" in err[0]
    assert not (tmp_path / "out").exists()


def test_segment_cli_tiny_is_the_demos_sharpened_model_with_several_segments(tmp_path, capsys):
    demo = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "experiment" / "demo.yaml")
    assert diffseg.segment.TINY_ATTENTION_SCALE == demo.model.backbone.attention_scale > 1
    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    assert main([str(tmp_path / "x.png"), "--out", str(tmp_path / "out"), "--tiny"]) == 0
    segments = len(np.unique(read_mask_png(tmp_path / "out" / "x_mask.png")))
    assert segments > 1 and f"{segments} segments" in capsys.readouterr().out

"""`python -m diffseg.segment` writes a mask and an overlay per image, reports bad files, turns photos
upright by their EXIF orientation and scales 16-bit images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import diffseg.segment
from diffseg.masks import read_mask_png
from diffseg.segment import main


def test_segment_cli_writes_masks_and_overlays(tmp_path, capsys):
    rng = np.random.default_rng(1)
    good = tmp_path / "street.png"
    Image.fromarray(rng.integers(0, 255, (256, 320, 3), dtype=np.uint8)).save(good)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    out = tmp_path / "out"
    assert main([str(good), str(bad), "--out", str(out), "--tiny", "--kl-precision", "float32"]) == 0
    mask = read_mask_png(out / "street_mask.png")
    assert mask.shape == (512, 512) and mask.min() >= 0
    captured = capsys.readouterr()
    assert f"{len(np.unique(mask))} segments" in captured.out
    overlay = np.array(Image.open(out / "street_overlay.png"))
    assert overlay.shape == (512, 512, 3)
    assert "broken.jpg" in captured.err
    assert not (out / "broken_mask.png").exists()
    assert sorted(p.name for p in out.iterdir()) == ["street_mask.png", "street_overlay.png"]  # no temporaries


def test_segment_cli_rejects_bad_settings(tmp_path, capsys):
    assert main([str(tmp_path / "x.png"), "--out", str(tmp_path), "--tiny", "--kl-threshold", "0"]) == 2
    assert "kl_threshold" in capsys.readouterr().err


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

"""`python -m diffseg.segment` writes a mask and an overlay per image and reports bad files."""

from __future__ import annotations

import numpy as np
from PIL import Image

from diffseg.segment import main, overlay


def test_segment_cli_writes_masks_and_overlays(tmp_path, capsys):
    rng = np.random.default_rng(1)
    good = tmp_path / "street.png"
    Image.fromarray(rng.integers(0, 255, (256, 320, 3), dtype=np.uint8)).save(good)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    out = tmp_path / "out"
    assert main([str(good), str(bad), "--out", str(out), "--tiny", "--kl-precision", "float32"]) == 0
    mask = np.array(Image.open(out / "street_mask.png"))
    assert mask.shape == (512, 512)
    assert np.array(Image.open(out / "street_overlay.png")).shape == (512, 512, 3)
    assert "broken.jpg" in capsys.readouterr().err
    assert not (out / "broken_mask.png").exists()


def test_segment_cli_rejects_bad_settings(tmp_path, capsys):
    assert main([str(tmp_path / "x.png"), "--out", str(tmp_path), "--tiny", "--kl-threshold", "0"]) == 2
    assert "kl_threshold" in capsys.readouterr().err


def test_overlay_blends_colours():
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    mask = np.array([[0, 0, 1, 1]] * 4)
    out = overlay(image, mask, alpha=1.0)
    assert (out[:, :2] == out[0, 0]).all() and not (out[0, 0] == out[0, 3]).all()

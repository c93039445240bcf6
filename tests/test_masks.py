"""diffseg.masks: the one palette / colouriser / overlay and the mask PNG writer and reader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import diffseg.segment
import eval.report.figures
from diffseg.masks import (
    MaskFileError,
    colorize,
    default_palette,
    encode_mask_png,
    overlay,
    read_mask_png,
    write_mask_png,
)


def test_palette_is_fixed_distinct_and_never_black():
    palette = default_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    assert len({tuple(c) for c in palette}) == 256
    assert not (palette == 0).all(axis=1).any()
    np.testing.assert_array_equal(default_palette(10), palette[:10])
    assert palette[0].tolist() == [31, 119, 180]  # tab20's first (blue): the figures' colours are kept


def test_one_palette_and_overlay_everywhere():
    # figures and the segment CLI use this module's functions, not copies
    assert eval.report.figures.colorize is colorize and eval.report.figures.overlay is overlay
    assert eval.report.figures.default_palette is default_palette
    assert diffseg.segment.overlay is overlay and diffseg.segment.write_mask_png is write_mask_png
    assert not hasattr(diffseg.segment, "_palette")


def test_colorize_values():
    mask = np.array([[0, 1], [-1, 257]])
    rgb = colorize(mask)
    palette = default_palette()
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert rgb[0, 0].tolist() == palette[0].tolist() and rgb[0, 1].tolist() == palette[1].tolist()
    assert rgb[1, 0].tolist() == [0, 0, 0]
    assert rgb[1, 1].tolist() == palette[1].tolist()  # ids wrap around the palette
    np.testing.assert_array_equal(colorize(torch.from_numpy(mask)), rgb)
    custom = np.array([[10, 20, 30], [40, 50, 60]], dtype=np.uint8)
    assert colorize(np.array([[3]]), custom)[0, 0].tolist() == [40, 50, 60]


def test_overlay_blends_by_alpha():
    image = np.full((2, 3, 3), 100, dtype=np.uint8)
    mask = np.array([[0, 1, -1], [1, 0, -1]])
    palette = default_palette()
    out = overlay(image, mask, alpha=0.5)
    expected0 = np.rint(0.5 * 100 + 0.5 * palette[0].astype(np.float64)).astype(np.uint8)
    assert out[0, 0].tolist() == expected0.tolist() == out[1, 1].tolist()
    assert out[0, 2].tolist() == [100, 100, 100]  # ignore pixels keep the image
    np.testing.assert_array_equal(overlay(image, mask, alpha=1.0)[0, :2], palette[:2])
    with pytest.raises(ValueError, match="overlay"):
        overlay(image, mask[:, :2])


@pytest.mark.parametrize(("high", "mode", "dtype"), [(255, "L", np.uint8), (256, "I;16", np.uint16),
                                                     (65535, "I;16", np.uint16)])
def test_mask_png_round_trip(tmp_path, high, mode, dtype):
    rng = np.random.default_rng(high)
    mask = rng.integers(0, high + 1, size=(7, 9))
    mask[0, 0] = high
    path = write_mask_png(tmp_path / "deep" / "m.png", mask)
    assert path == tmp_path / "deep" / "m.png"
    with Image.open(path) as img:
        assert img.format == "PNG" and img.mode == mode
        assert np.asarray(img).dtype == dtype
    back = read_mask_png(path)
    assert back.dtype == np.int64
    np.testing.assert_array_equal(back, mask)
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.png"]  # no temporary left


def test_mask_png_accepts_tensors_and_bools(tmp_path):
    mask = torch.tensor([[0, 3], [2, 1]])
    np.testing.assert_array_equal(read_mask_png(write_mask_png(tmp_path / "t.png", mask)), mask.numpy())
    assert encode_mask_png(np.array([[True, False]]))[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("bad", [np.array([[-1, 0]]), np.array([[0, 65536]]), np.zeros((2, 2, 2), dtype=int),
                                 np.zeros((0, 3), dtype=int), np.array([[0.5, 1.0]])])
def test_mask_png_rejects_what_it_cannot_store(tmp_path, bad):
    with pytest.raises(ValueError, match="bad.png"):
        write_mask_png(tmp_path / "bad.png", bad)
    assert not (tmp_path / "bad.png").exists()


def test_read_mask_png_errors_name_the_file(tmp_path):
    Image.fromarray(np.zeros((2, 2, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(MaskFileError, match="rgb.png"):
        read_mask_png(tmp_path / "rgb.png")
    (tmp_path / "junk.png").write_bytes(b"junk")
    with pytest.raises(MaskFileError, match="junk.png"):
        read_mask_png(tmp_path / "junk.png")
    with pytest.raises(FileNotFoundError, match="none.png"):
        read_mask_png(tmp_path / "none.png")

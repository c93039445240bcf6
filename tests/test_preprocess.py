"""Pre-processing (DESIGN step 1) against independent float64 numpy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from diffseg.preprocess import (
    ImageDecodeError,
    center_crop_square,
    load_image,
    load_label,
    preprocess_image,
    preprocess_label,
)

# ----------------------------------------------------------------------------- references


def ref_crop(a: np.ndarray) -> np.ndarray:
    """Centre crop of the last two axes, written out with explicit offsets."""
    h, w = a.shape[-2:]
    s = min(h, w)
    top = (h - s) // 2
    left = (w - s) // 2
    return a[..., top : top + s, left : left + s]


def ref_bilinear(a: np.ndarray, out: int) -> np.ndarray:
    """Half-pixel-centre bilinear resize of a square (C, S, S) array, no antialiasing.

    src = (dst + 0.5) * S / out - 0.5, clamped at 0 below; neighbours clamped at S - 1.
    """
    c, s, s2 = a.shape
    assert s == s2
    scale = s / out
    res = np.zeros((c, out, out), dtype=np.float64)
    for i in range(out):
        y = max((i + 0.5) * scale - 0.5, 0.0)
        y0 = int(math.floor(y))
        y1 = min(y0 + 1, s - 1)
        ly = y - y0
        for j in range(out):
            x = max((j + 0.5) * scale - 0.5, 0.0)
            x0 = int(math.floor(x))
            x1 = min(x0 + 1, s - 1)
            lx = x - x0
            for ch in range(c):
                top = (1 - lx) * a[ch, y0, x0] + lx * a[ch, y0, x1]
                bottom = (1 - lx) * a[ch, y1, x0] + lx * a[ch, y1, x1]
                res[ch, i, j] = (1 - ly) * top + ly * bottom
    return res


def ref_nearest_exact(a: np.ndarray, out: int) -> np.ndarray:
    """Half-pixel nearest: src = floor((dst + 0.5) * S / out), clamped to S - 1."""
    s = a.shape[-1]
    idx = [min(int(math.floor((d + 0.5) * s / out)), s - 1) for d in range(out)]
    return a[np.ix_(idx, idx)]


# ----------------------------------------------------------------------------- crop


@pytest.mark.parametrize(
    ("h", "w", "top", "left", "side"),
    [(5, 8, 0, 1, 5), (9, 4, 2, 0, 4), (7, 7, 0, 0, 7), (6, 11, 0, 2, 6), (10, 3, 3, 0, 3)],
)
def test_center_crop_offsets(h, w, top, left, side):
    x = torch.arange(h * w).reshape(h, w)
    out = center_crop_square(x)
    assert out.shape == (side, side)
    assert torch.equal(out, x[top : top + side, left : left + side])
    batched = torch.arange(2 * 3 * h * w).reshape(2, 3, h, w)
    assert torch.equal(center_crop_square(batched), batched[..., top : top + side, left : left + side])


# ----------------------------------------------------------------------------- images


@pytest.mark.parametrize(("h", "w", "size"), [(7, 11, 5), (7, 11, 13), (12, 9, 4), (6, 6, 6), (10, 15, 16)])
def test_preprocess_image_matches_half_pixel_bilinear(h, w, size):
    rng = np.random.default_rng(h * 100 + w)
    arr = rng.integers(0, 256, size=(3, h, w), dtype=np.uint8)
    out = preprocess_image(torch.from_numpy(arr), size=size)
    assert out.shape == (3, size, size)
    assert out.dtype == torch.float32
    expected = ref_bilinear(ref_crop(arr.astype(np.float64)), size) / 127.5 - 1.0
    np.testing.assert_allclose(out.numpy(), expected, atol=2e-5, rtol=0)
    assert out.min() >= -1.0 and out.max() <= 1.0


def test_preprocess_image_is_not_antialiased_or_pil():
    # A 1-pixel checkerboard downsampled 8 -> 3: antialiasing would blur it towards
    # grey; half-pixel bilinear without antialias samples between two pixels.
    board = (np.indices((8, 8)).sum(0) % 2 * 255).astype(np.uint8)
    arr = np.stack([board] * 3)
    out = preprocess_image(torch.from_numpy(arr), size=3)
    expected = ref_bilinear(arr.astype(np.float64), 3) / 127.5 - 1.0
    np.testing.assert_allclose(out.numpy(), expected, atol=2e-5)
    aa = torch.nn.functional.interpolate(
        torch.from_numpy(arr)[None].float(), size=(3, 3), mode="bilinear", antialias=True
    )[0]
    assert not torch.allclose(out, aa / 127.5 - 1.0, atol=1e-3)


def test_preprocess_image_batched_and_range():
    arr = torch.randint(0, 256, (2, 3, 9, 14), dtype=torch.uint8)
    out = preprocess_image(arr, size=8)
    assert out.shape == (2, 3, 8, 8)
    for b in range(2):
        assert torch.allclose(out[b], preprocess_image(arr[b], size=8))
    extremes = torch.tensor([0, 255], dtype=torch.uint8).repeat(3, 2, 1)  # (3, 2, 2)
    scaled = preprocess_image(extremes, size=2)
    assert scaled.min().item() == -1.0 and scaled.max().item() == 1.0


def test_preprocess_image_rejects_bad_shapes():
    with pytest.raises(ValueError):
        preprocess_image(torch.zeros(4, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError):
        preprocess_image(torch.zeros(8, 8, dtype=torch.uint8))


# ----------------------------------------------------------------------------- labels


@pytest.mark.parametrize(("h", "w", "size"), [(3, 4, 5), (7, 10, 4), (9, 9, 20), (11, 6, 6), (13, 17, 7)])
def test_preprocess_label_matches_nearest_exact(h, w, size):
    rng = np.random.default_rng(h + 31 * w)
    lab = rng.integers(-1, 27, size=(h, w)).astype(np.int64)
    out = preprocess_label(torch.from_numpy(lab), size=size)
    assert out.shape == (size, size)
    assert out.dtype == torch.int64
    np.testing.assert_array_equal(out.numpy(), ref_nearest_exact(ref_crop(lab), size))


def test_preprocess_label_differs_from_plain_nearest():
    lab = torch.tensor([[0, 1, 2]] * 3)
    out = preprocess_label(lab, size=5)
    # nearest-exact picks floor((d + 0.5) * 3 / 5) = 0, 0, 1, 2, 2 (plain nearest: 0, 0, 1, 1, 2)
    assert out[0].tolist() == [0, 0, 1, 2, 2]


def test_preprocess_label_keeps_ignore_and_255():
    lab = torch.tensor([[255, -1], [7, 181]])
    out = preprocess_label(lab, size=4)
    assert set(out.unique().tolist()) == {255, -1, 7, 181}
    assert preprocess_label(lab[None].repeat(2, 1, 1), size=4).shape == (2, 4, 4)
    with pytest.raises(TypeError):
        preprocess_label(lab.float())


# ----------------------------------------------------------------------------- decoding


def test_load_image_rgb_and_grayscale(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert img.dtype == torch.uint8 and img.shape == (3, 5, 7)
    np.testing.assert_array_equal(img.permute(1, 2, 0).numpy(), rgb)

    gray = rgb[..., 0]
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    img = load_image(tmp_path / "g.png")
    assert img.shape == (3, 5, 7)
    for c in range(3):
        np.testing.assert_array_equal(img[c].numpy(), gray)


def test_load_label_values(tmp_path):
    lab = np.array([[0, 255, 181], [156, 7, 33]], dtype=np.uint8)
    Image.fromarray(lab, mode="L").save(tmp_path / "l.png")
    out = load_label(tmp_path / "l.png")
    assert out.dtype == torch.int64
    np.testing.assert_array_equal(out.numpy(), lab)
    # palette PNG: the indices are the labels, not the colours
    pal = Image.frombytes("P", (3, 2), lab.tobytes())
    pal.putpalette([(i * 7) % 256 for i in range(768)])
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(load_label(tmp_path / "p.png").numpy(), lab)


def test_load_image_errors_name_the_file(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "ok.jpg", quality=95)
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="truncated.jpg"):
        load_image(tmp_path / "truncated.jpg")
    (tmp_path / "garbage.png").write_bytes(b"not an image at all")
    with pytest.raises(OSError, match="garbage.png"):
        load_image(tmp_path / "garbage.png")
    with pytest.raises(ValueError, match="garbage.png"):  # also a ValueError
        load_label(tmp_path / "garbage.png")
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        load_image(tmp_path / "missing.jpg")

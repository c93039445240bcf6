"""Pre-processing (diffseg/REFERENCE.md section 1, step 1) against independent float64 numpy references;
decoding of deep (16-bit, float) images and EXIF orientation."""

from __future__ import annotations

import math
import struct
import zlib

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
    to_rgb8,
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


# ----------------------------------------------------------------------------- deep images


def write_png16(path, values: np.ndarray) -> None:
    """Write a 16-bit PNG by hand (PIL cannot write 16-bit colour): gray (H, W), gray+alpha
    (H, W, 2), RGB (H, W, 3) or RGBA (H, W, 4) uint16 values, big-endian samples, filter 0."""
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[1 if values.ndim == 2 else values.shape[2]]
    h, w = values.shape[:2]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    big = values.astype(">u2")
    raw = b"".join(b"\x00" + big[i].tobytes() for i in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def _gray_pair(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """An 8-bit gray image and a 16-bit version of it: 257 * v plus noise that rounds back to v."""
    rng = np.random.default_rng(seed)
    gray8 = rng.integers(0, 256, size=(12, 17), dtype=np.uint8)
    gray8[0, :3] = [0, 255, 128]
    noise = rng.integers(-128, 129, size=gray8.shape)
    gray16 = np.clip(gray8.astype(np.int64) * 257 + noise, 0, 65535).astype(np.uint16)
    assert (np.rint(gray16 / 257) == gray8).all()
    return gray8, gray16


def _assert_same_image(a: torch.Tensor, b: torch.Tensor, levels: int) -> None:
    """Equal decoded images within ``levels`` grey levels, and equal UNet inputs within as much."""
    assert a.shape == b.shape and a.dtype == b.dtype == torch.uint8
    assert (a.int() - b.int()).abs().max().item() <= levels
    diff = (preprocess_image(a, size=8) - preprocess_image(b, size=8)).abs().max().item()
    assert diff <= levels / 127.5 + 1e-6


@pytest.mark.parametrize("fmt", ["png", "tiff"])
def test_16bit_gray_equals_its_8bit_version(tmp_path, fmt):
    gray8, gray16 = _gray_pair()
    Image.fromarray(gray8, mode="L").save(tmp_path / "g8.png")
    Image.fromarray(gray16).save(tmp_path / f"g16.{fmt}")
    with Image.open(tmp_path / f"g16.{fmt}") as img:
        assert img.mode == "I;16"
    eight = load_image(tmp_path / "g8.png")
    sixteen = load_image(tmp_path / f"g16.{fmt}")
    _assert_same_image(sixteen, eight, levels=1)
    # the exact rule: the high byte (0 -> 0, 65535 -> 255, 257 * k -> k)
    np.testing.assert_array_equal(sixteen[0].numpy(), gray16 >> 8)
    assert (sixteen == sixteen[:1]).all()  # gray repeated over the 3 channels
    exact = gray8.astype(np.uint16) * 257
    Image.fromarray(exact).save(tmp_path / "exact.png")
    assert torch.equal(load_image(tmp_path / "exact.png"), eight)
    # what convert("RGB") did before: most pixels clipped to 255
    with Image.open(tmp_path / f"g16.{fmt}") as img:
        assert (np.asarray(img.convert("L")) == 255).mean() > 0.9


def test_16bit_big_endian_and_32bit_int(tmp_path):
    gray8, gray16 = _gray_pair(4)
    eight = torch.from_numpy(np.repeat(gray8[None], 3, axis=0))
    Image.fromarray(gray16.astype(">u2")).save(tmp_path / "b.tiff")
    with Image.open(tmp_path / "b.tiff") as img:
        assert img.mode == "I;16B"
    _assert_same_image(load_image(tmp_path / "b.tiff"), eight, levels=1)
    Image.fromarray(gray16.astype(np.int32)).save(tmp_path / "i.tiff")
    with Image.open(tmp_path / "i.tiff") as img:
        assert img.mode == "I"
    _assert_same_image(load_image(tmp_path / "i.tiff"), eight, levels=1)
    Image.fromarray(np.array([[-5, 70000]], dtype=np.int32)).save(tmp_path / "wide.tiff")
    with pytest.raises(ImageDecodeError, match=r"wide.tiff.*-5\.\.70000"):
        load_image(tmp_path / "wide.tiff")


def test_float_images_are_scaled_not_clipped(tmp_path):
    gray8, _ = _gray_pair(5)
    eight = torch.from_numpy(np.repeat(gray8[None], 3, axis=0))
    unit = gray8.astype(np.float32) / 255  # [0, 1] scale
    Image.fromarray(unit).save(tmp_path / "unit.tiff")
    with Image.open(tmp_path / "unit.tiff") as img:
        assert img.mode == "F"
    assert torch.equal(load_image(tmp_path / "unit.tiff"), eight)
    noisy = np.clip(unit + np.random.default_rng(0).uniform(-0.4, 0.4, unit.shape) / 255, 0, 1).astype(np.float32)
    Image.fromarray(noisy).save(tmp_path / "noisy.tiff")
    _assert_same_image(load_image(tmp_path / "noisy.tiff"), eight, levels=1)
    Image.fromarray(gray8.astype(np.float32)).save(tmp_path / "byte.tiff")  # [0, 255] scale
    assert torch.equal(load_image(tmp_path / "byte.tiff"), eight)
    # out-of-range values clip to the range chosen by the maximum; halves round up
    odd = Image.fromarray(np.array([[-0.2, 0.5, 1.0]], dtype=np.float32))
    assert to_rgb8(odd)[0, :, 0].tolist() == [0, 128, 255]
    odd = Image.fromarray(np.array([[-3.0, 2.5, 300.0]], dtype=np.float32))
    assert to_rgb8(odd)[0, :, 0].tolist() == [0, 3, 255]
    Image.fromarray(np.array([[0.0, np.nan]], dtype=np.float32)).save(tmp_path / "nan.tiff")
    with pytest.raises(ImageDecodeError, match="nan.tiff"):
        load_image(tmp_path / "nan.tiff")


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_16bit_colour_pngs(tmp_path, channels):
    # PIL decodes 16-bit RGB / RGBA / gray+alpha PNGs to 8-bit modes by the high byte,
    # the same rule as for 16-bit gray: check that this holds for the installed PIL.
    values = np.random.default_rng(channels).integers(0, 65536, size=(6, 5, channels)).astype(np.uint16)
    write_png16(tmp_path / "c.png", values)
    with Image.open(tmp_path / "c.png") as img:
        assert img.mode in ("RGB", "RGBA")
    out = load_image(tmp_path / "c.png").permute(1, 2, 0).numpy()
    colour = values[..., :1].repeat(3, axis=2) if channels == 2 else values[..., :3]
    np.testing.assert_array_equal(out, colour >> 8)
    assert np.abs(out.astype(int) - np.rint(colour / 257)).max() <= 1


# ----------------------------------------------------------------------------- EXIF orientation


def _jpeg_with_orientation(path, orientation: int) -> np.ndarray:
    """A smooth 32 x 48 JPEG carrying an EXIF Orientation tag; returns the stored (decoded) pixels."""
    yy, xx = np.mgrid[0:32, 0:48]
    rgb = np.stack([xx * 5, yy * 7, 255 - xx * 5], axis=-1).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb).save(path, quality=95, exif=exif)
    with Image.open(path) as img:
        assert img.getexif()[0x0112] == orientation
        stored = np.asarray(img.convert("RGB"))
    assert stored.shape == (32, 48, 3) and np.abs(stored.astype(int) - rgb).max() <= 8
    return stored


def test_benchmark_loader_ignores_exif_orientation(tmp_path):
    stored = _jpeg_with_orientation(tmp_path / "rot.jpg", 6)
    img = load_image(tmp_path / "rot.jpg")  # the benchmark path: the stored grid, as tf.io.decode_jpeg
    assert img.shape == (3, 32, 48)
    np.testing.assert_array_equal(img.permute(1, 2, 0).numpy(), stored)


def test_exif_transpose_turns_photos_upright(tmp_path):
    stored = _jpeg_with_orientation(tmp_path / "rot.jpg", 6)  # 6: rotate 90 degrees clockwise to display
    img = load_image(tmp_path / "rot.jpg", exif_transpose=True)
    assert img.shape == (3, 48, 32)
    np.testing.assert_array_equal(img.permute(1, 2, 0).numpy(), np.rot90(stored, k=-1))
    plain = _jpeg_with_orientation(tmp_path / "plain.jpg", 1)
    np.testing.assert_array_equal(load_image(tmp_path / "plain.jpg", exif_transpose=True).permute(1, 2, 0), plain)

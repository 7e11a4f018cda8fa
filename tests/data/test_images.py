"""The bad-input corpus for image decoding (generated here, never shipped)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from melanoma.data.images import ImageError, open_image, pixel_hash, resize_shorter


def _png_header_bomb(w: int, h: int) -> bytes:
    def chunk(t: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + t + data + struct.pack(">I", zlib.crc32(t + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (40, 60, 3), dtype=np.uint8)


def write(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("name,data,reason", [
    ("zero.jpg", b"", "empty"),
    ("text.jpg", b"this is not an image\n" * 10, "not-an-image"),
    ("truncated.jpg", _save(Image.fromarray(RGB), "JPEG")[:300], "truncated"),
    ("bomb.png", _png_header_bomb(30000, 30000), "too-large"),
    ("tiny.png", _save(Image.new("RGB", (1, 1)), "PNG"), "too-small"),
])
def test_bad_files_give_a_reason(tmp_path, name, data, reason):
    p = write(tmp_path, name, data)
    with pytest.raises(ImageError) as e:
        open_image(p)
    assert e.value.reason == reason
    assert name in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError) as e:
        open_image(tmp_path / "nope.jpg")
    assert e.value.reason == "missing"


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "CMYK", "L", "1", "I;16", "I", "F", "YCbCr"])
def test_every_mode_becomes_rgb_uint8(tmp_path, mode):
    base = Image.fromarray(RGB)
    if mode == "I;16":
        arr = (RNG.integers(0, 65535, (40, 60))).astype(np.uint16)
        im = Image.fromarray(arr)
        assert im.mode.startswith("I;16")
        fmt = "PNG"
    elif mode in ("I", "F"):
        im = base.convert("L").convert(mode)
        fmt = "TIFF"
    elif mode == "CMYK":
        im, fmt = base.convert("CMYK"), "JPEG"
    elif mode == "YCbCr":
        im, fmt = base.convert("YCbCr"), "JPEG"
    else:
        im, fmt = base.convert(mode), "PNG"
    p = write(tmp_path, f"img.{fmt.lower()}", _save(im, fmt))
    out = open_image(p)
    assert out.dtype == np.uint8 and out.shape == (40, 60, 3)
    if mode == "I;16":  # 16-bit range is rescaled, not clipped
        assert out.max() > 200 and out.min() < 50


def test_grayscale_replicated():
    im = Image.fromarray(RGB).convert("L")
    out = open_image("x.png", data=_save(im, "PNG"))
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_exif_orientation_applied(tmp_path):
    im = Image.fromarray(RGB)  # 60 wide, 40 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    p = write(tmp_path, "rot.jpg", _save(im, "JPEG", exif=exif.tobytes()))
    out = open_image(p)
    assert out.shape[:2] == (60, 40)


def test_rgba_alpha_dropped_not_composited():
    a = np.dstack([RGB, np.full((40, 60), 10, np.uint8)])
    out = open_image("x.png", data=_save(Image.fromarray(a, "RGBA"), "PNG"))
    np.testing.assert_array_equal(out, RGB)


def test_pixel_hash_ignores_container_but_not_pixels():
    png = open_image("a.png", data=_save(Image.fromarray(RGB), "PNG"))
    bmp = open_image("a.bmp", data=_save(Image.fromarray(RGB), "BMP"))
    assert pixel_hash(png) == pixel_hash(bmp)
    other = RGB.copy()
    other[0, 0, 0] ^= 1
    assert pixel_hash(other) != pixel_hash(png)


def test_resize_shorter():
    out = resize_shorter(RGB, 20)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8

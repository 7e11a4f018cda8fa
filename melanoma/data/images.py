"""Safe image decoding: any real-world file in, an RGB ``uint8`` array out, or a clear error.

What this guards against (each case is covered by ``tests/data/test_images.py``):

* zero-byte, truncated, corrupt and non-image files (a text file named ``.jpg``);
* decompression bombs: the pixel count is read from the header *before* decoding and refused
  above ``max_pixels`` (default 100 MP; PH2's largest is 0.5 MP, ISIC's about 30 MP);
* tiny images (a side below ``min_side``), which carry no lesion;
* EXIF orientation (phone photos in PAD-UFES-20): applied, so pixels are upright;
* every PIL mode: ``RGBA``/``LA``/``PA`` lose their alpha (composited on black is *not* done;
  the colour channels are kept as they are), ``P`` (palette) is expanded, ``CMYK`` and ``YCbCr``
  are converted, ``L``/``1`` grey is replicated to three channels, 16/32-bit integer and float
  modes (``I;16``, ``I``, ``F``) are rescaled to 8 bits from their full range.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 100_000_000
DEFAULT_MIN_SIDE = 16

# We enforce our own limit from the header; PIL's own bomb check would only warn below 2x.
Image.MAX_IMAGE_PIXELS = None


class ImageError(ValueError):
    """A file that cannot be used as an image; ``reason`` is a short machine-readable tag."""

    def __init__(self, path: str | os.PathLike, reason: str, detail: str = ""):
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.path}: {reason}" + (f" ({detail})" if detail else ""))


def _to_rgb(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        a = np.zeros_like(a) if hi <= lo else (a - lo) / (hi - lo) * 255.0
        g = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA").convert("RGB")
    elif im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.uint8).copy()


def open_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS,
               min_side: int = DEFAULT_MIN_SIDE, data: bytes | None = None) -> np.ndarray:
    """Decode ``path`` (or ``data``, its bytes) to an upright RGB ``uint8`` array of shape (H, W, 3).

    Raises
    ------
    ImageError
        With ``reason`` one of ``missing``, ``empty``, ``not-an-image``, ``too-large``,
        ``too-small``, ``truncated``, ``corrupt``.
    """
    path = Path(path)
    if data is None:
        if not path.is_file():
            raise ImageError(path, "missing", "no such file")
        data = path.read_bytes()
    if len(data) == 0:
        raise ImageError(path, "empty", "zero bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if w * h > max_pixels:
                raise ImageError(path, "too-large",
                                 f"{w}x{h} = {w * h:,} pixels > limit {max_pixels:,}")
            im.load()
    except ImageError:
        raise
    except UnidentifiedImageError as e:
        raise ImageError(path, "not-an-image", "PIL cannot identify the format") from e
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as e:
        msg = str(e)
        reason = "truncated" if "truncated" in msg.lower() or "premature" in msg.lower() else "corrupt"
        raise ImageError(path, reason, msg) from e
    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # a broken EXIF block must not lose an otherwise good image
        pass
    if min(im.size) < min_side:
        raise ImageError(path, "too-small", f"{im.size[0]}x{im.size[1]}, minimum side {min_side}")
    return _to_rgb(im)


def resize_shorter(rgb: np.ndarray, shorter: int) -> np.ndarray:
    """Resize so the shorter side equals ``shorter`` (antialiased; never upsamples by more than needed)."""
    h, w = rgb.shape[:2]
    if min(h, w) == shorter:
        return rgb
    s = shorter / min(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.BICUBIC, reducing_gap=3.0))


def file_hash(data: bytes) -> str:
    """Content hash of the file's bytes (sha256, 32 hex characters)."""
    return hashlib.sha256(data).hexdigest()[:32]


def pixel_hash(rgb: np.ndarray) -> str:
    """Hash of decoded pixels and shape: equal for the same image re-saved losslessly or renamed."""
    h = hashlib.sha256(f"{rgb.shape}".encode())
    h.update(np.ascontiguousarray(rgb).tobytes())
    return h.hexdigest()[:32]


def perceptual_hash(rgb: np.ndarray) -> str:
    """64-bit DCT perceptual hash (``imagehash.phash``) as 16 hex characters."""
    import imagehash

    return str(imagehash.phash(Image.fromarray(rgb), hash_size=8))


def difference_hash(rgb: np.ndarray) -> str:
    """64-bit gradient hash (``imagehash.dhash``): a second, independent near-duplicate test."""
    import imagehash

    return str(imagehash.dhash(Image.fromarray(rgb), hash_size=8))

"""SYNTHETIC miniature replicas of the eleven skin-lesion dataset releases.

**Everything written by this module is SYNTHETIC data.** The images are procedurally drawn
lesions, the ids, patients and clinical metadata are invented. The replicas exist so that the
whole pipeline (ingest, dedup, splits, training, calibration, rejection, reports) can run and be
tested end to end without the real data, which a user must download by hand.

What *is* faithful is the **layout** of every release (see ``shared/spec/datasets.md``): folder
names, file names and extensions, CSV/XLSX columns, header quirks and label encodings, so that
the same parsers read a replica and a real download. For example::

    out/isic2016/ISBI2016_ISIC_Part3_Training_Data/ISIC_0000000.jpg
    out/isic2016/ISBI2016_ISIC_Part3_Training_GroundTruth.csv     (no header; benign/malignant)
    out/mednode/complete_mednode_dataset/melanoma/1076054.jpg
    out/ph2/PH2 Dataset images/IMD003/IMD003_Dermoscopic_Image/IMD003.bmp
    out/ph2/PH2_dataset.xlsx                                       (12 legend rows, header row 12)

Cross-dataset duplicates are planted as in reality (ISIC 2016 test inside ISIC 2017 training,
ISIC 2018 training inside ISIC 2019 and identical to HAM10000, ISIC images resized and renamed in
the Kaggle set, a MED-NODE image inside PAD-UFES-20, ISIC 2020's own duplicate pairs).

Next to each replica, and never read by a parser, the generator writes the ground truth:

* ``out/<short>/SYNTHETIC.json``: generator, seed, scale and counts per split;
* ``out/<short>/SYNTHETIC_truth.csv``: ``image_id,label,split,path`` for every image;
* ``out/PLANTED_DUPLICATES.csv``: ``kind,dataset_a,image_id_a,dataset_b,image_id_b`` for every
  pair of files (in different places) that show the same picture (closure over the planted
  copies); ``kind`` is ``id`` (same ISIC id, identical pixels), ``pixels`` (another name,
  identical pixels) or ``resized`` (resized and re-encoded: only a perceptual hash finds it);
* ``out/isic2020/ISIC_2020_Test_GroundTruth_SYNTHETIC.csv``: the held-out labels of the ISIC 2020
  test images (not part of the real release), for scoring a SIIM-ISIC style submission.

Images separate the classes imperfectly: melanomas are larger, more asymmetric, with irregular
borders and several colours (dark brown, black, blue-grey, red, white); benign lesions are
rounder, smaller and uniformly brown; ~15 % of the lesions look ambiguous and ~5 % carry the
other class's look (label noise). Each release has its own look (skin tone, colour cast,
illumination, vignetting and black dermoscope corners, hair, size, JPEG quality); clinical sets
(MED-NODE, PAD-UFES-20, the derm7pt ``clinic`` images) show a small lesion on wider skin.

Output is deterministic: one seed gives identical bytes on every run (every random draw comes
from a :class:`numpy.random.Generator` keyed by seed, dataset and item; XLSX zip timestamps are
pinned).

>>> summary = write_replicas("work/synthetic", scale=0.3, seed=0)   # doctest: +SKIP
>>> summary["counts"]["isic2016"]["test"]                           # doctest: +SKIP
{'n': 12, 'melanoma': 3}
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import time
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from PIL import Image, ImageDraw

try:  # the matrix products here are tiny: BLAS threads only add overhead (and spin)
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
    threadpool_limits = None

from melanoma.data.synthetic.plan import (BASE_COUNTS, DATASETS, GENERATOR, MIN_PER_CLASS, lesion_groups,
                                          n_dups, pick_records, planted_pairs, requested_counts,
                                          round_half_up, shuffled_labels, stream)

__all__ = [
    "BASE_COUNTS",
    "DATASETS",
    "GENERATOR",
    "MIN_PER_CLASS",
    "STYLES",
    "draw_lesion",
    "requested_counts",
    "render_lesion_image",
    "write_replicas",
]

AMBIGUOUS_FRACTION = 0.15
LABEL_NOISE = 0.05


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

#: Lesion colours (RGB in 0..1).
PALETTE: dict[str, tuple[float, float, float]] = {
    "light_brown": (0.68, 0.47, 0.33),
    "brown": (0.50, 0.32, 0.20),
    "dark_brown": (0.30, 0.18, 0.11),
    "black": (0.10, 0.07, 0.07),
    "blue_grey": (0.42, 0.47, 0.58),
    "red": (0.70, 0.30, 0.28),
    "white": (0.88, 0.84, 0.82),
}
_PALETTE_NAMES = tuple(PALETTE)
_EXTRA_COLOURS = ("dark_brown", "black", "blue_grey", "red", "white")
_EXTRA_P = np.array([0.30, 0.24, 0.22, 0.16, 0.08])

_TEX = 128          # side of a lesion texture (pixels)
_R0 = 0.5           # nominal lesion radius in texture units (texture spans -1..1)
_DIHEDRAL = (None, Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM,
             Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270,
             Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE)


@dataclass(frozen=True)
class Style:
    """The look of one release.

    Attributes
    ----------
    kind : str
        ``"dermoscopic"`` or ``"clinical"`` (clinical: small lesion on wide skin, no vignette).
    skin : tuple of float
        Mean skin colour (RGB, 0..1).
    skin_sd : float
        Relative per-image jitter of the skin brightness.
    cast : tuple of float
        Colour gains applied to the whole image.
    long_side : tuple of int
        Range of the longer image side (pixels).
    aspects : tuple of float
        Height/width ratios to choose from (``<= 1``).
    lesion : tuple of float
        Range of a factor on the lesion radius.
    vignette : float
        Strength of radial darkening.
    corners : float
        Probability of a black circular dermoscope aperture.
    hair : float
        Probability of hair strands.
    quality : tuple of int
        JPEG quality range.
    portrait : float
        Probability of a portrait (rotated) frame when ``aspects`` are not square.
    """

    kind: str
    skin: tuple[float, float, float]
    skin_sd: float
    cast: tuple[float, float, float]
    long_side: tuple[int, int]
    aspects: tuple[float, ...]
    lesion: tuple[float, float]
    vignette: float
    corners: float
    hair: float
    quality: tuple[int, int] = (90, 95)
    portrait: float = 0.15


STYLES: dict[str, Style] = {
    "isic2016": Style("dermoscopic", (0.86, 0.66, 0.58), 0.06, (1.02, 1.00, 0.95), (200, 320),
                      (0.67, 0.75), (0.9, 1.15), 0.25, 0.35, 0.45, (90, 95)),
    "isic2017": Style("dermoscopic", (0.85, 0.65, 0.59), 0.07, (1.00, 0.99, 0.97), (200, 320),
                      (0.67, 0.75), (0.9, 1.15), 0.25, 0.30, 0.40, (90, 95)),
    "isic2018": Style("dermoscopic", (0.88, 0.62, 0.63), 0.06, (1.03, 0.97, 1.00), (300, 300),
                      (0.75,), (0.85, 1.1), 0.15, 0.12, 0.30, (90, 94), portrait=0.0),
    "isic2019": Style("dermoscopic", (0.80, 0.60, 0.56), 0.08, (0.98, 1.00, 1.02), (240, 280),
                      (1.0, 0.75), (0.85, 1.1), 0.30, 0.55, 0.35, (86, 92)),
    "isic2020": Style("dermoscopic", (0.78, 0.58, 0.50), 0.12, (1.00, 0.98, 0.96), (220, 320),
                      (0.67, 0.75), (0.6, 0.95), 0.10, 0.08, 0.25, (84, 90)),
    "derm7pt": Style("dermoscopic", (0.82, 0.66, 0.66), 0.07, (0.95, 0.98, 1.06), (240, 288),
                     (0.67,), (0.9, 1.15), 0.40, 0.50, 0.30, (88, 92)),
    "derm7pt_clinic": Style("clinical", (0.83, 0.65, 0.58), 0.10, (1.00, 0.98, 0.98), (240, 288),
                            (0.67,), (0.35, 0.6), 0.0, 0.0, 0.15, (88, 92)),
    "ph2": Style("dermoscopic", (0.80, 0.62, 0.60), 0.06, (1.05, 0.97, 0.92), (256, 256),
                 (0.75,), (0.9, 1.1), 0.45, 0.90, 0.30, portrait=0.0),
    "pad_ufes_20": Style("clinical", (0.80, 0.62, 0.52), 0.15, (1.00, 1.00, 1.00), (180, 240),
                         (1.0, 0.9, 0.75), (0.35, 0.6), 0.0, 0.0, 0.15),
    "mednode": Style("clinical", (0.84, 0.66, 0.56), 0.10, (1.04, 1.00, 0.94), (200, 300),
                     (0.67, 0.75, 1.0), (0.4, 0.7), 0.0, 0.0, 0.10, (90, 95)),
    "kaggle": Style("dermoscopic", (0.83, 0.64, 0.58), 0.08, (1.00, 1.00, 1.00), (224, 224),
                    (1.0,), (0.9, 1.2), 0.30, 0.30, 0.40, (75, 82)),
}


@lru_cache(maxsize=256)
def _interp(n: int, cells: int) -> np.ndarray:
    """Smooth interpolation weights (``n x cells``) from a coarse grid to ``n`` pixels.

    Rows have unit Euclidean norm, so interpolated i.i.d. unit normals have unit variance at
    every pixel.
    """
    x = (np.arange(n) + 0.5) / n
    c = (np.arange(cells) + 0.5) / cells
    w = np.exp(-0.5 * ((x[:, None] - c[None, :]) * cells / 0.75) ** 2)
    w /= np.sqrt((w * w).sum(axis=1, keepdims=True))
    return w.astype(np.float32)


def _fields(rng: np.random.Generator, h: int, w: int, cells: int, k: int) -> np.ndarray:
    """``k`` smooth random fields of shape ``(k, h, w)``, zero mean and unit variance per pixel.

    A ``cells x cells`` grid of normal noise is interpolated by two small matrix products,
    so the cost is that of a few matrix multiplications, never a per-pixel loop.
    """
    g = rng.standard_normal((k, cells, cells), dtype=np.float32)
    return _interp(h, cells) @ g @ _interp(w, cells).T


@lru_cache(maxsize=8)
def _tex_grid() -> tuple[np.ndarray, np.ndarray]:
    c = ((np.arange(_TEX) + 0.5) / _TEX * 2 - 1).astype(np.float32)
    return np.meshgrid(c, c)  # U (x), V (y)


@lru_cache(maxsize=1)
def _noise_tile() -> np.ndarray:
    """A fixed tile of fine skin-texture noise; views crop it at random offsets."""
    return np.random.default_rng(20160101).standard_normal((512, 512), dtype=np.float32)


def _radial(h: int, w: int, dy: float = 0.0, dx: float = 0.0) -> np.ndarray:
    """Distance from the image centre (shifted by ``dy, dx`` half-sides), ~1 at the corners."""
    y = (np.arange(h, dtype=np.float32) + 0.5 - h / 2) / (h / 2) - np.float32(dy)
    x = (np.arange(w, dtype=np.float32) + 0.5 - w / 2) / (w / 2) - np.float32(dx)
    return np.sqrt((y[:, None] ** 2 + x[None, :] ** 2) * np.float32(0.5))


def _ramp(h: int, w: int, angle: float) -> np.ndarray:
    """A linear ramp from -1 to 1 across the image in direction ``angle``."""
    y = np.linspace(-1, 1, h, dtype=np.float32)[:, None] * np.float32(np.sin(angle))
    x = np.linspace(-1, 1, w, dtype=np.float32)[None, :] * np.float32(np.cos(angle))
    return (x + y) * np.float32(1 / max(1e-3, abs(np.sin(angle)) + abs(np.cos(angle))))


@dataclass
class Lesion:
    """One drawn lesion: its look in its own frame, rendered into images by :func:`_view`.

    Attributes
    ----------
    label : int
        True label (1 melanoma).
    apparent : int
        Class whose look it has (differs from ``label`` for label-noise lesions).
    m : float
        Malignant look, 0 (round, small, uniform brown) to 1 (large, asymmetric, multicolour).
    size : float
        Lesion radius as a fraction of the shorter image side (dermoscopic framing).
    texture : PIL.Image.Image
        RGBA texture in the lesion frame, a square centred on the lesion and cropped to it.
    regions : PIL.Image.Image or None
        Index (into :data:`PALETTE`) of the dominant colour per texture pixel (``L`` mode),
        when asked for.
    """

    label: int
    apparent: int
    m: float
    size: float
    texture: Image.Image
    regions: Image.Image | None


def draw_lesion(rng: np.random.Generator, label: int, regions: bool = False) -> Lesion:
    """Draw one lesion with the look of its class (with ambiguity and label noise).

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness (keyed per lesion by the caller).
    label : int
        1 for melanoma, 0 otherwise.
    regions : bool
        Also compute the dominant-colour map (PH2's ROI masks); otherwise ``regions`` is None.

    Returns
    -------
    Lesion
    """
    label = int(label)
    apparent = label ^ int(rng.random() < LABEL_NOISE)
    if rng.random() < AMBIGUOUS_FRACTION:
        m = rng.uniform(0.35, 0.65)
    elif apparent:
        m = 0.45 + 0.55 * rng.beta(4.0, 2.0)
    else:
        m = 0.5 * rng.beta(2.0, 4.5)
    U, V = _tex_grid()

    # geometry: elongation, low harmonics (asymmetry) and high harmonics (ragged border)
    aspect = 1.0 + rng.uniform(0.0, 0.15 + 0.45 * m)
    psi = rng.uniform(0, np.pi)
    ua = (U * np.cos(psi) + V * np.sin(psi)) * np.sqrt(aspect)
    va = (V * np.cos(psi) - U * np.sin(psi)) / np.sqrt(aspect)
    d = np.sqrt(ua * ua + va * va)
    th = np.arctan2(va, ua)
    ks = np.arange(1, 17, dtype=np.float32)
    amp = np.where(ks <= 3, 0.015 + 0.10 * m, (0.004 + 0.035 * m) / np.sqrt(ks / 4.0))
    amp = amp * rng.uniform(0.5, 1.5, ks.size)
    amp[0] *= 0.5
    phase = rng.uniform(0, 2 * np.pi, ks.size)
    tab = np.linspace(-np.pi, np.pi, 1024, endpoint=False, dtype=np.float32)
    r_tab = _R0 * (1 + (amp[:, None] * np.cos(ks[:, None] * tab[None, :] + phase[:, None])).sum(0))
    idx = ((th + np.pi) * (1024 / (2 * np.pi))).astype(np.int32) % 1024
    r = r_tab[idx] * (1 + (0.01 + 0.07 * m) * _fields(rng, _TEX, _TEX, 10, 1)[0])
    r = np.clip(r, 0.2, 0.96 / np.sqrt(aspect))
    edge = _R0 * (0.16 - 0.11 * m) * rng.uniform(0.7, 1.3)
    alpha = np.clip((r - d) / edge + 0.5, 0, 1)
    alpha = alpha * alpha * (3 - 2 * alpha)

    # colours: a brown base plus extra colours (more, and placed asymmetrically, if malignant)
    t = rng.random()
    base = (1 - t) * np.asarray(PALETTE["light_brown"]) + t * np.asarray(PALETTE["brown"])
    base = base * rng.uniform(0.85, 1.1)
    n_extra = int(rng.binomial(4, 0.04 + 0.86 * m))
    names = ["base"] + list(rng.choice(_EXTRA_COLOURS, size=n_extra, replace=False, p=_EXTRA_P))
    cols = np.array([base] + [PALETTE[n] for n in names[1:]], dtype=np.float32)
    cols += rng.normal(0, 0.025, cols.shape).astype(np.float32)
    k = len(cols)
    F = _fields(rng, _TEX, _TEX, int(rng.integers(4, 7)), k)
    g = rng.uniform(0, 2 * np.pi)
    lin = (U * np.cos(g) + V * np.sin(g)) / _R0
    F[1:] += (2.2 * m * rng.uniform(0.5, 1.5, k - 1))[:, None, None] * lin[None]
    bias = np.zeros(k, np.float32)
    bias[0] = 0.4 + 2.2 * (1 - m)
    logits = (1.5 + 3.0 * m) * F + bias[:, None, None]
    logits -= logits.max(axis=0, keepdims=True)
    W = np.exp(logits)
    W /= W.sum(axis=0, keepdims=True)
    col = (W.reshape(k, -1).T @ cols).reshape(_TEX, _TEX, 3)

    # centre darkening (symmetric for benign, eccentric for malignant), network and dots
    off = m * rng.uniform(-0.5, 0.5, 2) * _R0
    dc = np.sqrt((U - off[0]) ** 2 + (V - off[1]) ** 2)
    col *= (1 - 0.22 * np.clip(1 - dc / (1.2 * _R0), 0, 1))[..., None]
    freq = rng.uniform(30, 45)
    warp = (0.3 + 2.5 * m) * _fields(rng, _TEX, _TEX, 8, 2)
    net = np.sin(U * freq + warp[0]) * np.sin(V * freq + warp[1])
    col *= (1 - (0.05 + 0.06 * m) * (net > 0.2))[..., None]
    hi = _fields(rng, _TEX, _TEX, 24, 1)[0]
    dots = np.clip((hi - (2.3 - 0.9 * m)) / 0.3, 0, 1) * (d < r * 0.95)
    col = col * (1 - 0.6 * dots[..., None]) + 0.6 * dots[..., None] * np.array(PALETTE["black"], np.float32)

    rgba = np.empty((_TEX, _TEX, 4), np.uint8)
    rgba[..., :3] = np.clip(col * 255 + 0.5, 0, 255).astype(np.uint8)
    rgba[..., 3] = np.clip(alpha * 255 + 0.5, 0, 255).astype(np.uint8)
    size = float(np.clip(0.17 + 0.15 * m + rng.normal(0, 0.025), 0.10, 0.40))
    # crop to a square around the centre that holds the whole lesion
    inside = np.flatnonzero(rgba[..., 3].any(axis=0) | rgba[..., 3].any(axis=1))
    e = min(_TEX // 2, int(max(_TEX // 2 - inside.min(), inside.max() + 1 - _TEX // 2)) + 2)
    sl = slice(_TEX // 2 - e, _TEX // 2 + e)
    dominant = None
    if regions:
        lut = np.array([_PALETTE_NAMES.index("brown")] + [_PALETTE_NAMES.index(n) for n in names[1:]],
                       np.uint8)
        dominant = Image.fromarray(lut[W[:, sl, sl].argmax(axis=0)], "L")
    return Lesion(label, int(apparent), float(m), size, Image.fromarray(rgba[sl, sl], "RGBA"),
                  dominant)


def _hair(rng: np.random.Generator, h: int, w: int, n: int) -> np.ndarray:
    """Mask of ``n`` curved hair strands (float, 0..1), drawn with PIL (no pixel loops)."""
    im = Image.new("L", (w, h), 0)
    dr = ImageDraw.Draw(im)
    t = np.linspace(0, 1, 10)[:, None]
    for _ in range(n):
        p0 = rng.uniform((0, 0), (w, h))
        ang = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(0.3, 1.0) * max(h, w)
        p2 = p0 + length * np.array([np.cos(ang), np.sin(ang)])
        p1 = (p0 + p2) / 2 + rng.normal(0, 0.15 * length, 2)
        pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2
        dr.line([tuple(p) for p in pts.round(1)], fill=int(rng.integers(140, 256)),
                width=int(rng.integers(1, 3)))
    return np.asarray(im, np.float32) / 255.0


def _image_size(rng: np.random.Generator, style: Style) -> tuple[int, int]:
    long = int(rng.integers(style.long_side[0], style.long_side[1] + 1))
    aspect = float(style.aspects[int(rng.integers(len(style.aspects)))])
    short = max(16, round_half_up(long * aspect))
    portrait = rng.random() < style.portrait and aspect != 1.0
    return (long, short) if portrait else (short, long)


def _place(im: Image.Image, placement: tuple[int, int, int, int], h: int, w: int,
           resample: Image.Resampling = Image.Resampling.BILINEAR) -> tuple[np.ndarray, tuple]:
    """Transpose, scale and crop a lesion-frame image as in ``placement``.

    Returns the part of the scaled image inside an ``h x w`` frame and the frame slices
    ``(rows, cols)`` it covers.
    """
    op, n, y0, x0 = placement
    if _DIHEDRAL[op] is not None:
        im = im.transpose(_DIHEDRAL[op])
    arr = np.asarray(im.resize((n, n), resample))
    ys, ye, xs, xe = max(0, y0), min(h, y0 + n), max(0, x0), min(w, x0 + n)
    return arr[ys - y0:ye - y0, xs - x0:xe - x0], (slice(ys, ye), slice(xs, xe))


def _full(im: Image.Image, placement: tuple[int, int, int, int], h: int, w: int,
          resample: Image.Resampling = Image.Resampling.BILINEAR) -> np.ndarray:
    """Like :func:`_place` but returns a full ``h x w`` array (zeros outside the lesion)."""
    part, (rows, cols) = _place(im, placement, h, w, resample)
    out = np.zeros((h, w) + part.shape[2:], part.dtype)
    out[rows, cols] = part
    return out


def _view(lesion: Lesion, style: Style, rng: np.random.Generator,
          size: tuple[int, int] | None = None
          ) -> tuple[np.ndarray, tuple[int, int, int, int], tuple[int, int]]:
    """Render one photograph of ``lesion`` in the look ``style``.

    The lesion texture is turned by one of the eight dihedral symmetries, scaled and placed;
    skin, hair, colour cast, vignette and aperture come from ``rng``.

    Returns
    -------
    rgb : numpy.ndarray
        ``(h, w, 3)`` uint8 image.
    placement : tuple of int
        ``(op, side, top, left)`` for :func:`_full` (to warp masks the same way).
    size : tuple of int
        ``(h, w)``.
    """
    h, w = size if size is not None else _image_size(rng, style)
    side = min(h, w)
    radius = lesion.size * side * rng.uniform(*style.lesion)
    cx = w * np.clip(0.5 + rng.normal(0, 0.09), 0.3, 0.7)
    cy = h * np.clip(0.5 + rng.normal(0, 0.09), 0.3, 0.7)
    n = max(2, round_half_up(lesion.texture.width * radius / (_R0 * _TEX / 2)))
    placement = (int(rng.integers(8)), n, round_half_up(cy - n / 2), round_half_up(cx - n / 2))

    # skin: tone, illumination and fine texture
    tone = np.asarray(style.skin, np.float32) * np.float32(1 + style.skin_sd * rng.standard_normal())
    tone = tone + rng.normal(0, 0.015, 3).astype(np.float32)
    oy, ox = rng.integers(0, 512 - h + 1), rng.integers(0, 512 - w + 1)
    g = rng.uniform(0, 2 * np.pi)
    ramp = np.float32(rng.uniform(0.03, 0.2)) * _ramp(h, w, float(g))
    shade = 1 + ramp + 0.1 * _fields(rng, h, w, 2, 1)[0] + 0.06 * _fields(rng, h, w, 4, 1)[0]
    shade += 0.02 * _fields(rng, h, w, 24, 1)[0] + 0.012 * _noise_tile()[oy:oy + h, ox:ox + w]
    # a few freckles / small naevi on the skin
    spots = np.clip((_fields(rng, h, w, 14, 1)[0] - np.float32(rng.uniform(2.2, 3.2))) * 2.5, 0, 1)
    if style.kind == "clinical":  # body curvature
        shade *= 1 - 0.12 * _ramp(h, w, float(rng.uniform(0, 2 * np.pi))) ** 2
    cast = np.asarray(style.cast, np.float32) * rng.uniform(0.97, 1.03, 3).astype(np.float32) * 255
    img = shade[..., None] * (tone * cast)[None, None, :]
    img *= 1 - spots[..., None] * np.array([0.25, 0.33, 0.42], np.float32)

    part, (rows, cols) = _place(lesion.texture, placement, h, w)
    if part.size:
        layer = part.astype(np.float32) * np.float32(1 / 255)
        a = layer[..., 3:]
        gain = np.float32(0.92 + 0.16 * float(tone.mean()))
        img[rows, cols] = img[rows, cols] * (1 - a) + layer[..., :3] * (a * gain) * cast

    if rng.random() < style.hair:
        hm = _hair(rng, h, w, int(rng.integers(2, 14)))[..., None]
        hair_col = np.float32(rng.uniform(0.05, 0.25)) * np.array([1.0, 0.8, 0.7], np.float32) * cast
        img = img * (1 - hm) + hair_col * hm
    # vignette and dermoscope aperture as one brightness map
    rr = _radial(h, w, *np.round(rng.normal(0, 0.04, 2), 3))
    vig = 1 - np.float32(style.vignette * rng.uniform(0.5, 1.2)) * rr * rr
    if rng.random() < style.corners:
        rho = rng.uniform(0.72, 0.95)
        a = np.clip((np.float32(rho) - rr) / np.float32(0.02), 0, 1)
        dark = np.float32(rng.uniform(0.0, 0.05) * 255)
        vig = vig * a
        img *= vig[..., None]
        img += (dark * (1 - a))[..., None]
    else:
        img *= vig[..., None]
    img += 0.5
    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8), placement, (h, w)


def render_lesion_image(seed: int, label: int, style: str = "isic2018") -> np.ndarray:
    """Render one synthetic lesion photograph (handy for notebooks and tests).

    Parameters
    ----------
    seed : int
        Seed of the lesion and the view.
    label : int
        1 melanoma, 0 benign.
    style : str
        A key of :data:`STYLES`.

    Returns
    -------
    numpy.ndarray
        ``(h, w, 3)`` uint8 RGB image.
    """
    with _one_blas_thread():
        lesion = draw_lesion(np.random.default_rng([seed, 0]), label)
        return _view(lesion, STYLES[style], np.random.default_rng([seed, 1]))[0]


# --------------------------------------------------------------------------------------------
# Writing helpers
# --------------------------------------------------------------------------------------------

def _write_csv(path: Path, header: list[str] | None, rows: Iterable[Iterable[Any]]) -> None:
    """Write a CSV with ``\\n`` line ends (no header when ``header`` is None)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        wr = csv.writer(f, lineterminator="\n")
        if header is not None:
            wr.writerow(header)
        wr.writerows(rows)


def _save_image(path: Path, rgb: np.ndarray, quality: int | None = None) -> None:
    """Save by extension: JPEG at ``quality``, PNG or BMP (all deterministic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(rgb) if isinstance(rgb, np.ndarray) else rgb
    ext = path.suffix.lower()
    if ext in (".jpg", ".jpeg"):
        im.save(path, "JPEG", quality=int(quality or 90))
    elif ext == ".png":
        im.save(path, "PNG", compress_level=1)
    elif ext == ".bmp":
        im.save(path, "BMP")
    else:  # pragma: no cover - guarded by the writers
        raise ValueError(f"unsupported image type {path}")


def _f(x: float) -> str:
    """Float formatting of the ISIC CSVs (``0.0``/``1.0``)."""
    return f"{float(x):.1f}"


def _normalise_xlsx(data: bytes) -> bytes:
    """Pin the timestamps in an ``.xlsx`` (zip entry dates and core properties)."""
    src = zipfile.ZipFile(io.BytesIO(data))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as dst:
        for name in sorted(src.namelist(), key=lambda n: (n != "[Content_Types].xml", n)):
            content = src.read(name)
            if name == "docProps/core.xml":
                content = re.sub(rb"(<dcterms:(created|modified)[^>]*>)[^<]*",
                                 rb"\g<1>2008-01-01T00:00:00Z", content)
            info = zipfile.ZipInfo(name, date_time=(2008, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            dst.writestr(info, content)
    return buf.getvalue()


@dataclass
class _Rec:
    """One image of a replica (truth row plus what the metadata writers need)."""

    image_id: str
    label: int
    split: str
    path: str                         # relative to the dataset folder
    group: int = -1                   # lesion key (images of one lesion share it)
    meta: dict = field(default_factory=dict)


_SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}


class _Writer:
    """State shared by the per-dataset writers of one :func:`write_replicas` call."""

    def __init__(self, out: Path, scale: float, seed: int):
        self.out, self.scale, self.seed = out, scale, int(seed)
        self.counts = requested_counts(scale)
        self.recs: dict[str, list[_Rec]] = {}
        self.edges: list[tuple[tuple[str, str], tuple[str, str]]] = []
        self.resized: set[tuple[str, str]] = set()
        self._used_isic: set[int] = set()
        self._isic_rng = np.random.default_rng([self.seed, 0, 99])
        self.n_rendered = 0

    # random streams ----------------------------------------------------------------------
    def rng(self, short: str, *key: int) -> np.random.Generator:
        """A generator keyed by seed, dataset and ``key`` (order-independent)."""
        return stream(self.seed, short, *key)

    def isic_ids(self, n: int, lo: int, hi: int) -> list[str]:
        """``n`` fresh ISIC ids in ``[lo, hi)``, unique across all ISIC-style datasets."""
        out: list[int] = []
        while len(out) < n:
            for c in self._isic_rng.integers(lo, hi, size=2 * (n - len(out)) + 8):
                c = int(c)
                if c not in self._used_isic and len(out) < n:
                    self._used_isic.add(c)
                    out.append(c)
        return [f"ISIC_{c:07d}" for c in sorted(out)]

    def lesion(self, short: str, key: int, label: int) -> Lesion:
        """The lesion ``key`` of dataset ``short`` (the same lesion for the same key)."""
        return draw_lesion(self.rng(short, 2, key), label, regions=short == "ph2")

    # images ------------------------------------------------------------------------------
    def render(self, short: str, recs: list[_Rec], style: Style | None = None,
               size: tuple[int, int] | None = None, key_offset: int = 0,
               keep_views: bool = False) -> dict[str, Any]:
        """Render and save every record in ``recs`` (path extension chooses the format).

        Each image gets its own generator keyed by ``key_offset`` plus its position in
        ``recs``; the lesion is keyed by ``rec.group`` (or the image key when ``group < 0``),
        so the images of one lesion show the same lesion. With ``keep_views`` the result maps
        each path to ``(lesion, placement, (h, w))`` (for masks); otherwise it is empty.
        """
        style = style or STYLES[short]
        views: dict[str, Any] = {}
        lesions: dict[int, Lesion] = {}
        uses: dict[int, int] = {}
        for rec in recs:
            uses[rec.group] = uses.get(rec.group, 0) + 1
        for i, rec in enumerate(recs):
            key = key_offset + i
            rng = self.rng(short, 1, key)
            lkey = rec.group if rec.group >= 0 else 10_000_000 + key
            les = lesions.get(lkey) or self.lesion(short, lkey, rec.label)
            if rec.group >= 0 and uses[rec.group] > 1:  # keep only lesions seen again
                lesions[lkey] = les
            rgb, placement, hw = _view(les, style, rng, size)
            q = int(rng.integers(style.quality[0], style.quality[1] + 1))
            _save_image(self.out / short / rec.path, rgb, q)
            if keep_views:
                views[rec.path] = (les, placement, hw)
            self.n_rendered += 1
        return views

    def copy(self, src: tuple[str, str], dst_short: str, dst_path: str) -> None:
        """Copy a file byte for byte (``src`` is ``(short, relative path)``)."""
        target = self.out / dst_short / dst_path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.out / src[0] / src[1], target)

    def planted(self, a: tuple[str, str], b: tuple[str, str], resized: bool = False) -> None:
        """Record that ``b`` (dataset, image id) is a copy of ``a``."""
        self.edges.append((a, b))
        if resized:
            self.resized.add(b)

    # bookkeeping -------------------------------------------------------------------------
    def finish(self, short: str, recs: list[_Rec], hidden_labels: Iterable[str] = ()) -> None:
        """Write ``SYNTHETIC_truth.csv`` and ``SYNTHETIC.json`` for one dataset."""
        hidden = set(hidden_labels)
        recs = sorted(recs, key=lambda r: (_SPLIT_ORDER[r.split], r.image_id))
        self.recs[short] = recs
        ids = [r.image_id for r in recs]
        assert len(set(ids)) == len(ids), f"{short}: duplicate image ids"
        counts: dict[str, dict[str, int]] = {}
        for r in recs:
            c = counts.setdefault(r.split, {"n": 0, "melanoma": 0})
            c["n"] += 1
            c["melanoma"] += int(r.label == 1)
        _write_csv(self.out / short / "SYNTHETIC_truth.csv", ["image_id", "label", "split", "path"],
                   ([r.image_id, -1 if r.split in hidden else r.label, r.split, r.path] for r in recs))
        info = {"synthetic": True, "generator": GENERATOR, "seed": self.seed, "scale": self.scale,
                "dataset": short, "counts": counts,
                "unlabelled_splits": sorted(hidden),
                "note": "SYNTHETIC data: procedurally drawn lesions and invented metadata."}
        (self.out / short / "SYNTHETIC.json").write_text(json.dumps(info, indent=2) + "\n",
                                                       encoding="utf-8")


def _choice(rng: np.random.Generator, values: list, p: list[float] | None = None):
    """One item of ``values`` (a Python object, not a NumPy scalar)."""
    i = int(rng.choice(len(values), p=None if p is None else np.asarray(p) / np.sum(p)))
    return values[i]


def _age(rng: np.random.Generator, missing: float = 0.03) -> str:
    return "" if rng.random() < missing else _f(5 * int(rng.integers(3, 18)))


_SEX = ["male", "female"]
_SITES_2019 = ["anterior torso", "upper extremity", "posterior torso", "lower extremity",
               "lateral torso", "head/neck", "palms/soles", "oral/genital"]
_SITES_2020 = ["torso", "lower extremity", "upper extremity", "head/neck", "palms/soles",
               "oral/genital"]
_ISIC_TXT = {
    "ATTRIBUTION.txt": "SYNTHETIC replica: no real images. The real release credits its "
                       "contributing institutions here.\n",
    "LICENSE.txt": "SYNTHETIC replica. The real release is licensed CC-BY-NC 4.0.\n",
}


def _isic_txt(folder: Path) -> None:
    """The ``ATTRIBUTION.txt``/``LICENSE.txt`` files that ISIC 2018/2019 folders contain."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in _ISIC_TXT.items():
        (folder / name).write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------------------------
# The releases
# --------------------------------------------------------------------------------------------

def _isic2016(w: _Writer) -> None:
    short = "isic2016"
    rng = w.rng(short, 0)
    recs: list[_Rec] = []
    for split, folder in (("train", "ISBI2016_ISIC_Part3_Training_Data"),
                          ("test", "ISBI2016_ISIC_Part3_Test_Data")):
        c = w.counts[short][split]
        ids = w.isic_ids(c["n"], 0, 11403)
        for iid, lab in zip(ids, shuffled_labels(rng, c["n"], c["melanoma"])):
            recs.append(_Rec(iid, int(lab), split, f"{folder}/{iid}.jpg"))
    w.render(short, recs)
    tr = [r for r in recs if r.split == "train"]
    te = [r for r in recs if r.split == "test"]
    _write_csv(w.out / short / "ISBI2016_ISIC_Part3_Training_GroundTruth.csv", None,
               ([r.image_id, "malignant" if r.label else "benign"] for r in tr))
    _write_csv(w.out / short / "ISBI2016_ISIC_Part3_Test_GroundTruth.csv", None,
               ([r.image_id, _f(r.label)] for r in te))
    w.finish(short, recs)


def _superpixels(path: Path, size: tuple[int, int], rng: np.random.Generator) -> None:
    """An ISIC 2017 ``*_superpixels.png``: a label map encoded in the R and G channels."""
    wd, ht = size
    cs = int(rng.integers(12, 20))
    y = (np.arange(ht) // cs)[:, None]
    x = (np.arange(wd) // cs)[None, :]
    lab = y * (wd // cs + 1) + x
    rgb = np.zeros((ht, wd, 3), np.uint8)
    rgb[..., 0] = lab & 255
    rgb[..., 1] = (lab >> 8) & 255
    Image.fromarray(rgb).save(path, "PNG", compress_level=1)


def _isic2017(w: _Writer) -> None:
    short = "isic2017"
    rng = w.rng(short, 0)
    folders = {"train": "ISIC-2017_Training", "val": "ISIC-2017_Validation", "test": "ISIC-2017_Test_v2"}
    recs: list[_Rec] = []
    new: list[_Rec] = []
    copies: list[tuple[_Rec, _Rec]] = []
    t16 = [r for r in w.recs["isic2016"] if r.split == "test"]
    for split, stem in folders.items():
        c = w.counts[short][split]
        n, mel = c["n"], c["melanoma"]
        if split == "train":  # ISIC 2016's test images are part of ISIC 2017's training set
            for r in t16:
                rr = _Rec(r.image_id, r.label, split, f"{stem}_Data/{r.image_id}.jpg")
                recs.append(rr)
                copies.append((r, rr))
            n -= len(t16)
            mel -= sum(r.label for r in t16)
        ids = w.isic_ids(n, 0, 16072)
        for iid, lab in zip(ids, shuffled_labels(rng, n, mel)):
            rr = _Rec(iid, int(lab), split, f"{stem}_Data/{iid}.jpg")
            recs.append(rr)
            new.append(rr)
    new.sort(key=lambda r: r.image_id)
    w.render(short, new)
    for src, dst in copies:
        w.copy(("isic2016", src.path), short, dst.path)
        w.planted(("isic2016", src.image_id), (short, dst.image_id))
    for r in sorted(recs, key=lambda r: r.image_id):
        rs = w.rng(short, 3, int(r.image_id[5:]))
        with Image.open(w.out / short / r.path) as im:
            size = im.size
        _superpixels(w.out / short / r.path.replace(".jpg", "_superpixels.png"), size, rs)
        r.meta["sk"] = int(r.label == 0 and rs.random() < 0.22)
        r.meta["age"] = "unknown" if rs.random() < 0.1 else str(5 * int(rs.integers(3, 18)))
        r.meta["sex"] = "unknown" if rs.random() < 0.1 else _choice(rs, _SEX)
    for split, stem in folders.items():
        rows = sorted((r for r in recs if r.split == split), key=lambda r: r.image_id)
        _write_csv(w.out / short / f"{stem}_Part3_GroundTruth.csv",
                   ["image_id", "melanoma", "seborrheic_keratosis"],
                   ([r.image_id, _f(r.label), _f(r.meta["sk"])] for r in rows))
        _write_csv(w.out / short / f"{stem}_Data" / f"{stem}_Data_metadata.csv",
                   ["image_id", "age_approximate", "sex"],
                   ([r.image_id, r.meta["age"], r.meta["sex"]] for r in rows))
    w.finish(short, recs)


_DX2018 = ["NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
_DX2018_P = [0.75, 0.06, 0.04, 0.12, 0.013, 0.017]
_CONFIRM = {"histo": "histopathology", "follow_up": "serial imaging showing no change",
            "consensus": "single image expert consensus",
            "confocal": "confocal microscopy with consensus dermoscopy"}


def _isic2018(w: _Writer) -> None:
    short = "isic2018"
    rng = w.rng(short, 0)
    ranges = {"train": (24306, 34321), "val": (34321, 34524), "test": (34524, 36064)}
    names = {"train": "Training", "val": "Validation", "test": "Test"}
    recs: list[_Rec] = []
    lesion_no = 0
    for split, name in names.items():
        c = w.counts[short][split]
        ids = w.isic_ids(c["n"], *ranges[split])
        labels = shuffled_labels(rng, c["n"], c["melanoma"])
        groups = lesion_groups(rng, labels, 1.4 if split == "train" else 1.0) + lesion_no
        for iid, lab, g in zip(ids, labels, groups):
            recs.append(_Rec(iid, int(lab), split, f"ISIC2018_Task3_{name}_Input/{iid}.jpg", int(g)))
        lesion_no = int(groups.max()) + 1
    w.render(short, recs)
    lesion_ids = w.rng(short, 4).choice(np.arange(0, max(7500, 4 * lesion_no)), size=lesion_no,
                                        replace=False)
    # per-lesion metadata (shared by HAM10000)
    lesion_meta: dict[int, dict[str, str]] = {}
    for r in recs:
        if r.group not in lesion_meta:
            rs = w.rng(short, 5, r.group)
            dx = "MEL" if r.label else _choice(rs, _DX2018, _DX2018_P)
            dxt = "histo" if dx in ("MEL", "BCC", "AKIEC") else _choice(
                rs, ["histo", "follow_up", "consensus", "confocal"], [0.4, 0.4, 0.17, 0.03])
            lesion_meta[r.group] = {
                "lesion_id": f"HAM_{int(lesion_ids[r.group]):07d}", "dx": dx, "dx_type": dxt,
                "age": _age(rs, 0.01), "sex": _choice(rs, _SEX + ["unknown"], [0.54, 0.45, 0.01]),
                "localization": _choice(rs, ["back", "lower extremity", "trunk", "upper extremity",
                                             "abdomen", "face", "chest", "foot", "neck", "scalp",
                                             "unknown"])}
        r.meta.update(lesion_meta[r.group])
    for split, name in names.items():
        _isic_txt(w.out / short / f"ISIC2018_Task3_{name}_Input")
        gt = w.out / short / f"ISIC2018_Task3_{name}_GroundTruth"
        _isic_txt(gt)
        rows = sorted((r for r in recs if r.split == split), key=lambda r: r.image_id)
        _write_csv(gt / f"ISIC2018_Task3_{name}_GroundTruth.csv",
                   ["image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"],
                   ([r.image_id] + [_f(r.meta["dx"] == d) for d in ["MEL"] + _DX2018] for r in rows))
    train = sorted((r for r in recs if r.split == "train"), key=lambda r: r.image_id)
    _write_csv(w.out / short / "ISIC2018_Task3_Training_LesionGroupings.csv",
               ["image", "lesion_id", "diagnosis_confirm_type"],
               ([r.image_id, r.meta["lesion_id"], _CONFIRM[r.meta["dx_type"]]] for r in train))
    w.finish(short, recs)


_DX2019 = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
_DX2019_NONMEL = ["NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"]
_DX2019_P = [0.58, 0.15, 0.04, 0.12, 0.01, 0.01, 0.03]


def _isic2019(w: _Writer) -> None:
    short = "isic2019"
    rng = w.rng(short, 0)
    c = w.counts[short]["train"]
    folder = "ISIC_2019_Training_Input"
    k18, k17 = n_dups("isic2019_from_isic2018", w.scale), n_dups("isic2019_from_isic2017_test", w.scale)
    half_mel = c["melanoma"] // 2
    half_ben = (c["n"] - c["melanoma"]) // 2
    d18 = pick_records(rng, [r for r in w.recs["isic2018"] if r.split == "train"], k18, half_mel, half_ben)
    d17 = pick_records(rng, [r for r in w.recs["isic2017"] if r.split == "test"], k17,
                max(0, half_mel - sum(r.label for r in d18)), half_ben)
    recs: list[_Rec] = []
    for r in d18:
        recs.append(_Rec(r.image_id, r.label, "train", f"{folder}/{r.image_id}.jpg",
                         meta={"dx": {"AKIEC": "AK"}.get(r.meta["dx"], r.meta["dx"]),
                               "lesion_id": r.meta["lesion_id"], "src": ("isic2018", r.path)}))
    for r in d17:
        recs.append(_Rec(r.image_id, r.label, "train", f"{folder}/{r.image_id}.jpg",
                         meta={"dx": "MEL" if r.label else ("BKL" if r.meta["sk"] else "NV"),
                               "lesion_id": "", "src": ("isic2017", r.path)}))
    n = c["n"] - len(recs)
    mel = c["melanoma"] - sum(r.label for r in recs)
    ids = w.isic_ids(n, 53000, 73300)
    labels = shuffled_labels(rng, n, mel)
    groups = lesion_groups(rng, labels, 1.5)
    bcn = w.rng(short, 4).choice(np.arange(0, 70000), size=int(groups.max()) + 1, replace=False)
    new = [_Rec(iid, int(lab), "train", f"{folder}/{iid}.jpg", int(g),
                meta={"lesion_id": f"BCN_{int(bcn[g]):07d}"}) for iid, lab, g in zip(ids, labels, groups)]
    w.render(short, new)
    for r in new:
        r.meta["dx"] = "MEL" if r.label else _choice(w.rng(short, 5, r.group), _DX2019_NONMEL, _DX2019_P)
    for r in recs:
        src_short = r.meta["src"][0]
        w.copy(r.meta["src"], short, r.path)
        w.planted((src_short, r.image_id), (short, r.image_id))
    recs += new
    recs.sort(key=lambda r: r.image_id)
    _isic_txt(w.out / short / folder)
    _write_csv(w.out / short / "ISIC_2019_Training_GroundTruth.csv", ["image"] + _DX2019,
               ([r.image_id] + [_f(r.meta["dx"] == d) for d in _DX2019] for r in recs))
    rows = []
    for r in recs:
        rs = w.rng(short, 6, int(r.image_id[5:]))
        rows.append([r.image_id, _age(rs, 0.02), "" if rs.random() < 0.08 else _choice(rs, _SITES_2019),
                     r.meta["lesion_id"], "" if rs.random() < 0.02 else _choice(rs, _SEX)])
    _write_csv(w.out / short / "ISIC_2019_Training_Metadata.csv",
               ["image", "age_approx", "anatom_site_general", "lesion_id", "sex"], rows)
    w.finish(short, recs)


_DX2020 = ["unknown", "nevus", "seborrheic keratosis", "lentigo NOS", "lichenoid keratosis",
           "solar lentigo", "cafe-au-lait macule", "atypical melanocytic proliferation"]
_DX2020_P = [0.82, 0.16, 0.006, 0.006, 0.0056, 0.0014, 0.0003, 0.0002]


def _isic2020(w: _Writer) -> None:
    short = "isic2020"
    rng = w.rng(short, 0)
    recs: list[_Rec] = []
    n_pairs = n_dups("isic2020_pairs", w.scale)
    n_all = sum(c["n"] for c in w.counts[short].values())
    patient_ids = w.rng(short, 4).choice(10_000_000, size=n_all, replace=False)
    lesion_ids = w.rng(short, 7).choice(10_000_000, size=n_all, replace=False)
    offset = {"train": 0, "test": 1_000_000}
    n_pat = 0
    pairs: list[tuple[_Rec, _Rec]] = []
    for split in ("train", "test"):
        c = w.counts[short][split]
        k = n_pairs if split == "train" else 0
        k_mel = min(int(rng.binomial(k, c["melanoma"] / c["n"])), c["melanoma"] - 1)
        n, mel = c["n"] - k, c["melanoma"] - k_mel
        ids = w.isic_ids(n, 100000, 10_000_000)
        labels = shuffled_labels(rng, n, mel)
        split_recs = [_Rec(iid, int(lab), split, f"{split}/{iid}.jpg", offset[split] + i)
                      for i, (iid, lab) in enumerate(zip(ids, labels))]
        # patients: several images (lesions) each, any mix of labels
        order = rng.permutation(len(split_recs))
        i = 0
        while i < len(order):
            k = 1 + int(rng.poisson(3.0))
            for j in order[i:i + k]:
                split_recs[int(j)].meta["patient"] = f"IP_{int(patient_ids[n_pat]):07d}"
            n_pat += 1
            i += k
        w.render(short, split_recs, key_offset=offset[split])
        if split == "train":  # duplicate pairs: another name, the same file
            srcs = pick_records(rng, split_recs, n_pairs, k_mel, n_pairs - k_mel)
            new_ids = w.isic_ids(n_pairs, 100000, 10_000_000)
            for src, iid in zip(srcs, new_ids):
                dup = _Rec(iid, src.label, split, f"train/{iid}.jpg", src.group, meta=dict(src.meta))
                w.copy((short, src.path), short, dup.path)
                w.planted((short, src.image_id), (short, iid))
                pairs.append((src, dup))
                split_recs.append(dup)
        recs += split_recs
    recs.sort(key=lambda r: (r.split, r.image_id))
    lesion_index = {g: i for i, g in enumerate(sorted({r.group for r in recs}))}
    patient_meta: dict[str, dict[str, str]] = {}
    for r in recs:
        p = r.meta["patient"]
        if p not in patient_meta:
            rs = w.rng(short, 5, int(p[3:]))
            patient_meta[p] = {"sex": "" if rs.random() < 0.002 else _choice(rs, _SEX),
                               "age": _age(rs, 0.002)}
        rs = w.rng(short, 6, r.group)
        r.meta.update(patient_meta[p])
        r.meta["site"] = "" if rs.random() < 0.015 else _choice(rs, _SITES_2020, [50, 26, 15, 6, 1, 0.5])
        r.meta["lesion_id"] = f"IL_{int(lesion_ids[lesion_index[r.group]]):07d}"
        r.meta["dx"] = "melanoma" if r.label else _choice(rs, _DX2020, _DX2020_P)
    train = [r for r in recs if r.split == "train"]
    test = [r for r in recs if r.split == "test"]
    _write_csv(w.out / short / "ISIC_2020_Training_GroundTruth.csv",
               ["image_name", "patient_id", "lesion_id", "sex", "age_approx",
                "anatom_site_general_challenge", "diagnosis", "benign_malignant", "target"],
               ([r.image_id, r.meta["patient"], r.meta["lesion_id"], r.meta["sex"], r.meta["age"],
                 r.meta["site"], r.meta["dx"], "malignant" if r.label else "benign", r.label]
                for r in train))
    _write_csv(w.out / short / "ISIC_2020_Training_Duplicates.csv", ["image_name_1", "image_name_2"],
               sorted([a.image_id, b.image_id] for a, b in pairs))
    _write_csv(w.out / short / "ISIC_2020_Test_Metadata.csv",
               ["image", "patient", "sex", "age_approx", "anatom_site_general"],
               ([r.image_id, r.meta["patient"], r.meta["sex"], r.meta["age"], r.meta["site"]] for r in test))
    _write_csv(w.out / short / "ISIC_2020_Test_GroundTruth_SYNTHETIC.csv", ["image_name", "target"],
               ([r.image_id, r.label] for r in test))
    w.finish(short, recs, hidden_labels=["test"])


_MEL7 = ["melanoma", "melanoma (in situ)", "melanoma (less than 0.76 mm)",
         "melanoma (0.76 to 1.5 mm)", "melanoma (more than 1.5 mm)", "melanoma metastasis"]
_NONMEL7 = ["clark nevus", "seborrheic keratosis", "blue nevus", "reed or spitz nevus",
            "dermal nevus", "basal cell carcinoma", "congenital nevus", "vascular lesion",
            "dermatofibroma", "lentigo", "combined nevus", "recurrent nevus", "miscellaneous"]
_NONMEL7_P = [40, 5, 3, 8, 3, 4, 2, 3, 2, 2, 1, 1, 1]
_DERM_FOLDERS = ["Aal", "Abl", "Acl", "Bdl", "Fbl", "Gal", "NEL", "NHL", "NML", "FEL", "FCL"]
_DERM7_COLUMNS = ["case_num", "diagnosis", "seven_point_score", "pigment_network", "streaks",
                  "pigmentation", "regression_structures", "dots_and_globules", "blue_whitish_veil",
                  "vascular_structures", "level_of_diagnostic_difficulty", "elevation", "location",
                  "sex", "management", "clinic", "derm", "case_id", "notes"]


def _derm7pt(w: _Writer) -> None:
    short = "derm7pt"
    rng = w.rng(short, 0)
    cases: list[tuple[str, int]] = []
    for split in ("train", "val", "test"):
        c = w.counts[short][split]
        cases += [(split, int(lab)) for lab in shuffled_labels(rng, c["n"], c["melanoma"])]
    order = rng.permutation(len(cases))  # meta.csv interleaves the splits
    cases = [cases[int(i)] for i in order]
    n_mel = sum(lab for _, lab in cases)
    n_melanosis = max(1, round_half_up(3 * w.scale))
    mel_dx = [_MEL7[i % len(_MEL7)] for i in range(n_mel)]
    rng.shuffle(mel_dx)
    nonmel_slots = [i for i, (_, lab) in enumerate(cases) if lab == 0]
    melanosis = set(int(i) for i in rng.choice(nonmel_slots, n_melanosis, replace=False))
    counters = {f: int(rng.integers(1, 60)) for f in _DERM_FOLDERS}
    recs: list[_Rec] = []
    clinic: list[_Rec] = []
    rows = []
    for i, (split, lab) in enumerate(cases):
        rs = w.rng(short, 5, i)
        folder = _DERM_FOLDERS[int(rs.integers(len(_DERM_FOLDERS)))]
        prefix = folder[0] + folder[1:].lower()
        n0 = counters[folder]
        counters[folder] += 2 + int(rs.integers(0, 2))
        clin, derm = f"{folder}/{prefix}{n0:03d}.jpg", f"{folder}/{prefix}{n0 + 1:03d}.jpg"
        dx = mel_dx.pop() if lab else ("melanosis" if i in melanosis else _choice(rs, _NONMEL7, _NONMEL7_P))
        m = lab
        crit = {
            "pigment_network": _choice(rs, ["absent", "typical", "atypical"], [3, 5 - 3 * m, 1 + 4 * m]),
            "streaks": _choice(rs, ["absent", "regular", "irregular"], [6, 2, 1 + 4 * m]),
            "pigmentation": _choice(rs, ["absent", "diffuse regular", "localized regular",
                                         "diffuse irregular", "localized irregular"],
                                    [4, 2, 1, 1 + 3 * m, 1 + 3 * m]),
            "regression_structures": _choice(rs, ["absent", "blue areas", "white areas",
                                                  "combinations"], [8 - 5 * m, 1, 1, 1 + 2 * m]),
            "dots_and_globules": _choice(rs, ["absent", "regular", "irregular"], [3, 3, 1 + 4 * m]),
            "blue_whitish_veil": _choice(rs, ["absent", "present"], [6, 1 + 4 * m]),
            "vascular_structures": _choice(rs, ["absent", "arborizing", "comma", "hairpin",
                                                "within regression", "wreath", "dotted",
                                                "linear irregular"], [30, 1, 1, 1, 1, 1, 1, 1 + 2 * m]),
        }
        score = (2 * (crit["pigment_network"] == "atypical") + 2 * (crit["blue_whitish_veil"] == "present")
                 + 2 * (crit["vascular_structures"] in ("dotted", "linear irregular"))
                 + (crit["streaks"] == "irregular") + (crit["pigmentation"].endswith("irregular"))
                 + (crit["dots_and_globules"] == "irregular") + (crit["regression_structures"] != "absent"))
        rows.append([i + 1, dx, score, *crit.values(),
                     _choice(rs, ["low", "medium", "high"], [4, 4, 2]),
                     _choice(rs, ["flat", "palpable", "nodular"], [5, 4, 1]),
                     _choice(rs, ["back", "lower limbs", "upper limbs", "abdomen", "chest",
                                  "head neck", "acral", "buttocks", "genital areas"]),
                     _choice(rs, _SEX), _choice(rs, ["excision", "clinical follow up",
                                                     "no further examination"], [4 + 6 * m, 3, 2]),
                     clin, derm, "", "" if rs.random() < 0.95 else "synthetic case note"])
        stem = Path(derm).stem
        recs.append(_Rec(stem, lab, split, f"release_v0/images/{derm}", group=i))
        clinic.append(_Rec(Path(clin).stem, lab, split, f"release_v0/images/{clin}", group=i))
    w.render(short, recs)
    w.render(short, clinic, style=STYLES["derm7pt_clinic"], key_offset=100_000)
    meta = w.out / short / "release_v0" / "meta"
    _write_csv(meta / "meta.csv", _DERM7_COLUMNS, rows)
    for split, name in (("train", "train"), ("val", "valid"), ("test", "test")):
        _write_csv(meta / f"{name}_indexes.csv", ["indexes"],
                   ([i] for i, (s, _) in enumerate(cases) if s == split))
    w.finish(short, recs)


_PH2_HEADER = ["Image Name", "Histological Diagnosis", "Common Nevus", "Atypical Nevus", "Melanoma",
               "Asymmetry\n(0/1/2)", "Pigment Network\n(AT/T)", "Dots/Globules\n(A/AT/T)",
               "Streaks\n(A/P)", "Regression Areas\n(A/P)", "Blue-Whitish Veil\n(A/P)",
               "White", "Red", "Light-Brown", "Dark-Brown", "Blue-Gray", "Black"]
_PH2_LEGEND = [
    ["PH² Dermoscopic Image Database (SYNTHETIC replica)"],
    [None],
    ["Legend:"],
    ["Clinical Diagnosis:", "Common Nevus; Atypical Nevus; Melanoma (an X marks the class)"],
    ["Asymmetry:", "0 - Fully Symmetric", "1 - Symmetric in 1 axe", "2 - Fully Asymmetric"],
    ["Pigment Network:", "AT - Atypical", "T - Typical"],
    ["Dots/Globules:", "A - Absent", "AT - Atypical", "T - Typical"],
    ["Streaks, Regression Areas, Blue-Whitish Veil:", "A - Absent", "P - Present"],
    ["Colors:", "an X marks each colour present"],
    [None],
    ["Histological Diagnosis: only for some lesions"],
    [None],
]
_PH2_COLOURS = ["White", "Red", "Light-Brown", "Dark-Brown", "Blue-Gray", "Black"]


def _ph2(w: _Writer) -> None:
    short = "ph2"
    rng = w.rng(short, 0)
    c = w.counts[short]["train"]
    nums = np.sort(rng.choice(np.arange(2, 438), size=c["n"], replace=False))
    labels = shuffled_labels(rng, c["n"], c["melanoma"])
    recs = []
    for num, lab in zip(nums, labels):
        iid = f"IMD{int(num):03d}"
        recs.append(_Rec(iid, int(lab), "train",
                         f"PH2 Dataset images/{iid}/{iid}_Dermoscopic_Image/{iid}.bmp"))
    views = w.render(short, recs, keep_views=True)
    rows, txt_rows = [], []
    for i, r in enumerate(recs):
        les, placement, (h, wd) = views[r.path]
        iid = r.image_id
        base = w.out / short / "PH2 Dataset images" / iid
        inside = _full(les.texture.getchannel("A"), placement, h, wd) > 127
        Image.fromarray(np.where(inside, 255, 0).astype(np.uint8)).save(
            _mk(base / f"{iid}_lesion" / f"{iid}_lesion.bmp"), "BMP")
        reg = _full(les.regions, placement, h, wd, Image.Resampling.NEAREST)
        present = [int(v) for v in np.unique(reg[inside])]
        for j, v in enumerate(present[:3]):
            Image.fromarray(np.where((reg == v) & inside, 255, 0).astype(np.uint8)).save(
                _mk(base / f"{iid}_roi" / f"{iid}_R{j + 1}_Label{v + 1}.bmp"), "BMP")
        rs = w.rng(short, 5, i)
        cls = 2 if r.label else int(rs.random() < 0.5)
        m = r.label
        colours = {"Light-Brown": rs.random() < 0.7, "Dark-Brown": rs.random() < 0.5 + 0.4 * m,
                   "Black": rs.random() < 0.1 + 0.5 * m, "Blue-Gray": rs.random() < 0.05 + 0.6 * m,
                   "Red": rs.random() < 0.05 + 0.3 * m, "White": rs.random() < 0.02 + 0.3 * m}
        if not any(colours.values()):
            colours["Light-Brown"] = True
        asym = int(rs.choice(3, p=[0.1, 0.2, 0.7] if m else [0.7, 0.2, 0.1]))
        crit = [_choice(rs, ["AT", "T"], [1 + 4 * m, 4]), _choice(rs, ["A", "AT", "T"], [3, 1 + 3 * m, 2]),
                _choice(rs, ["A", "P"], [6, 1 + 3 * m]), _choice(rs, ["A", "P"], [6, 1 + 3 * m]),
                _choice(rs, ["A", "P"], [8, 1 + 4 * m])]
        histo = ("Melanoma" if m else _choice(rs, ["", "Dermatofibroma", "Spitz nevus"], [18, 1, 1])
                 ) if rs.random() < 0.25 else ""
        rows.append([iid, histo or None, "X" if cls == 0 else None, "X" if cls == 1 else None,
                     "X" if cls == 2 else None, asym, *crit,
                     *["X" if colours[k] else None for k in _PH2_COLOURS]])
        txt_rows.append([iid, histo, str(cls), str(asym), *crit,
                         " ".join(str(_PH2_COLOURS.index(k) + 1) for k in _PH2_COLOURS if colours[k])])
    # PH2_dataset.xlsx: legend rows 0-11, header on row 12 (0-based), then the data
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = "Sheet1"
    for row in _PH2_LEGEND + [_PH2_HEADER] + rows:
        ws.append(row)
    wb.properties.creator = "SYNTHETIC"
    buf = io.BytesIO()
    wb.save(buf)
    (w.out / short / "PH2_dataset.xlsx").write_bytes(_normalise_xlsx(buf.getvalue()))
    # PH2_dataset.txt: pipe-delimited, '||' framing, fixed-width padded columns
    head = ["Name", "Histological Diagnosis", "Clinical Diagnosis", "Asymmetry", "Pigment Network",
            "Dots/Globules", "Streaks", "Regression Areas", "Blue-Whitish Veil", "Colors"]
    widths = [max(len(head[j]), *(len(t[j]) for t in txt_rows)) + 2 for j in range(len(head))]

    def line(cells: list[str]) -> str:
        return "||" + "|".join(f" {c:^{widths[j] - 2}} " for j, c in enumerate(cells)) + "||"

    text = [line(head)] + [line(t) for t in txt_rows] + [
        "", "Legend:", "Clinical Diagnosis: 0 - Common Nevus; 1 - Atypical Nevus; 2 - Melanoma",
        "Colors: 1 - White; 2 - Red; 3 - Light-Brown; 4 - Dark-Brown; 5 - Blue-Gray; 6 - Black",
        "(SYNTHETIC replica)"]
    (w.out / short / "PH2_dataset.txt").write_text("\n".join(text) + "\n", encoding="utf-8")
    w.finish(short, recs)


def _mk(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _mednode(w: _Writer) -> None:
    short = "mednode"
    rng = w.rng(short, 0)
    c = w.counts[short]["train"]
    stems = np.sort(rng.choice(np.arange(100_000, 1_200_000), size=c["n"], replace=False))
    labels = shuffled_labels(rng, c["n"], c["melanoma"])
    recs = []
    for stem, lab in zip(stems, labels):
        cls = "melanoma" if lab else "naevus"
        recs.append(_Rec(f"{cls}_{int(stem)}", int(lab), "train",
                         f"complete_mednode_dataset/{cls}/{int(stem)}.jpg"))
    w.render(short, recs)
    w.finish(short, recs)


_PAD_DX = ["BCC", "ACK", "NEV", "SEK", "SCC"]
_PAD_DX_P = [0.37, 0.32, 0.11, 0.10, 0.08]
_PAD_REGIONS = ["FACE", "FOREARM", "CHEST", "BACK", "NOSE", "ARM", "HAND", "NECK", "THIGH", "EAR",
                "LIP", "SCALP", "ABDOMEN", "FOOT"]
_PAD_COLUMNS = ["patient_id", "lesion_id", "smoke", "drink", "background_father", "background_mother",
                "age", "pesticide", "gender", "skin_cancer_history", "cancer_history",
                "has_piped_water", "has_sewage_system", "fitspatrick", "region", "diameter_1",
                "diameter_2", "diagnostic", "itch", "grew", "hurt", "changed", "bleed", "elevation",
                "img_id", "biopsed"]


def _pad_ufes_20(w: _Writer) -> None:
    short = "pad_ufes_20"
    rng = w.rng(short, 0)
    c = w.counts[short]["train"]
    # one image is a MED-NODE naevus with identical pixels under a PAD name
    donor = sorted((r for r in w.recs["mednode"] if r.label == 0), key=lambda r: r.image_id)
    donor = donor[int(rng.integers(len(donor)))]
    n = c["n"] - 1
    labels = shuffled_labels(rng, n, c["melanoma"])
    lesions = lesion_groups(rng, labels, 1.4)
    n_les = int(lesions.max()) + 1
    # patients own one or more lesions (any labels); the donor image is one more lesion
    les_patient = np.empty(n_les + 1, np.int64)
    order = rng.permutation(n_les + 1)
    p, i = 0, 0
    while i < len(order):
        k = 1 + int(rng.poisson(0.6))
        les_patient[order[i:i + k]] = p
        p += 1
        i += k
    pat_nums = 1 + w.rng(short, 4).choice(max(2000, 4 * p), size=p, replace=False)
    les_nums = 1 + w.rng(short, 7).choice(max(3500, 4 * n_les), size=n_les + 1, replace=False)
    img_nums = 1 + w.rng(short, 8).choice(max(5000, 4 * n), size=n + 1, replace=False)
    labels = np.append(labels, 0)
    lesions = np.append(lesions, n_les)
    recs = []
    for j in range(n + 1):
        g = int(lesions[j])
        stem = f"PAT_{int(pat_nums[les_patient[g]])}_{int(les_nums[g])}_{int(img_nums[j])}"
        recs.append(_Rec(stem, int(labels[j]), "train", "", g))
    donor_rec = recs[-1]
    recs.sort(key=lambda r: (int(r.image_id.split("_")[3])))
    parts = np.array_split(np.arange(len(recs)), 3)
    for k, part in enumerate(parts):
        for j in part:
            recs[int(j)].path = f"images/imgs_part_{k + 1}/{recs[int(j)].image_id}.png"
    rendered = [r for r in recs if r is not donor_rec]
    w.render(short, rendered)
    with Image.open(w.out / "mednode" / donor.path) as im:
        _save_image(w.out / short / donor_rec.path, im.convert("RGB"))
    w.planted(("mednode", donor.image_id), (short, donor_rec.image_id))
    rows = _pad_metadata_rows(w, short, recs, donor_rec)
    rows.sort(key=lambda row: (int(row[0][4:]), int(row[1]), row[24]))
    _write_csv(w.out / short / "metadata.csv", _PAD_COLUMNS, rows)
    w.finish(short, recs)


def _pad_metadata_rows(w: "_Writer", short: str, recs: list, donor_rec) -> list[list]:
    """metadata.csv rows: patient-level fields, lesion-level diagnosis, image-level id."""
    rows = []
    les_info: dict[int, dict[str, Any]] = {}
    pat_info: dict[str, dict[str, str]] = {}
    for r in recs:
        pid = "_".join(r.image_id.split("_")[:2])
        if r.group not in les_info:  # lesion-level fields (all images of a lesion agree)
            rs = w.rng(short, 5, r.group)
            dx = _choice(rs, _PAD_DX, _PAD_DX_P)
            dx = "MEL" if r.label else ("NEV" if r is donor_rec else dx)
            les_info[r.group] = {
                "dx": dx, "biopsed": dx in ("MEL", "BCC", "SCC") or rs.random() < 0.4,
                "region": _choice(rs, _PAD_REGIONS),
                "d1": _f(rs.uniform(3, 25)), "d2": _f(rs.uniform(3, 20)),
                "symptoms": [_choice(rs, ["True", "False", "UNK"], [3, 5, 1]) for _ in range(6)]}
        li = les_info[r.group]
        dx, biopsed = li["dx"], li["biopsed"]
        if pid not in pat_info:
            rp = w.rng(short, 6, int(pid[4:]))
            tf = lambda q: _choice(rp, ["True", "False"], [q, 1 - q])  # noqa: E731
            pat_info[pid] = {
                "smoke": tf(0.15), "drink": tf(0.3),
                "background_father": _choice(rp, ["POMERANIA", "GERMANY", "BRAZIL", "ITALY", "PORTUGAL",
                                                  "UNK"]),
                "background_mother": _choice(rp, ["POMERANIA", "GERMANY", "BRAZIL", "ITALY", "PORTUGAL",
                                                  "UNK"]),
                "age": str(int(rp.integers(18, 95))), "pesticide": tf(0.4),
                "gender": _choice(rp, ["MALE", "FEMALE"]), "skin_cancer_history": tf(0.45),
                "cancer_history": tf(0.5), "has_piped_water": tf(0.8), "has_sewage_system": tf(0.6),
                "fitspatrick": _choice(rp, ["1.0", "2.0", "3.0", "4.0", "5.0", "6.0"], [12, 50, 25, 8, 3, 2]),
            }
        pi = pat_info[pid]
        full = biopsed  # non-biopsied rows leave most clinical fields empty (as in the release)
        rows.append([pid, r.image_id.split("_")[2],
                     *(pi[k] if full else "" for k in ("smoke", "drink", "background_father",
                                                       "background_mother")),
                     pi["age"],
                     *(pi[k] if full else "" for k in ("pesticide", "gender", "skin_cancer_history",
                                                       "cancer_history", "has_piped_water",
                                                       "has_sewage_system", "fitspatrick")),
                     li["region"], li["d1"] if full else "", li["d2"] if full else "",
                     dx, *li["symptoms"],
                     f"{r.image_id}.png", "True" if biopsed else "False"])
    return rows


def _kaggle(w: _Writer) -> None:
    short = "kaggle"
    rng = w.rng(short, 0)
    style = STYLES[short]
    recs: list[_Rec] = []
    new: list[_Rec] = []
    for split in ("train", "test"):
        c = w.counts[short][split]
        n_mal, n_ben = c["melanoma"], c["n"] - c["melanoma"]
        dups: list[tuple[str, _Rec]] = []
        if split == "train":
            for src, key in (("isic2017", "kaggle_from_isic2017_test"),
                             ("isic2018", "kaggle_from_isic2018_test")):
                pool = [r for r in w.recs[src] if r.split == "test"]
                taken = {d.image_id for _, d in dups}
                pool = [r for r in pool if r.image_id not in taken]
                dups += [(src, r) for r in pick_records(rng, pool, n_dups(key, w.scale),
                                                 n_mal // 4, n_ben // 4)]
        hi = int(1.6 * max(n_mal, n_ben)) + 10
        ben_nums = np.sort(rng.choice(np.arange(1, hi), size=n_ben, replace=False))
        mal_nums = np.sort(rng.choice(np.arange(1, hi), size=n_mal, replace=False))
        if not set(ben_nums) & set(mal_nums):  # the same names must occur in both folders
            mal_nums[0] = ben_nums[0]
            mal_nums = np.sort(mal_nums)
        slots = {"benign": list(ben_nums), "malignant": list(mal_nums)}
        for cls in ("benign", "malignant"):
            order = rng.permutation(len(slots[cls]))
            slots[cls] = [int(slots[cls][int(i)]) for i in order]
        for src, r in dups:
            cls = "malignant" if r.label else "benign"
            num = slots[cls].pop()
            rec = _Rec(f"{split}_{cls}_{num}", r.label, split, f"{split}/{cls}/{num}.jpg")
            with Image.open(w.out / src / r.path) as im:
                small = im.convert("RGB").resize((224, 224), Image.Resampling.LANCZOS)
            q = int(w.rng(short, 3, int(r.image_id[5:])).integers(*style.quality))
            _save_image(w.out / short / rec.path, small, q)
            w.planted((src, r.image_id), (short, rec.image_id), resized=True)
            recs.append(rec)
        for cls, lab in (("benign", 0), ("malignant", 1)):
            for num in sorted(slots[cls]):
                rec = _Rec(f"{split}_{cls}_{num}", lab, split, f"{split}/{cls}/{num}.jpg")
                recs.append(rec)
                new.append(rec)
    w.render(short, new, size=(224, 224))
    w.finish(short, recs)


def _ham10000(w: _Writer) -> None:
    short = "ham10000"
    train = sorted((r for r in w.recs["isic2018"] if r.split == "train"), key=lambda r: r.image_id)
    half = (len(train) + 1) // 2
    recs = []
    for i, r in enumerate(train):
        part = 1 if i < half else 2
        rec = _Rec(r.image_id, r.label, "train", f"HAM10000_images_part_{part}/{r.image_id}.jpg",
                   meta=r.meta)
        w.copy(("isic2018", r.path), short, rec.path)
        w.planted(("isic2018", r.image_id), (short, r.image_id))
        recs.append(rec)
    rows = sorted(([r.meta["lesion_id"], r.image_id, r.meta["dx"].lower(), r.meta["dx_type"],
                    r.meta["age"], r.meta["sex"], r.meta["localization"]] for r in recs),
                  key=lambda row: (row[0], row[1]))
    _write_csv(w.out / short / "HAM10000_metadata.csv",
               ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"], rows)
    w.finish(short, recs)


_WRITERS: dict[str, Callable[[_Writer], None]] = {
    "isic2016": _isic2016, "isic2017": _isic2017, "isic2018": _isic2018, "isic2019": _isic2019,
    "isic2020": _isic2020, "derm7pt": _derm7pt, "ph2": _ph2, "mednode": _mednode,
    "pad_ufes_20": _pad_ufes_20, "kaggle": _kaggle, "ham10000": _ham10000,
}


class _one_blas_thread:
    """Context manager limiting BLAS to one thread (a no-op without threadpoolctl)."""

    def __enter__(self):
        self._ctx = threadpool_limits(limits=1, user_api="blas") if threadpool_limits else None
        return self

    def __exit__(self, *exc):
        if self._ctx is not None:
            self._ctx.unregister()
        return False


def write_replicas(out_dir: str | Path, scale: float = 1.0, seed: int = 0,
                   only: list[str] | None = None, progress: bool = False) -> dict[str, Any]:
    """Write SYNTHETIC miniature copies of all eleven releases in their official layouts.

    Parameters
    ----------
    out_dir : str or Path
        Target folder; each release goes to ``out_dir/<short>/`` (existing replica folders are
        replaced, other content of ``out_dir`` is left alone).
    scale : float
        Multiplier on every count (:data:`BASE_COUNTS`); each class keeps at least
        :data:`MIN_PER_CLASS` images per split. ``1.0`` writes about 2,000 images.
    seed : int
        Seed of everything drawn; the same seed gives byte-identical files.
    only : list of str, optional
        Write just these releases (short names). A release whose planted copies come from
        another release (e.g. Kaggle from ISIC 2017) needs that release in the list too; a
        ``ValueError`` names it.
    progress : bool
        A progress bar over the releases (tqdm: a widget in Jupyter, text elsewhere).

    Returns
    -------
    dict
        ``{"out_dir", "seed", "scale", "seconds", "n_images", "n_files", "n_rendered",
        "n_planted_pairs", "counts": {short: {split: {"n", "melanoma"}}}}``.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    w = _Writer(out, float(scale), int(seed))
    if only is not None:
        unknown = sorted(set(only) - set(DATASETS))
        if unknown:
            raise ValueError(f"only: unknown release(s) {unknown}; valid: {list(DATASETS)}")
    todo = [s for s in DATASETS if only is None or s in only]
    for short in todo:  # never delete anything but an earlier replica
        target = out / short
        if target.exists() and any(target.iterdir()) and not (target / "SYNTHETIC.json").exists():
            raise FileExistsError(f"{target} exists and is not a synthetic replica "
                                  "(no SYNTHETIC.json); refusing to overwrite it")
    from tqdm.auto import tqdm

    with _one_blas_thread():
        for short in tqdm(todo, desc="SYNTHETIC replicas", unit="release", disable=not progress):
            target = out / short
            if target.exists():
                shutil.rmtree(target)
            target.mkdir(parents=True)
            # a marker first, so that an interrupted run can be overwritten by the next one
            (target / "SYNTHETIC.json").write_text(
                json.dumps({"synthetic": True, "generator": GENERATOR, "complete": False}) + "\n",
                encoding="utf-8")
            try:
                _WRITERS[short](w)
            except KeyError as e:
                raise ValueError(f"only: the {short} replica copies images of {e.args[0]}; "
                                 f"add {e.args[0]!r} to only") from None
    pairs = planted_pairs(w.edges, w.resized)
    _write_csv(out / "PLANTED_DUPLICATES.csv",
               ["kind", "dataset_a", "image_id_a", "dataset_b", "image_id_b"], pairs)
    counts = {s: {sp: dict(c) for sp, c in json.loads(
        (out / s / "SYNTHETIC.json").read_text())["counts"].items()} for s in todo}
    n_files = sum(1 for s in todo for p in (out / s).rglob("*") if p.is_file())
    return {"out_dir": str(out), "seed": int(seed), "scale": float(scale),
            "seconds": round(time.perf_counter() - t0, 3),
            "n_images": sum(len(v) for v in w.recs.values()), "n_files": n_files,
            "n_rendered": w.n_rendered, "n_planted_pairs": len(pairs), "counts": counts}


def main(argv: list[str] | None = None) -> int:
    """``python -m melanoma.data.synthetic OUT [--scale S] [--seed N]``."""
    import argparse

    ap = argparse.ArgumentParser(description="Write SYNTHETIC replicas of the 11 releases.")
    ap.add_argument("out_dir")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    s = write_replicas(a.out_dir, a.scale, a.seed)
    print(json.dumps({k: v for k, v in s.items() if k != "counts"}, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

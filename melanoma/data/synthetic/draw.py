"""Drawing one SYNTHETIC lesion (:func:`draw_lesion`) and one photograph of it in the look of a
release (:func:`render_view`, :data:`STYLES`).

Every random draw comes from the :class:`numpy.random.Generator` the caller passes in, so a
lesion and its view are the same for the same generator state; there are no per-pixel loops
(smooth random fields are small matrix products, strokes and resizing are PIL's).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

try:  # the matrix products here are tiny: BLAS threads only add overhead (and spin)
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
    threadpool_limits = None

from melanoma.data.synthetic.plan import round_half_up

AMBIGUOUS_FRACTION = 0.15
LABEL_NOISE = 0.05

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
    """One drawn lesion: its look in its own frame, rendered into images by :func:`render_view`.

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


def _outline(rng: np.random.Generator, m: float, U: np.ndarray, V: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The lesion's shape on the texture grid ``U, V``: elongation, low harmonics (asymmetry)
    and high harmonics (ragged border), more of each for a larger malignant look ``m``.

    Returns the distance of each pixel from the centre in the lesion's elongated frame, the
    border radius in that pixel's direction and the soft-edged coverage (alpha, 0..1)."""
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
    return d, r, alpha


def _colours(rng: np.random.Generator, m: float, U: np.ndarray, V: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A brown base plus extra colours (more of them, and placed asymmetrically, for a larger
    malignant look ``m``).

    Returns the colour per texture pixel (RGB, 0..1), the weight of each colour per pixel
    (shape ``(k, 128, 128)``) and the colour names (``"base"``, then keys of :data:`PALETTE`)."""
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
    return col, W, names


def _marks(rng: np.random.Generator, m: float, U: np.ndarray, V: np.ndarray, d: np.ndarray,
           r: np.ndarray, col: np.ndarray) -> np.ndarray:
    """``col`` with a darker centre (symmetric for benign, eccentric for malignant looks), a
    pigment network and dark dots inside the border."""
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
    return col


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
    d, r, alpha = _outline(rng, m, U, V)
    col, W, names = _colours(rng, m, U, V)
    col = _marks(rng, m, U, V, d, r, col)

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


def full_frame(im: Image.Image, placement: tuple[int, int, int, int], h: int, w: int,
               resample: Image.Resampling = Image.Resampling.BILINEAR) -> np.ndarray:
    """A lesion-frame image (alpha mask, colour regions) turned, scaled and placed as in
    ``placement`` (from :func:`render_view`): a full ``h x w`` array, zeros outside the lesion."""
    part, (rows, cols) = _place(im, placement, h, w, resample)
    out = np.zeros((h, w) + part.shape[2:], part.dtype)
    out[rows, cols] = part
    return out


def render_view(lesion: Lesion, style: Style, rng: np.random.Generator,
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
        ``(op, side, top, left)`` for :func:`full_frame` (to warp masks the same way).
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
    with one_blas_thread():
        lesion = draw_lesion(np.random.default_rng([seed, 0]), label)
        return render_view(lesion, STYLES[style], np.random.default_rng([seed, 1]))[0]


class one_blas_thread:
    """Context manager limiting BLAS to one thread (a no-op without threadpoolctl)."""

    def __enter__(self):
        self._ctx = threadpool_limits(limits=1, user_api="blas") if threadpool_limits else None
        return self

    def __exit__(self, *exc):
        if self._ctx is not None:
            self._ctx.unregister()
        return False


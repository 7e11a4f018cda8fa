"""Images resident in (device) memory, and the paper's augmentation as batched tensor ops.

The paper-faithful mode (``freeze="conv"``: BatchNorm and head train, online augmentation) cannot
use the feature cache: the network runs every step. Its per-image data path (decode the cache
entry, seven torchvision ops per image on one CPU thread, copy to the device) then bounds a GPU.
With ``TrainParams.loader="resident"`` the trainer instead keeps every image it needs in memory —
on the GPU when it has one — and augments whole batches there:

* :class:`TrainPool` — training images as they are in the image cache (shorter side
  ``cache_size``), one zero-padded uint8 tensor (N, 3, Hmax, Wmax) plus each image's (H, W);
* :class:`EvalPool` — validation/evaluation images after the evaluation geometry
  (:func:`~melanoma.train.transforms.eval_crop`), uint8 (N, 3, size, size): exactly the pixels the
  DataLoader path feeds the network, before normalisation;
* :func:`augment` — RandomResizedCrop(scale 0.4–1, ratio 3/4–4/3) → RandomAffine(±90°, scale
  0.8–1.2, fill 0) → horizontal / vertical flip → ColorJitter(0.7–1.3 ×3, hue ±0.1, in a random
  order per image) → normalise. Crop, rotation, scale and flips are composed into one affine map and
  applied with one ``grid_sample`` per batch; pixels outside the rotated crop are zero, as
  RandomAffine fills them.

Parameters are drawn the way torchvision draws them (per image, ten tries for the crop, then the
centre-crop fallback) from an explicit ``torch.Generator``, so a run's augmentation depends on its
own seed only — not on what else shares the device (see :mod:`melanoma.train.sharedpass`).

Differences from torchvision's per-image pipeline, by design (``tests/train/test_resident.py`` pins the
rest to torchvision's own functional ops): one bilinear resampling instead of two (crop-resize,
then a nearest-neighbour rotation), no antialiasing when the crop is larger than the output (up to
~1.5× for a full-width crop of a 4:3 cache image at 224 px; torchvision's resize antialiases), and
float arithmetic throughout (torchvision rounds to uint8 after every op on uint8 images).
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from melanoma.data.cache import ImageCache
from melanoma.train.transforms import IMAGENET_MEAN, IMAGENET_STD, PAPER_AUG, eval_crop

GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


class ResidentMemoryError(MemoryError):
    pass


def available_bytes(device: torch.device) -> int:
    """Free memory on ``device`` (CUDA: ``mem_get_info``; otherwise the host's MemAvailable)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX: do not block
        return 1 << 62


def check_fits(nbytes: int, device: torch.device, what: str, share: float = 0.5) -> None:
    """Refuse (clearly) to hold ``nbytes`` of images when that exceeds ``share`` of the free memory:
    the rest is for the model, its activations, gradients and optimiser state."""
    device = torch.device(device)
    free = available_bytes(device)
    if nbytes > share * free:
        raise ResidentMemoryError(
            f"{what} needs {nbytes / 2**30:.2f} GiB, more than {share:.0%} of the "
            f"{free / 2**30:.2f} GiB free on {device}; use loader='dataloader' (images streamed "
            f"from the cache), a smaller group or a smaller cache_size")


def _shapes(keys: list[str], cache: ImageCache) -> np.ndarray:
    shapes = [np.load(cache.path(k), mmap_mode="r").shape if k in cache else None for k in keys]
    missing = [k for k, s in zip(keys, shapes) if s is None]
    if missing:
        raise KeyError(f"{len(missing)} image(s) are not in the cache {cache.dir} (first: "
                       f"{missing[0]}); run `melanoma ingest` first")
    return np.array([s[:2] for s in shapes], dtype=np.int64).reshape(-1, 2)


def pool_bytes(train_keys, eval_keys, cache: ImageCache, size: int) -> int:
    """What :class:`TrainPool` (``train_keys``) and :class:`EvalPool` (``eval_keys``) will hold."""
    tk, ek = list(dict.fromkeys(train_keys)), list(dict.fromkeys(eval_keys))
    hw = _shapes(tk, cache) if tk else np.zeros((0, 2), np.int64)
    train = len(tk) * 3 * int(hw[:, 0].max()) * int(hw[:, 1].max()) if len(hw) else 0
    return train + len(ek) * 3 * size * size


# ------------------------------------------------------------------------------------- pools

class TrainPool:
    """Cache images, zero-padded into one uint8 (N, 3, Hmax, Wmax) tensor on ``device``."""

    def __init__(self, keys, cache: ImageCache, device: torch.device | str = "cpu", *, check: bool = True):
        self.keys = list(dict.fromkeys(keys))  # unique, in first-seen order
        self.index = {k: i for i, k in enumerate(self.keys)}
        self.device = torch.device(device)
        hw = _shapes(self.keys, cache)
        self.hmax, self.wmax = (int(hw[:, 0].max()), int(hw[:, 1].max())) if len(hw) else (1, 1)
        self.nbytes = len(self.keys) * 3 * self.hmax * self.wmax
        if check:  # (train_resident checks both pools at once instead)
            check_fits(self.nbytes, self.device, f"the resident training pool ({len(self.keys)} images, "
                                                 f"padded to {self.hmax}×{self.wmax})")
        host = torch.zeros((len(self.keys), 3, self.hmax, self.wmax), dtype=torch.uint8)
        for i, k in enumerate(self.keys):
            a = torch.from_numpy(np.ascontiguousarray(cache.get(k))).permute(2, 0, 1)
            host[i, :, :a.shape[1], :a.shape[2]] = a
        self.images = host.to(self.device)
        self.sizes = torch.from_numpy(hw)  # (N, 2) = (H, W), on the host (parameters are drawn there)

    def rows(self, keys) -> torch.Tensor:
        return torch.tensor([self.index[k] for k in keys], dtype=torch.long)


class EvalPool:
    """Evaluation pixels (Resize(resize) + CenterCrop(size), uint8 (N, 3, size, size)) on ``device``."""

    def __init__(self, keys, cache: ImageCache, size: int, resize: int,
                 device: torch.device | str = "cpu", *, check: bool = True):
        self.keys = list(dict.fromkeys(keys))
        self.index = {k: i for i, k in enumerate(self.keys)}
        self.device = torch.device(device)
        self.nbytes = len(self.keys) * 3 * size * size
        if check:
            check_fits(self.nbytes, self.device, f"the resident evaluation pool ({len(self.keys)} images)")
        geom = eval_crop(size, resize)
        host = torch.empty((len(self.keys), 3, size, size), dtype=torch.uint8)
        for i, k in enumerate(self.keys):
            host[i] = geom(cache.get(k)).as_subclass(torch.Tensor)
        self.images = host.to(self.device)

    def rows(self, keys) -> torch.Tensor:
        return torch.tensor([self.index[k] for k in keys], dtype=torch.long)


@functools.lru_cache(maxsize=16)
def _stats(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std as (1, 3, 1, 1) float32 on ``device``, made once (a copy to a GPU waits on it)."""
    return (torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1),
            torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1))


def normalise(x_u8: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 (B, 3, H, W) → float32 ((x / 255) − mean) / std, as ToDtype(scale) + Normalize."""
    m, s = _stats(tuple(mean), tuple(std), x_u8.device)
    return (x_u8.float() / 255.0 - m) / s


# ------------------------------------------------------------------------------ augmentation

@dataclass(frozen=True)
class AugSpec:
    scale: tuple = PAPER_AUG["scale"]
    ratio: tuple = PAPER_AUG["ratio"]
    degrees: float = PAPER_AUG["degrees"]
    affine_scale: tuple = PAPER_AUG["affine_scale"]
    jitter: tuple = PAPER_AUG["jitter"]
    hue: float = PAPER_AUG["hue"]


@dataclass
class AugParams:
    """One batch's augmentation parameters, one entry per image (host tensors)."""
    top: torch.Tensor
    left: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor
    angle: torch.Tensor          # degrees
    scale: torch.Tensor
    hflip: torch.Tensor          # bool
    vflip: torch.Tensor          # bool
    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor
    order: torch.Tensor = field(default=None)  # (B, 4) permutation of (brightness, contrast, saturation, hue)

    _FLOATS = ("top", "left", "height", "width", "angle", "scale", "hflip", "vflip", "brightness",
               "contrast", "saturation", "hue")

    def to(self, device: torch.device, *, pack: bool | None = None) -> "AugParams":
        """The same parameters on ``device`` (float32), sent in ONE copy: each blocking copy to a GPU
        waits for it, so a dozen small ones per batch would stall every step. On the CPU they stay
        as they are (``pack=True`` packs anyway: tests)."""
        device = torch.device(device)
        if not (device.type != "cpu" if pack is None else pack):
            return self
        packed = torch.cat([torch.stack([getattr(self, n).to(torch.float64) for n in self._FLOATS], 1),
                            self.order.to(torch.float64)], 1).to(device, torch.float32)
        cols = dict(zip(self._FLOATS, packed.unbind(1)))
        cols["hflip"], cols["vflip"] = cols["hflip"] > 0.5, cols["vflip"] > 0.5
        return AugParams(**cols, order=packed[:, len(self._FLOATS):].long())


def _uniform(gen: torch.Generator, shape, lo: float, hi: float) -> torch.Tensor:
    return torch.empty(shape, dtype=torch.float64).uniform_(lo, hi, generator=gen)


def sample_params(sizes: torch.Tensor, gen: torch.Generator, spec: AugSpec = AugSpec()) -> AugParams:
    """Draw per-image parameters for images of ``sizes`` (B, 2) = (H, W), as torchvision does."""
    b = len(sizes)
    H, W = sizes[:, 0].to(torch.float64), sizes[:, 1].to(torch.float64)
    # RandomResizedCrop: ten tries of (area, log-ratio); the first that fits, else the centre fallback
    area = (H * W)[:, None] * _uniform(gen, (b, 10), *spec.scale)
    ratio = torch.exp(_uniform(gen, (b, 10), math.log(spec.ratio[0]), math.log(spec.ratio[1])))
    w = torch.round(torch.sqrt(area * ratio))
    h = torch.round(torch.sqrt(area / ratio))
    ok = (w > 0) & (w <= W[:, None]) & (h > 0) & (h <= H[:, None])
    first = torch.where(ok.any(1), ok.to(torch.int8).argmax(1), torch.full((b,), -1))
    rows = torch.arange(b)
    hh, ww = h[rows, first.clamp(min=0)], w[rows, first.clamp(min=0)]
    in_ratio = W / H
    fb_w = torch.where(in_ratio < spec.ratio[0], W, torch.where(in_ratio > spec.ratio[1],
                       torch.round(H * spec.ratio[1]), W))
    fb_h = torch.where(in_ratio < spec.ratio[0], torch.round(W / spec.ratio[0]), H)
    hit = first >= 0
    hh, ww = torch.where(hit, hh, fb_h), torch.where(hit, ww, fb_w)
    u_i, u_j = _uniform(gen, (b,), 0, 1), _uniform(gen, (b,), 0, 1)
    top = torch.where(hit, torch.floor(u_i * (H - hh + 1)), torch.floor((H - hh) / 2))
    left = torch.where(hit, torch.floor(u_j * (W - ww + 1)), torch.floor((W - ww) / 2))
    j = spec.jitter
    return AugParams(
        top=top, left=left, height=hh, width=ww,
        angle=_uniform(gen, (b,), -spec.degrees, spec.degrees),
        scale=_uniform(gen, (b,), *spec.affine_scale),
        hflip=_uniform(gen, (b,), 0, 1) < 0.5, vflip=_uniform(gen, (b,), 0, 1) < 0.5,
        brightness=_uniform(gen, (b,), *j), contrast=_uniform(gen, (b,), *j),
        saturation=_uniform(gen, (b,), *j), hue=_uniform(gen, (b,), -spec.hue, spec.hue),
        order=torch.argsort(torch.rand((b, 4), generator=gen), dim=1))


def geometry(x: torch.Tensor, prm: AugParams, size: int) -> torch.Tensor:
    """Crop (``top, left, height, width``) → resize to ``size`` → rotate/scale about the centre
    (fill 0) → flips, for a float batch ``x`` (B, 3, Hmax, Wmax), in one ``grid_sample``."""
    dev, f32 = x.device, torch.float32
    hmax, wmax = x.shape[2], x.shape[3]

    def d(v: torch.Tensor) -> torch.Tensor:  # per-image value → (B, 1, 1) on the device
        return v.to(dev, f32 if v.is_floating_point() else v.dtype)[:, None, None]

    c = (torch.arange(size, dtype=f32, device=dev) + 0.5) / size * 2 - 1  # output pixel centres
    yo, xo = torch.meshgrid(c, c, indexing="ij")
    xa = torch.where(d(prm.hflip), -xo, xo)
    ya = torch.where(d(prm.vflip), -yo, yo)
    # RandomAffine's output p = c + s·R(a)(q − c), inverted (torchvision's angle is clockwise on screen)
    a = -torch.deg2rad(prm.angle)
    cos, sin, s = d(torch.cos(a)), d(torch.sin(a)), d(prm.scale)
    xc = (cos * xa - sin * ya) / s
    yc = (sin * xa + cos * ya) / s
    inside = (xc.abs() <= 1) & (yc.abs() <= 1)
    t, l_, h, w = d(prm.top), d(prm.left), d(prm.height), d(prm.width)
    # crop coordinates → source pixels, clamped to the crop's edge pixels (the resize replicates them)
    px = torch.minimum(torch.maximum(l_ + (xc + 1) / 2 * w, l_ + 0.5), l_ + w - 0.5)
    py = torch.minimum(torch.maximum(t + (yc + 1) / 2 * h, t + 0.5), t + h - 0.5)
    grid = torch.stack([2 * px / wmax - 1, 2 * py / hmax - 1], dim=-1)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out * inside[:, None].to(out.dtype)


def _blend(a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (f * a + (1 - f) * b).clamp(0, 1)


def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (GRAY[0] * r + GRAY[1] * g + GRAY[2] * b).unsqueeze(1)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    crd = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / crd, (maxc - g) / crd, (maxc - b) / crd
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack((h, s, maxc), 1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """HSV → RGB as c = v − v·s·clamp(min(k, 4 − k), 0, 1), k = (n + 6h) mod 6, n = 5, 3, 1."""
    h, s, v = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    n = torch.tensor([5.0, 3.0, 1.0], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    k = torch.remainder(n + 6.0 * h, 6.0)
    return v - v * s * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


def _adjust(op: int, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    f = f.to(x.device, x.dtype).view(-1, 1, 1, 1)
    if op == 0:  # brightness
        return _blend(x, torch.zeros_like(x), f)
    if op == 1:  # contrast: blend with the mean grey level of each image
        return _blend(x, _gray(x).mean(dim=(1, 2, 3), keepdim=True), f)
    if op == 2:  # saturation
        return _blend(x, _gray(x), f)
    hsv = _rgb_to_hsv(x)  # hue: rotate H
    h = torch.remainder(hsv[:, 0] + f.view(-1, 1, 1), 1.0)
    return _hsv_to_rgb(torch.stack((h, hsv[:, 1], hsv[:, 2]), 1))


def color_jitter(x: torch.Tensor, prm: AugParams, prm_dev: AugParams | None = None) -> torch.Tensor:
    """Brightness, contrast, saturation and hue with per-image factors, in a per-image order.

    ``prm`` on the host decides which images take which op at each stage (no device sync);
    ``prm_dev`` (``prm.to(x.device)``, default ``prm``) supplies the factors on the device."""
    dev_prm = prm if prm_dev is None else prm_dev
    factors = (dev_prm.brightness, dev_prm.contrast, dev_prm.saturation, dev_prm.hue)
    steps = [(op, idx) for stage in range(4) for op in range(4)
             for idx in [torch.nonzero(prm.order[:, stage] == op).squeeze(1)] if len(idx)]
    if not steps:
        return x
    all_idx = torch.cat([idx for _, idx in steps]).to(x.device)  # one copy for all 16 selections
    for (op, _), dev_idx in zip(steps, all_idx.split([len(idx) for _, idx in steps])):
        x[dev_idx] = _adjust(op, x[dev_idx], factors[op].to(x.device)[dev_idx])
    return x


def augment(pool: TrainPool, rows: torch.Tensor, gen: torch.Generator, size: int, *,
            mean=IMAGENET_MEAN, std=IMAGENET_STD, spec: AugSpec = AugSpec()) -> torch.Tensor:
    """The paper's augmentation of pool images ``rows`` → normalised float32 (B, 3, size, size)."""
    prm = sample_params(pool.sizes[rows], gen, spec)
    prm_dev = prm.to(pool.device)
    x = pool.images[rows.to(pool.device)].float()
    x = color_jitter(geometry(x, prm_dev, size).div_(255.0), prm, prm_dev)  # scale the (smaller) output
    m, s = _stats(tuple(mean), tuple(std), x.device)
    return (x - m) / s

"""The paper's augmentation and the evaluation transform (cf. torchvision references' presets.py).

Both take what the image cache stores — a uint8 (H, W, 3) numpy array — or a uint8 (3, H, W)
tensor, and return a normalised float32 (3, size, size) tensor. They run torchvision.transforms.v2
on tensors (no PIL round trip). Randomness comes from torch's global generator, so
``torch.manual_seed(s)`` (per DataLoader worker: torch seeds each worker) makes augmentation
reproducible. Pass the model's own normalisation: ``model_config(name).mean`` / ``.std``.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: The paper's augmentation parameters — shared by :func:`train_transform` (per image, torchvision)
#: and :mod:`melanoma.train.resident` (whole batches on the device).
PAPER_AUG = dict(scale=(0.4, 1.0), ratio=(3 / 4, 4 / 3), degrees=90.0, affine_scale=(0.8, 1.2),
                 jitter=(0.7, 1.3), hue=0.1)


def to_image(img: np.ndarray | torch.Tensor) -> tv_tensors.Image:
    """uint8 (H, W, 3) array or uint8 (3, H, W) tensor → uint8 (3, H, W) ``tv_tensors.Image``."""
    if isinstance(img, np.ndarray):
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"expected a uint8 (H, W, 3) array, got {img.dtype} {img.shape}")
        img = torch.tensor(img).permute(2, 0, 1)  # a copy: cache arrays may be read-only
    elif isinstance(img, torch.Tensor):
        if img.dtype != torch.uint8 or img.ndim != 3 or img.shape[0] != 3:
            raise ValueError(f"expected a uint8 (3, H, W) tensor, got {img.dtype} {tuple(img.shape)}")
    else:
        raise TypeError(f"expected a numpy array or a torch tensor, got {type(img).__name__}")
    return tv_tensors.Image(img)


def _normalise(mean, std) -> list:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std)),
            v2.ToPureTensor()]


def train_transform(size: int = 224, *, scale=PAPER_AUG["scale"], ratio=PAPER_AUG["ratio"],
                    degrees: float = PAPER_AUG["degrees"], affine_scale=PAPER_AUG["affine_scale"],
                    jitter=PAPER_AUG["jitter"], hue: float = PAPER_AUG["hue"],
                    mean=IMAGENET_MEAN, std=IMAGENET_STD) -> v2.Compose:
    """The paper's augmentation: random crop, rotation/scale, flips, colour jitter, normalise."""
    return v2.Compose([
        to_image,
        v2.RandomResizedCrop(size, scale=scale, ratio=ratio, antialias=True),
        v2.RandomAffine(degrees=degrees, scale=affine_scale),
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=hue),
        *_normalise(mean, std),
    ])


def eval_crop(size: int = 224, resize: int = 256) -> v2.Compose:
    """The evaluation geometry alone: Resize(resize) (shorter side) + CenterCrop(size), uint8 out."""
    return v2.Compose([to_image, v2.Resize(resize, antialias=True), v2.CenterCrop(size)])


def eval_transform(size: int = 224, resize: int = 256, *, mean=IMAGENET_MEAN,
                   std=IMAGENET_STD) -> v2.Compose:
    """Resize(resize) (shorter side) + CenterCrop(size) + normalise; deterministic."""
    return v2.Compose([eval_crop(size, resize), *_normalise(mean, std)])

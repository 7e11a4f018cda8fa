"""The training images as a torch Dataset, read from the image cache.

:class:`CachedImages` yields (tensor, label) for cached, pre-resized images; with a seed, each item's
augmentation is drawn under its own seed (:func:`item_seed`), so DataLoader workers never change
results. :func:`single_thread` runs tiny per-image ops with one intra-op thread.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager

import numpy as np
import torch

from melanoma.data.cache import ImageCache


@contextmanager
def single_thread():
    """Run tiny torch ops with one intra-op thread (see :class:`CachedImages`); restores after."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class CachedImages(torch.utils.data.Dataset):
    """Images from the pre-resized cache, transformed; yields (tensor, label).

    The per-image transform runs with ONE intra-op thread: its ops are tiny, and letting torch
    split them over the cores made augmentation 6–20× slower on 2 busy CPU cores (measured:
    ~450 img/s with one thread vs 21–71 img/s with two, 64 px, the paper's augmentation;
    ``benchmarks/RESULTS.md``). The network's forward/backward keeps every thread.

    With ``seed`` (a random transform), item ``(position, index)`` — or ``index`` — is transformed
    under its own torch seed ``(seed, position)`` in a forked RNG: the augmentation an image gets
    depends on the seed and its place in the epoch only, never on how many DataLoader workers
    there are or which one drew it, and the caller's RNG stream (dropout) is left untouched.
    Measured without it: workers 0 vs 2 changed predictions by up to 1e-3 (README, "workers").
    """

    def __init__(self, keys, labels, cache: ImageCache, transform, seed: int | None = None):
        self.keys = list(keys)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.cache = cache
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, item):
        pos, i = item if isinstance(item, tuple) else (item, item)
        img = self.cache.get(self.keys[i])
        with single_thread():
            if self.seed is None:
                return self.transform(img), int(self.labels[i])
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(item_seed(self.seed, pos))
                return self.transform(img), int(self.labels[i])


def item_seed(seed: int, position: int) -> int:
    """The torch seed of the ``position``-th image of a random pass seeded ``seed``."""
    return int(hashlib.sha256(f"item:{seed}:{position}".encode()).hexdigest()[:15], 16)

"""Pre-resized image store: decode each image once, read it fast every epoch after.

Layout: ``<root>/s<shorter>/<key[:2]>/<key>.npy`` — one uncompressed ``uint8`` (H, W, 3) array per
image, shorter side resized to ``shorter`` (default 256), keyed by the file's content hash. Keyed
by content, a re-ingest (or another dataset holding the same file) finds the entry already there,
so ingest is incremental and shared across datasets. ``.npy`` reads are a ``memcpy`` (no JPEG/BMP
decode); ``benchmarks/`` measures the ratio against decoding the originals.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from melanoma.io import atomic_path


class ImageCache:
    def __init__(self, root: str | Path, shorter: int = 256):
        if shorter < 16:
            raise ValueError(f"cache shorter side must be >= 16, got {shorter}")
        self.root = Path(root)
        self.shorter = int(shorter)
        self.dir = self.root / f"s{self.shorter}"

    def path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.npy"

    def __contains__(self, key: str) -> bool:
        return self.path(key).is_file()

    def put(self, key: str, rgb: np.ndarray) -> Path:
        """Store ``rgb`` (already resized by the caller) atomically; a no-op if present."""
        p = self.path(key)
        if p.is_file():
            return p
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"cache entries are uint8 (H, W, 3); got {rgb.dtype} {rgb.shape}")
        with atomic_path(p) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(rgb), allow_pickle=False)
        return p

    def get(self, key: str) -> np.ndarray:
        p = self.path(key)
        if not p.is_file():
            raise KeyError(f"image {key} is not in the cache {self.dir}; run `melanoma ingest` first")
        return np.load(p, allow_pickle=False)

    def get_many(self, keys) -> list[np.ndarray]:
        return [self.get(k) for k in keys]

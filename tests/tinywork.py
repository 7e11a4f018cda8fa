"""A tiny hand-made work folder for the data and training unit tests: manifests and an image cache
made in about a second from generated images, with duplicates planted where a test wants them.

Each image is a smooth random colour field (a 6×6 grid of random colours, upsampled): distinct
seeds give distinct perceptual hashes (seeds 0–299: at least 12 bits of pHash apart), and
:func:`near_copy` of one stays within the near-duplicate distances of :mod:`melanoma.data.dedup` for
all of those seeds but 39 and 238. The hashes are computed with the same functions ingest
uses (:mod:`melanoma.data.images`), so a manifest written here is what ingest would write for
these pixels.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from melanoma.data.cache import ImageCache
from melanoma.data.images import difference_hash, file_hash, perceptual_hash, pixel_hash, resize_shorter
from melanoma.data.manifest import MANIFEST_COLUMNS
from melanoma.data.registry import get

#: Shorter side of the tiny cache (TrainParams.cache_size of the tests that train on it).
CACHE = 32


def blob(seed: int, h: int = 40, w: int = 48) -> np.ndarray:
    """A smooth random uint8 (h, w, 3) image, one per seed."""
    rng = np.random.default_rng([7, seed])
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))


def near_copy(rgb: np.ndarray) -> np.ndarray:
    """``rgb`` resized to 3/4 and re-encoded as JPEG (quality 90): a near duplicate, other pixels."""
    h, w = rgb.shape[:2]
    b = io.BytesIO()
    Image.fromarray(rgb).resize((w * 3 // 4, h * 3 // 4), Image.BICUBIC).save(b, "JPEG", quality=90)
    return np.asarray(Image.open(b).convert("RGB"))


def png(rgb: np.ndarray) -> bytes:
    b = io.BytesIO()
    Image.fromarray(rgb).save(b, "PNG")
    return b.getvalue()


def row(dataset: str, image_id: str, split: str, label: int, rgb: np.ndarray, *, patient_id: str = "",
        lesion_id: str = "", release_split: str | None = None) -> dict:
    """One manifest row for ``rgb``, hashed as ingest hashes a PNG file of it."""
    info = get(dataset)
    return {"dataset": info.short, "letter": info.letter or "", "image_id": image_id,
            "path": f"{image_id}.png", "label": int(label), "diagnosis": "melanoma" if label == 1 else "nevus",
            "split": split, "release_split": split if release_split is None else release_split,
            "patient_id": patient_id, "lesion_id": lesion_id, "width": rgb.shape[1], "height": rgb.shape[0],
            "content_hash": file_hash(png(rgb)), "pixel_hash": pixel_hash(rgb),
            "phash": perceptual_hash(rgb), "dhash": difference_hash(rgb), "synthetic": True}


def write_release(work: str | Path, rows: list[dict], images: list[np.ndarray], cache: int = CACHE) -> pd.DataFrame:
    """Write ``WORK/<dataset>/manifest.parquet`` for ``rows`` and cache their ``images``."""
    work = Path(work)
    c = ImageCache(work / "cache", cache)
    for r, rgb in zip(rows, images):
        c.put(r["content_hash"], resize_shorter(rgb, cache))
    m = pd.DataFrame(rows)[MANIFEST_COLUMNS]
    (work / rows[0]["dataset"]).mkdir(parents=True, exist_ok=True)
    m.to_parquet(work / rows[0]["dataset"] / "manifest.parquet", index=False)
    return m


def release(work, dataset: str, splits: dict[str, tuple[int, int]], *, seed: int, ids: str,
            extra: list[tuple[dict, np.ndarray]] = ()) -> pd.DataFrame:
    """A release of distinct images (``blob(seed)``, ``blob(seed + 1)``, …, named ``ids.format(seed)``,
    …): ``splits`` maps split → (images, melanomas: the first ones); ``extra`` are more (row, image)
    pairs (planted copies) appended as they are."""
    rows, images = [], []
    k = seed
    for split, (n, n_mel) in splits.items():
        for i in range(n):
            rgb = blob(k)
            rows.append(row(dataset, ids.format(k), split, int(i < n_mel), rgb,
                            release_split="" if dataset in ("ph2", "mednode", "pad_ufes_20", "ham10000") else None))
            images.append(rgb)
            k += 1
    for r, rgb in extra:
        rows.append(r)
        images.append(rgb)
    return write_release(work, rows, images)


def standard_work(work: str | Path) -> Path:
    """ISIC 2017 (B: train 16 / val 8 / test 8; ISIC_0000000–31), ISIC 2016 (A: train 12 / val 6 /
    test 6; ISIC_0000100–123) and PH2 (G: train 10 / val 4, no test split; IMD200–213), all images
    distinct; no duplicates planted."""
    work = Path(work)
    release(work, "isic2017", {"train": (16, 6), "val": (8, 3), "test": (8, 3)}, seed=0, ids="ISIC_{:07d}")
    release(work, "isic2016", {"train": (12, 4), "val": (6, 2), "test": (6, 2)}, seed=100, ids="ISIC_{:07d}")
    release(work, "ph2", {"train": (10, 3), "val": (4, 2)}, seed=200, ids="IMD{:03d}")
    return work

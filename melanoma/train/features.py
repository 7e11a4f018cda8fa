"""Feature cache: one backbone pass per image (and per augmented view), reused by every combination.

With ``freeze="backbone"`` the backbone is a fixed function, so its pooled features can be computed
once per (model, weights, image size, dataset) and the head trained on them — for every training
combination that contains the dataset. Layout::

    WORK/features/<model>-<weights>-s<size>/<dataset>/
        keys.json            content hashes of every image, in row order of view0.npy
        view0.npy            (n, d) features of the evaluation transform
        aug-keys.json        content hashes of the training-split images, row order of aug-*.npy
        aug-seed<s>-v<k>.npy (m, d) features of augmented view k (the paper's augmentation),
                             seeded by (seed, k), for the training-split images only
        aug-scheme.json      which way of drawing the augmentation made the aug-* files
                             (:data:`AUG_SCHEME`); views of another scheme are made again

Arrays are float16 by default (half the disk and memory; the head fit is insensitive to it —
``tests/train/test_recipe.py`` checks float32 equals the in-the-loop path). Each file is written atomically;
an interrupted extraction resumes at the first missing file.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from melanoma.data.cache import ImageCache
from melanoma.io import atomic_path, read_json, write_json
from melanoma.train.dataset import CachedImages
from melanoma.train.transforms import eval_transform, train_transform


#: The way augmented views are drawn (seeds per image position, the transform's parameters). Bump
#: it whenever a change of code changes the views a seed gives: cached views of an older scheme are
#: then recomputed instead of silently mixing two augmentations (the cache is keyed by data, model,
#: weights and size, not by code). 2: per-image seeds in a forked RNG (workers never matter).
AUG_SCHEME = 2


def feature_dir(work: str | Path, model: str, weights: str, size: int) -> Path:
    return Path(work) / "features" / f"{model}-{weights}-s{size}"


def _seed_for(seed: int, view: int) -> int:
    return int(hashlib.sha256(f"aug:{seed}:{view}".encode()).hexdigest()[:8], 16)


@torch.inference_mode()
def extract(backbone: torch.nn.Module, keys: list[str], cache: ImageCache, transform, *,
            batch_size: int = 64, device: torch.device | str = "cpu", workers: int = 0,
            desc: str = "features", progress: bool = True, seed: int | None = None) -> np.ndarray:
    """Run ``backbone`` (eval mode) over cached images; return float32 (n, d). ``seed``: a random
    ``transform`` draws per image from ``(seed, position)`` (see :class:`CachedImages`).

    Inputs go in channels-last layout on every device: measured 1.6× faster than NCHW for
    EfficientNet-Lite0 on 2 CPU cores (oneDNN's depthwise kernels), and what CUDA prefers too.
    """
    backbone.eval()
    backbone.to(memory_format=torch.channels_last)
    dev = torch.device(device)
    ds = CachedImages(keys, np.zeros(len(keys)), cache, transform, seed=seed)
    dl = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers)
    out = []
    use_amp = dev.type == "cuda"
    for x, _ in tqdm(dl, desc=desc, disable=not progress, unit="batch", mininterval=2.0):
        x = x.to(dev, non_blocking=True).to(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
            f = backbone(x)
        out.append(f.float().flatten(1).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def ensure_features(work: str | Path, dataset: str, manifest: pd.DataFrame, backbone, *, model: str,
                    weights: str, size: int, resize: int, mean, std, views: int = 0, seed: int = 0,
                    cache_size: int = 256, dtype: str = "float16", device="cpu", workers: int = 0,
                    batch_size: int = 64, progress: bool = True) -> dict:
    """Make sure view0 (+ ``views`` augmented views) exist for every image of ``dataset``.

    Returns timing facts: images encoded now, seconds, images/s.
    """
    d = feature_dir(work, model, weights, size) / dataset
    keys = sorted(set(manifest["content_hash"]))
    aug_keys = sorted(set(manifest.loc[manifest["split"] == "train", "content_hash"]))
    for kname, kk, pattern in (("keys.json", keys, "view0.npy"), ("aug-keys.json", aug_keys, "aug-*.npy")):
        kfile = d / kname
        if kfile.is_file() and read_json(kfile) != kk:
            for f in d.glob(pattern):  # the dataset was re-ingested with other images: start over
                f.unlink()
        if not kfile.is_file() or read_json(kfile) != kk:
            write_json(kfile, kk)
    _check_scheme(d)
    cache = ImageCache(Path(work) / "cache", cache_size)
    todo = [("view0", None, keys, eval_transform(size, resize, mean=mean, std=std))]
    todo += [(f"aug-seed{seed}-v{k}", k, aug_keys, train_transform(size, mean=mean, std=std))
             for k in range(views)]
    n_done, t0 = 0, time.perf_counter()
    for name, k, kk, tf in todo:
        f = d / f"{name}.npy"
        if f.is_file():
            continue
        feats = extract(backbone, kk, cache, tf, batch_size=batch_size, device=device,
                        workers=workers, desc=f"{model} {dataset} {name}", progress=progress,
                        seed=None if k is None else _seed_for(seed, k))
        with atomic_path(f) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, feats.astype(dtype), allow_pickle=False)
        n_done += len(kk)
    dt = time.perf_counter() - t0
    return {"dataset": dataset, "images_encoded": n_done, "seconds": round(dt, 3),
            "img_per_s": round(n_done / dt, 1) if n_done and dt > 0 else None}


def _scheme(d: Path) -> int | None:
    """The augmentation scheme recorded in ``d`` (``None``: made before schemes were recorded)."""
    f = d / "aug-scheme.json"
    return read_json(f).get("scheme") if f.is_file() else None


def _check_scheme(d: Path) -> None:
    """Augmented views drawn by another scheme than :data:`AUG_SCHEME` (or by a version that did
    not record one) are deleted, so they are made again."""
    if _scheme(d) != AUG_SCHEME:
        for old in d.glob("aug-seed*.npy"):
            old.unlink()
        write_json(d / "aug-scheme.json", {"scheme": AUG_SCHEME})


def load_features(work: str | Path, dataset: str, *, model: str, weights: str, size: int,
                  view: str = "view0") -> tuple[dict[str, int], np.ndarray]:
    """(content_hash → row, array) for one dataset and view."""
    d = feature_dir(work, model, weights, size) / dataset
    f = d / f"{view}.npy"
    if not f.is_file():
        raise FileNotFoundError(f"features {f} missing; they are made by the fast path "
                                "(`melanoma train --freeze backbone`) or the workflow's features rule")
    if view != "view0" and _scheme(d) != AUG_SCHEME:
        raise FileNotFoundError(f"features {f} were drawn by an older augmentation scheme "
                                f"(not {AUG_SCHEME}); make them again with the features rule or "
                                "`melanoma features` (which replaces them)")
    keys = read_json(d / ("keys.json" if view == "view0" else "aug-keys.json"))
    return {k: i for i, k in enumerate(keys)}, np.load(f, allow_pickle=False)


def gather(work, rows: pd.DataFrame, *, model: str, weights: str, size: int,
           view: str = "view0") -> np.ndarray:
    """Features for ``rows`` (any mix of datasets), in row order, as float32."""
    out = None
    for ds, idx in rows.groupby("dataset").indices.items():
        index, arr = load_features(work, ds, model=model, weights=weights, size=size, view=view)
        if out is None:
            out = np.zeros((len(rows), arr.shape[1]), np.float32)
        out[idx] = arr[[index[k] for k in rows["content_hash"].iloc[idx]]]
    return out if out is not None else np.zeros((0, 0), np.float32)


def features_for_dataset(work: str | Path, dataset: str, *, model: str, weights: str, size: int,
                         views: int = 0, seed: int = 0, resize: int | None = None,
                         cache_size: int = 256, dtype: str = "float16", device: str = "auto",
                         workers: int = 0, progress: bool = True) -> dict:
    """Build ``model``'s backbone and make sure its features for ``dataset`` exist; write
    ``done.json`` (the workflow's ``features`` rule output) with the timing facts."""
    from melanoma.data.manifest import read_manifest
    from melanoma.data.registry import get
    from melanoma.train.models import build_model, model_config, split_backbone_head
    from melanoma.train.run import resolve_device

    short = get(dataset).short
    cfg = model_config(model)
    torch.manual_seed(seed)
    backbone, _ = split_backbone_head(build_model(model, weights=weights, freeze="backbone"))
    dev = resolve_device(device)
    backbone.to(dev)
    facts = ensure_features(work, short, read_manifest(work, short), backbone, model=model,
                            weights=weights, size=size, resize=resize or round(size * 256 / 224),
                            mean=cfg.mean, std=cfg.std, views=views, seed=seed, cache_size=cache_size,
                            dtype=dtype, device=dev, workers=workers, progress=progress)
    facts.update(model=model, weights=weights, size=size, views=views, seed=seed, device=str(dev))
    write_json(feature_dir(work, model, weights, size) / short / "done.json", facts)
    return facts

"""Ingest one release: parse its official layout, decode and hash every image once, fill the image
cache, make the missing splits, and write ``WORK/<short>/manifest.parquet`` + ``report.json``.

Nothing is dropped silently: listed-but-missing files, unlisted files and undecodable files are
counted and listed with reasons in the report (``strict=True`` turns a bad file into an error).
Re-ingesting is incremental: rows whose file bytes are unchanged reuse the previous manifest's
hashes and the cached pixels instead of decoding again.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from .. import images as imgs
from ..cache import ImageCache
from ..io import write_json, write_parquet
from . import get
from .derm7pt import parse_derm7pt
from .isic import (parse_ham10000, parse_isic2016, parse_isic2017, parse_isic2018, parse_isic2019,
                   parse_isic2020)
from .kaggle import parse_kaggle
from .manifest import MANIFEST_COLUMNS, ParseResult, make_val_split, summarize
from .mednode import parse_mednode
from .pad_ufes import parse_pad_ufes_20
from .ph2 import parse_ph2

PARSERS = {
    "isic2016": parse_isic2016, "isic2017": parse_isic2017, "isic2018": parse_isic2018,
    "isic2019": parse_isic2019, "isic2020": parse_isic2020, "derm7pt": parse_derm7pt,
    "ph2": parse_ph2, "pad_ufes_20": parse_pad_ufes_20, "mednode": parse_mednode,
    "kaggle": parse_kaggle, "ham10000": parse_ham10000,
}


#: Releases that come without any split (the whole release is "train" before we carve val).
NO_RELEASE_SPLIT = {"ph2", "pad_ufes_20", "mednode", "ham10000"}


class BadImageError(RuntimeError):
    """Raised in strict mode when a listed image cannot be decoded."""


def parse(dataset: str, root: str | Path) -> ParseResult:
    info = get(dataset)
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{info.short}: data root {root} does not exist; download "
                                f"{info.title} from {info.source} and point --root at it")
    return PARSERS[info.short](root)


def _decode(args: tuple[str, str, str, int, int]) -> dict:
    """Worker: read, decode, hash, resize into the cache. Returns a row of facts or an error."""
    path, cache_root, prev_key, shorter, max_pixels = args
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        return {"error": "unreadable", "detail": str(e)}
    key = imgs.file_hash(data)
    if key == prev_key:
        return {"content_hash": key, "reuse": True}
    try:
        rgb = imgs.open_image(path, data=data, max_pixels=max_pixels)
    except imgs.ImageError as e:
        return {"error": e.reason, "detail": e.detail}
    cache = ImageCache(cache_root, shorter)
    cache.put(key, imgs.resize_shorter(rgb, shorter))
    return {"content_hash": key, "width": rgb.shape[1], "height": rgb.shape[0],
            "pixel_hash": imgs.pixel_hash(rgb), "phash": imgs.perceptual_hash(rgb),
            "dhash": imgs.difference_hash(rgb)}


def ingest_dataset(dataset: str, root: str | Path, work: str | Path, *, shorter: int = 256,
                   seed: int = 0, val_fraction: float = 0.2, strict: bool = False,
                   workers: int | None = None, max_pixels: int = imgs.DEFAULT_MAX_PIXELS,
                   progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Ingest ``dataset`` from ``root`` into ``work``; return (manifest, report)."""
    t0 = time.perf_counter()
    info = get(dataset)
    root = Path(root)
    work = Path(work)
    out_dir = work / info.short
    res = parse(info.short, root)
    rec = res.records.copy()
    synthetic = (root / "SYNTHETIC.json").is_file()

    prev: dict[str, dict] = {}
    prev_path = out_dir / "manifest.parquet"
    if prev_path.is_file():
        old = pd.read_parquet(prev_path)
        prev = {r["path"]: r for r in old.to_dict("records")}
        cache_ok = ImageCache(work / "cache", shorter)
        prev = {k: v for k, v in prev.items() if v["content_hash"] in cache_ok}

    cache_root = str(work / "cache")
    jobs = [(str(root / p), cache_root, prev.get(p, {}).get("content_hash", ""), shorter, max_pixels)
            for p in rec["path"]]
    n_workers = workers or min(len(jobs), os.cpu_count() or 1, 8) or 1
    it = None
    if n_workers > 1 and len(jobs) > 32:
        pool = ProcessPoolExecutor(max_workers=n_workers)
        it = pool.map(_decode, jobs, chunksize=16)
    else:
        pool = None
        it = map(_decode, jobs)
    facts = list(tqdm(it, total=len(jobs), desc=f"ingest {info.short}", disable=not progress,
                      unit="img", mininterval=1.0))
    if pool is not None:
        pool.shutdown()

    bad, keep = [], []
    for i, (row, f) in enumerate(zip(rec.to_dict("records"), facts)):
        if "error" in f:
            bad.append({"image_id": row["image_id"], "path": row["path"], "reason": f["error"],
                        "detail": f.get("detail", "")})
            continue
        if f.get("reuse"):
            old = prev[row["path"]]
            f = {k: old[k] for k in ("content_hash", "width", "height", "pixel_hash", "phash", "dhash")}
        keep.append(i)
        for k, v in f.items():
            rec.loc[i, k] = v
    if bad and strict:
        lines = "\n".join(f"  {b['path']}: {b['reason']} {b['detail']}" for b in bad[:20])
        raise BadImageError(f"{info.short}: {len(bad)} image(s) cannot be decoded "
                            f"(strict mode):\n{lines}")
    rec = rec.loc[keep].reset_index(drop=True)
    for c in ("width", "height"):
        rec[c] = rec[c].astype(int) if len(rec) else pd.Series(dtype=int)

    rec["release_split"] = "" if info.short in NO_RELEASE_SPLIT else rec["split"]
    made = not (rec["split"] == "val").any()
    if made:
        rec["split"] = make_val_split(rec, seed=seed, val_fraction=val_fraction,
                                      pairs=res.records.attrs.get("duplicate_pairs", []))
    rec["dataset"] = info.short
    rec["letter"] = info.letter or ""
    rec["synthetic"] = synthetic
    manifest = rec[MANIFEST_COLUMNS].sort_values(["split", "image_id"], kind="stable").reset_index(drop=True)

    counts = summarize(manifest)
    report = {
        "dataset": info.short, "name": info.name, "letter": info.letter, "title": info.title,
        "root": str(root), "synthetic": synthetic,
        "n_listed": int(len(res.records) + len(res.missing)),
        "n_images": int(len(manifest)),
        "n_melanoma": int((manifest["label"] == 1).sum()),
        "counts": counts.to_dict("records"),
        "validation_split": "made (80:20 of train, stratified, grouped by patient/lesion)"
        if made else "as released",
        "missing": res.missing, "n_missing": len(res.missing),
        "unlisted": res.unlisted, "n_unlisted": len(res.unlisted),
        "bad": bad, "n_bad": len(bad),
        "ignored": res.ignored, "notes": res.notes,
        "n_decoded": int(sum(1 for f in facts if "error" not in f and not f.get("reuse"))),
        "n_reused": int(sum(1 for f in facts if f.get("reuse"))),
        "cache": str(ImageCache(work / "cache", shorter).dir),
        "seconds": round(time.perf_counter() - t0, 3),
        "seed": seed, "val_fraction": val_fraction,
    }
    write_parquet(out_dir / "manifest.parquet", manifest)
    write_json(out_dir / "report.json", report)
    return manifest, report


def find_releases(data: str | Path) -> list[str]:
    """Short names of the releases present as ``DATA/<name>/`` (any spelling the registry knows)."""
    data = Path(data)
    found = []
    if not data.is_dir():
        raise FileNotFoundError(f"data folder {data} does not exist")
    for d in sorted(p for p in data.iterdir() if p.is_dir()):
        try:
            found.append((get(d.name).short, d))
        except KeyError:
            continue
    return found


def ingest_all(data: str | Path, work: str | Path, **kw) -> dict[str, dict]:
    reports = {}
    found = find_releases(data)
    if not found:
        raise FileNotFoundError(f"no release folders (isic2016, …, ham10000) under {data}")
    for short, d in found:
        reports[short] = ingest_dataset(short, d, work, **kw)[1]
    return reports


def counts_table(reports: dict[str, dict]) -> pd.DataFrame:
    """One row per dataset: images per split (melanoma in brackets), missing/bad counts."""
    rows = []
    for short, r in reports.items():
        row = {"letter": r["letter"] or "–", "dataset": r["name"], "synthetic": r["synthetic"]}
        for c in r["counts"]:
            row[c["split"]] = f"{c['images']} ({c['melanoma']})"
        row.update({"missing": r["n_missing"], "unlisted": r["n_unlisted"], "bad": r["n_bad"]})
        rows.append(row)
    df = pd.DataFrame(rows)
    for s in ("train", "val", "test"):
        if s not in df.columns:
            df[s] = ""
    return df[["letter", "dataset", "train", "val", "test", "missing", "unlisted", "bad", "synthetic"]].fillna("")

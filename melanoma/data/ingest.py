"""Ingest one release: parse its official layout, decode and hash every image once, fill the image
cache, make the missing splits, and write ``WORK/<short>/manifest.parquet`` + ``report.json``.

Nothing is dropped silently: listed-but-missing files, unlisted files, undecodable files, files
outside the release folder (``outside-root``: never opened), second files for one image id and
label rows with no decidable label are counted and listed with reasons in the report
(``strict=True`` turns a bad file, an outside path or a bad label row into an error). A release
where nothing usable is left is an error that names the reasons (``report.json`` keeps them all).
Re-ingesting is incremental: rows whose file bytes are unchanged reuse the previous manifest's
hashes and the cached pixels instead of decoding again.
"""

from __future__ import annotations

import errno
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from melanoma.data import images as imgs
from melanoma.data.cache import ImageCache
from melanoma.data.fingerprint import fingerprint
from melanoma.data.registry import SHORT_NAMES, get
from melanoma.data.releases.derm7pt import parse_derm7pt
from melanoma.io import write_json, write_parquet
from melanoma.data.releases.isic import (parse_ham10000, parse_isic2016, parse_isic2017, parse_isic2018, parse_isic2019,
                   parse_isic2020)
from melanoma.data.manifest import MANIFEST_COLUMNS, ParseResult, confined, make_val_split, outside_entry, summarize
from melanoma.data.releases.kaggle import parse_kaggle
from melanoma.data.releases.mednode import parse_mednode
from melanoma.data.releases.pad_ufes import parse_pad_ufes_20
from melanoma.data.releases.ph2 import parse_ph2

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


class IngestError(RuntimeError):
    """A release that cannot be ingested as a whole (nothing usable left, disk full, ...)."""


HASH_COLUMNS = ("content_hash", "width", "height", "pixel_hash", "phash", "dhash")


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
    fp = fingerprint(root)  # before reading: what this manifest was made from
    res = parse(info.short, root)
    synthetic = (root / "SYNTHETIC.json").is_file()
    rec, n_listed = _usable_records(info.short, root, res, strict)
    prev = _previous_rows(out_dir / "manifest.parquet", work / "cache", shorter)
    facts = _decode_all(info.short, root, rec, prev, work / "cache", shorter, max_pixels, workers, progress)
    rec, bad = _with_facts(info.short, rec, facts, prev, strict)
    rec["release_split"] = "" if info.short in NO_RELEASE_SPLIT else rec["split"]
    made = not (rec["split"] == "val").any()
    if made:
        rec["split"] = make_val_split(rec, seed=seed, val_fraction=val_fraction,
                                      pairs=res.records.attrs.get("duplicate_pairs", []))
    rec["dataset"] = info.short
    rec["letter"] = info.letter or ""
    rec["synthetic"] = synthetic
    manifest = rec[MANIFEST_COLUMNS].sort_values(["split", "image_id"], kind="stable").reset_index(drop=True)
    report = {
        "dataset": info.short, "name": info.name, "letter": info.letter, "title": info.title,
        "root": str(root), "synthetic": synthetic,
        "n_listed": int(n_listed),
        "n_images": int(len(manifest)),
        "n_melanoma": int((manifest["label"] == 1).sum()),
        "counts": summarize(manifest).to_dict("records"),
        "validation_split": "made (80:20 of train, stratified, grouped by patient/lesion)"
        if made else "as released",
        "missing": res.missing, "n_missing": len(res.missing),
        "unlisted": res.unlisted, "n_unlisted": len(res.unlisted),
        "bad": bad, "n_bad": len(bad),
        "outside_root": res.outside, "n_outside_root": len(res.outside),
        "duplicates": res.duplicates, "n_duplicates": len(res.duplicates),
        "bad_labels": res.bad_labels, "n_bad_labels": len(res.bad_labels),
        "ignored": res.ignored, "notes": res.notes, **res.extra,
        "fingerprint": fp,
        "n_decoded": int(sum(1 for f in facts if "error" not in f and not f.get("reuse"))),
        "n_reused": int(sum(1 for f in facts if f.get("reuse"))),
        "cache": str(ImageCache(work / "cache", shorter).dir),
        "seconds": round(time.perf_counter() - t0, 3),
        "seed": seed, "val_fraction": val_fraction,
    }
    _write(info.short, root, out_dir, manifest, report)
    return manifest, report


def _usable_records(short: str, root: Path, res: ParseResult, strict: bool) -> tuple[pd.DataFrame, int]:
    """The parsed rows whose files lie inside the release (the others join ``res.outside``), and
    how many rows the label files (or class folders) name: used, missing, unlabelable or outside."""
    rec = res.records.copy()
    # last line of defence: whatever a parser produced, never open a file outside the release
    inside = [confined(root, root / p) is not None for p in rec["path"]]
    if not all(inside):
        for r in rec.loc[[not x for x in inside]].to_dict("records"):
            res.outside.append({**outside_entry(root, r["path"]), "image_id": r["image_id"]})
        rec = rec.loc[inside].reset_index(drop=True)
    n_listed = (len(rec) + len(res.missing) + len(res.bad_labels)
                + sum(1 for o in res.outside if "image_id" in o))
    if rec["image_id"].duplicated().any():  # a parser bug, never a silent double row
        dup = sorted(set(rec.loc[rec["image_id"].duplicated(), "image_id"]))
        raise IngestError(f"{short}: image id(s) {dup[:5]} occur twice after parsing {root}; "
                          "please report this with the release's layout")
    excluded = [("outside-root", res.outside), ("bad label", res.bad_labels)]
    if strict and any(lst for _, lst in excluded):
        lines = "\n".join(f"  {e.get('path') or e.get('image_id')}: {e['reason']} {e.get('detail', '')}"
                          for _, lst in excluded for e in lst[:10])
        raise BadImageError(f"{short}: {sum(len(l) for _, l in excluded)} listed item(s) cannot "
                            f"be used (strict mode):\n{lines}")
    return rec, n_listed


def _previous_rows(prev_path: Path, cache_dir: Path, shorter: int) -> dict[str, dict]:
    """path → row of the previous manifest, for rows whose pixels are still cached (reused)."""
    if not prev_path.is_file():
        return {}
    prev = {r["path"]: r for r in pd.read_parquet(prev_path).to_dict("records")}
    cache = ImageCache(cache_dir, shorter)
    return {k: v for k, v in prev.items() if v["content_hash"] in cache}


def _decode_all(short: str, root: Path, rec: pd.DataFrame, prev: dict, cache_dir: Path, shorter: int,
                max_pixels: int, workers: int | None, progress: bool) -> list[dict]:
    """:func:`_decode` of every row (in worker processes when there are many)."""
    jobs = [(str(root / p), str(cache_dir), prev.get(p, {}).get("content_hash", ""), shorter, max_pixels)
            for p in rec["path"]]
    n_workers = workers or min(len(jobs), os.cpu_count() or 1, 8) or 1
    if n_workers > 1 and len(jobs) > 32:
        pool = ProcessPoolExecutor(max_workers=n_workers)
        it = pool.map(_decode, jobs, chunksize=16)
    else:
        pool = None
        it = map(_decode, jobs)
    try:
        return list(tqdm(it, total=len(jobs), desc=f"ingest {short}", disable=not progress,
                         unit="img", mininterval=1.0))
    except OSError as e:
        raise _write_error(short, cache_dir, e) from e
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _with_facts(short: str, rec: pd.DataFrame, facts: list[dict], prev: dict,
                strict: bool) -> tuple[pd.DataFrame, list[dict]]:
    """The decoded rows with their hashes and sizes, and the rows that could not be decoded."""
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
        raise BadImageError(f"{short}: {len(bad)} image(s) cannot be decoded "
                            f"(strict mode):\n{lines}")
    rec = rec.loc[keep].reset_index(drop=True)
    for c in HASH_COLUMNS:  # present even when no row is left (the error below says why)
        if c not in rec.columns:
            rec[c] = pd.Series(dtype=object)
    for c in ("width", "height"):
        rec[c] = rec[c].astype(int) if len(rec) else pd.Series(dtype=int)
    return rec, bad


def _write(short: str, root: Path, out_dir: Path, manifest: pd.DataFrame, report: dict) -> None:
    """manifest.parquet and report.json; with nothing usable, the report alone and an error."""
    try:
        if manifest.empty:  # nothing usable: keep the reasons, leave no manifest to train on
            write_json(out_dir / "report.json", report)
            (out_dir / "manifest.parquet").unlink(missing_ok=True)
            raise IngestError(_nothing_left(short, root, report, out_dir / "report.json"))
        write_parquet(out_dir / "manifest.parquet", manifest)
        write_json(out_dir / "report.json", report)
    except OSError as e:
        raise _write_error(short, out_dir, e) from e


def _write_error(short: str, where: Path, e: OSError) -> IngestError:
    """A clear message for a failed write (disk full, read-only, quota); every file is written
    atomically, so nothing half-written is left under a final name."""
    what = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
            errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied"}.get(
        e.errno, "a write failed")
    return IngestError(f"{short}: {what} while writing under {where} ({e.strerror or e}); free space "
                       "or point --out at another disk and rerun: no partial file was kept, and "
                       "images already cached are reused")


def _nothing_left(short: str, root: Path, report: dict, report_path: Path) -> str:
    parts = [f"{report['n_' + k]} {k.replace('_', ' ')}" for k in
             ("missing", "bad", "outside_root", "duplicates", "bad_labels") if report["n_" + k]]
    first = []
    for k in ("missing", "bad", "outside_root", "bad_labels"):
        for e in report[k][:2]:
            first.append(f"  {e.get('path') or e.get('expected') or e.get('image_id')}: "
                         f"{e['reason']} {e.get('detail', '')}".rstrip())
    return (f"{short}: no usable image in {root} ({report['n_listed']} listed: "
            f"{', '.join(parts) or 'none listed'}); every reason is in {report_path}; first ones:\n"
            + "\n".join(first[:6]))


def find_releases(data: str | Path) -> list[tuple[str, Path]]:
    """(short name, folder) of the releases present as ``DATA/<name>/`` (any spelling the
    registry knows). Two folders naming one release are an error."""
    data = Path(data)
    found = []
    if not data.is_dir():
        raise FileNotFoundError(f"data folder {data} does not exist")
    for d in sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            found.append((get(d.name).short, d))
        except KeyError:
            continue
    shorts = [s for s, _ in found]
    twice = sorted({s for s in shorts if shorts.count(s) > 1})
    if twice:
        names = [d.name for s, d in found if s in twice]
        raise IngestError(f"{data}: folders {names} are the same release ({', '.join(twice)}); keep one")
    return found


def _suggest(name: str) -> str | None:
    import difflib

    norm = lambda x: "".join(c for c in x.lower() if c.isalnum())  # noqa: E731
    by_norm = {norm(k): get(k).short for k in SHORT_NAMES}
    from melanoma.data.registry import REGISTRY

    for d in REGISTRY:
        by_norm.setdefault(norm(d.name), d.short)
    hit = difflib.get_close_matches(norm(name), list(by_norm), n=1, cutoff=0.75)
    return by_norm[hit[0]] if hit else None


def unknown_folders(data: str | Path) -> list[dict]:
    """Folders under ``data`` that name no release: ``{"folder", "suggestion"}`` (did you mean)."""
    out = []
    for d in sorted(p for p in Path(data).iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            get(d.name)
        except KeyError:
            out.append({"folder": d.name, "suggestion": _suggest(d.name)})
    return out


def ingest_all(data: str | Path, work: str | Path, *, skip_unknown: bool = False,
               **kw) -> dict[str, dict]:
    """Ingest every release found as ``DATA/<name>/``. A folder that names no release is an error
    (with a did-you-mean: ``med_node`` → ``mednode``) unless ``skip_unknown``; skipped folders are
    listed in ``WORK/ingest-all.json``, which records every ``--all`` run."""
    from melanoma.io import write_json

    found = find_releases(data)
    unknown = unknown_folders(data)
    if unknown and not skip_unknown:
        lines = "\n".join(f"  {u['folder']}/" + (f": did you mean {u['suggestion']}/?" if u["suggestion"] else "")
                          for u in unknown)
        raise IngestError(f"{data}: {len(unknown)} folder(s) name no release:\n{lines}\nrename them to "
                          f"one of {', '.join(SHORT_NAMES)}, move them out of {data}, or pass "
                          "--skip-unknown to ingest the others and list these")
    if not found:
        raise FileNotFoundError(f"no release folders (isic2016, …, ham10000) under {data}")
    reports = {}
    for short, d in found:
        reports[short] = ingest_dataset(short, d, work, **kw)[1]
    write_json(Path(work) / "ingest-all.json", {"data": str(data), "ingested": {s: str(d) for s, d in found},
                                                "unknown_folders": unknown})
    return reports


def counts_table(reports: dict[str, dict]) -> pd.DataFrame:
    """One row per dataset: images per split (melanoma in brackets), missing/bad counts."""
    rows = []
    for short, r in reports.items():
        row = {"letter": r["letter"] or "–", "dataset": r["name"], "synthetic": r["synthetic"]}
        for c in r["counts"]:
            row[c["split"]] = f"{c['images']} ({c['melanoma']})"
        row.update({"missing": r["n_missing"], "unlisted": r["n_unlisted"], "bad": r["n_bad"],
                    "excluded": sum(r.get(f"n_{k}", 0) for k in ("outside_root", "duplicates", "bad_labels"))})
        rows.append(row)
    df = pd.DataFrame(rows)
    for s in ("train", "val", "test"):
        if s not in df.columns:
            df[s] = ""
    return df[["letter", "dataset", "train", "val", "test", "missing", "unlisted", "bad", "excluded",
               "synthetic"]].fillna("")

"""Parser for the 7-point criteria evaluation database (derm7pt, ``release_v0``).

One row of ``meta/meta.csv`` per case; we use the dermoscopic image (column ``derm``, a path
relative to ``images/`` whose letter case may differ between folder and file). Splits come from
``meta/{train,valid,test}_indexes.csv`` (column ``indexes``: 0-based row positions in meta.csv).
Melanoma = a diagnosis containing the word ``melanoma`` (six sub-types); ``melanosis`` is not.
"""

from __future__ import annotations

import re
from pathlib import Path

from melanoma.data.manifest import LabelFileError, ParseResult, confined, outside_entry, read_table, records_frame

MELANOMA = re.compile(r"\bmelanoma\b", re.IGNORECASE)


def _find_case_insensitive(images: Path, rel: str) -> Path | None:
    """``images/rel``, matching each part's letter case loosely. ``rel`` is a plain relative path
    (checked by the caller: no ``..``, not absolute), so the search stays below ``images``."""
    p = images / rel
    if p.is_file():
        return p
    cur = images
    for part in Path(rel).parts:
        if not cur.is_dir():
            return None
        match = sorted(c for c in cur.iterdir() if c.name.lower() == part.lower())
        if not match:
            return None
        cur = match[0]
        if confined(images, cur) is None:  # a link out: the caller reports it, we look no further
            return cur
    return cur if cur.is_file() else None


def _escapes(rel: str) -> bool:
    """A ``derm`` path that leaves ``images/`` on its face: absolute, a drive, or with ``..``."""
    return (rel.startswith("/") or re.match(r"^[A-Za-z]:", rel) is not None
            or ".." in rel.split("/"))


def parse_derm7pt(root: Path) -> ParseResult:
    root = Path(root)
    base = root / "release_v0" if (root / "release_v0").is_dir() else root
    meta_path = base / "meta" / "meta.csv"
    meta = read_table(meta_path, ["case_num", "diagnosis", "derm"], dataset="derm7pt")
    n = len(meta)
    split_of = [""] * n
    for split, fname in (("train", "train_indexes.csv"), ("val", "valid_indexes.csv"),
                         ("test", "test_indexes.csv")):
        p = base / "meta" / fname
        idx = read_table(p, ["indexes"], dataset="derm7pt")
        for v in idx["indexes"]:
            if not v.isdigit() or int(v) >= n:
                raise LabelFileError(f"{p}: column 'indexes' has {v!r}, not a row number of "
                                     f"meta.csv (0..{n - 1})")
            if split_of[int(v)]:
                raise LabelFileError(f"{p}: row {v} is already in the {split_of[int(v)]} split")
            split_of[int(v)] = split
    images = base / "images"
    rows, missing, unsplit = [], [], 0
    res = ParseResult()
    for i, r in meta.iterrows():
        if not split_of[i]:
            unsplit += 1
            continue
        rel = r["derm"].replace("\\", "/")
        iid = Path(rel).stem
        if _escapes(rel):  # never opened (nor looked at): a label file must not lead out of the root
            res.outside.append({**outside_entry(root, images / rel, resolve=False,
                                                source=f"{meta_path.name} row {i}, column derm"),
                                "image_id": iid, "path": rel})
            continue
        f = _find_case_insensitive(images, rel)
        if f is not None and confined(root, f) is None:  # a link inside images/ pointing out
            res.outside.append({**outside_entry(root, f, source=f"{meta_path.name} row {i}, column derm"),
                                "image_id": iid})
            continue
        if f is None:
            missing.append({"image_id": iid, "expected": f"{images.relative_to(root).as_posix()}/{rel}",
                            "reason": "listed in meta.csv, file missing"})
            continue
        rows.append({"image_id": iid, "path": f.relative_to(root).as_posix(),
                     "label": int(bool(MELANOMA.search(r["diagnosis"]))),
                     "diagnosis": r["diagnosis"], "split": split_of[i],
                     "patient_id": "", "lesion_id": r.get("case_id", "") or r["case_num"]})
    res.records, res.missing = records_frame(rows), missing
    if unsplit:
        res.notes.append(f"{unsplit} meta.csv rows are in no index file and were not used")
    dup = res.records["image_id"][res.records["image_id"].duplicated()]
    if len(dup):
        raise LabelFileError(f"{meta_path}: the same dermoscopic image is listed twice: {list(dup[:5])}")
    return res

"""Parser for the 7-point criteria evaluation database (derm7pt, ``release_v0``).

One row of ``meta/meta.csv`` per case; we use the dermoscopic image (column ``derm``, a path
relative to ``images/`` whose letter case may differ between folder and file). Splits come from
``meta/{train,valid,test}_indexes.csv`` (column ``indexes``: 0-based row positions in meta.csv).
Melanoma = a diagnosis containing the word ``melanoma`` (six sub-types); ``melanosis`` is not.
"""

from __future__ import annotations

import re
from pathlib import Path

from .manifest import LabelFileError, ParseResult, read_table, records_frame

MELANOMA = re.compile(r"\bmelanoma\b", re.IGNORECASE)


def _find_case_insensitive(images: Path, rel: str) -> Path | None:
    p = images / rel
    if p.is_file():
        return p
    cur = images
    for part in Path(rel).parts:
        if not cur.is_dir():
            return None
        match = [c for c in cur.iterdir() if c.name.lower() == part.lower()]
        if not match:
            return None
        cur = match[0]
    return cur if cur.is_file() else None


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
    for i, r in meta.iterrows():
        if not split_of[i]:
            unsplit += 1
            continue
        rel = r["derm"].replace("\\", "/")
        f = _find_case_insensitive(images, rel)
        iid = Path(rel).stem
        if f is None:
            missing.append({"image_id": iid, "expected": f"{images.relative_to(root).as_posix()}/{rel}",
                            "reason": "listed in meta.csv, file missing"})
            continue
        rows.append({"image_id": iid, "path": f.relative_to(root).as_posix(),
                     "label": int(bool(MELANOMA.search(r["diagnosis"]))),
                     "diagnosis": r["diagnosis"], "split": split_of[i],
                     "patient_id": "", "lesion_id": r.get("case_id", "") or r["case_num"]})
    res = ParseResult(records=records_frame(rows), missing=missing)
    if unsplit:
        res.notes.append(f"{unsplit} meta.csv rows are in no index file and were not used")
    dup = res.records["image_id"][res.records["image_id"].duplicated()]
    if len(dup):
        raise LabelFileError(f"{meta_path}: the same dermoscopic image is listed twice: {list(dup[:5])}")
    return res

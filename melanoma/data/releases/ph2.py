"""Parser for PH2: ``PH2_dataset.xlsx`` (legend rows on top, header on spreadsheet row 13,
an ``X`` marks the class) or, failing that, the pipe-delimited ``PH2_dataset.txt``.

Only ``IMDxxx_Dermoscopic_Image/IMDxxx.bmp`` is an input image; the ``_lesion`` and ``_roi``
masks are ignored (counted in the report).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from melanoma.data.manifest import (LabelFileError, ParseResult, attach_files, confined, outside_entry, require_file,
                       records_frame)

CLASSES = ("Common Nevus", "Atypical Nevus", "Melanoma")


def _from_xlsx(path: Path) -> pd.DataFrame:
    raw = pd.read_excel(path, header=None, dtype=str, engine="openpyxl").fillna("")
    hdr = [i for i in range(min(len(raw), 40))
           if raw.iloc[i].astype(str).str.strip().str.lower().eq("image name").any()]
    if not hdr:
        raise LabelFileError(f"{path}: no header row with 'Image Name' in the first 40 rows "
                             "(PH2's header is on spreadsheet row 13)")
    h = hdr[0]
    cols = [str(c).split("\n")[0].strip() for c in raw.iloc[h]]
    df = raw.iloc[h + 1:].copy()
    df.columns = cols
    miss = [c for c in ("Image Name",) + CLASSES if c not in df.columns]
    if miss:
        raise LabelFileError(f"{path}: missing column(s) {miss} in the header on row {h + 1}")
    df = df[df["Image Name"].str.strip() != ""]
    marks = df[list(CLASSES)].apply(lambda s: s.str.strip().str.upper())
    bad = marks.apply(lambda s: ~s.isin(["X", ""])).any(axis=1)
    nmark = (marks == "X").sum(axis=1)
    if bad.any() or (nmark != 1).any():
        ids = df.loc[bad | (nmark != 1), "Image Name"].tolist()[:5]
        raise LabelFileError(f"{path}: columns {list(CLASSES)} must hold exactly one 'X' per row; "
                             f"not so for {ids}")
    out = pd.DataFrame({"image_id": df["Image Name"].str.strip(),
                        "diagnosis": marks.eq("X").idxmax(axis=1)})
    return out


def _from_txt(path: Path) -> pd.DataFrame:
    rows = []
    header = None
    for line in path.read_text(encoding="utf-8-sig", errors="replace").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            if any(c.lower() == "name" or c.lower() == "image name" for c in cells):
                header = [c.lower() for c in cells]
            continue
        if len(cells) != len(header) or not cells[0]:
            continue
        rows.append(dict(zip(header, cells)))
    if header is None or "clinical diagnosis" not in header:
        raise LabelFileError(f"{path}: no header with 'Clinical Diagnosis' found")
    name = "name" if "name" in header else "image name"
    df = pd.DataFrame(rows)
    codes = {"0": "Common Nevus", "1": "Atypical Nevus", "2": "Melanoma"}
    bad = sorted(set(df["clinical diagnosis"]) - set(codes))
    if bad:
        raise LabelFileError(f"{path}: column 'Clinical Diagnosis' has unknown value(s) {bad[:5]}")
    return pd.DataFrame({"image_id": df[name], "diagnosis": df["clinical diagnosis"].map(codes)})


def parse_ph2(root: Path) -> ParseResult:
    root = Path(root)
    xlsx, txt = root / "PH2_dataset.xlsx", root / "PH2_dataset.txt"
    if xlsx.is_file():
        df, source = _from_xlsx(xlsx), xlsx
    else:
        df, source = _from_txt(require_file(txt, "PH2_dataset.xlsx or PH2_dataset.txt", "ph2")), txt
    if df["image_id"].duplicated().any():
        raise LabelFileError(f"{source}: duplicate 'Image Name' {df['image_id'][df['image_id'].duplicated()].tolist()[:5]}")
    df["label"] = (df["diagnosis"] == "Melanoma").astype(int)
    df["split"] = "train"
    img_root = root / "PH2 Dataset images"
    files, masks = {}, 0
    res = ParseResult()
    if img_root.is_dir():
        for case in sorted(p for p in img_root.iterdir() if p.is_dir()):
            f = case / f"{case.name}_Dermoscopic_Image" / f"{case.name}.bmp"
            if confined(root, f) is None:  # the case folder or the image is a link out of the root
                res.outside.append(outside_entry(root, f))
            elif f.is_file():
                files[case.name] = f.relative_to(root).as_posix()
            masks += sum(1 for d in (f"{case.name}_lesion", f"{case.name}_roi") if (case / d).exists())
    present, missing, unlisted = attach_files(
        df, files, expected="PH2 Dataset images/{id}/{id}_Dermoscopic_Image/{id}.bmp")
    res.records, res.missing, res.unlisted = records_frame(present), missing, unlisted
    res.ignored["mask folders"] = masks
    res.notes.append(f"labels read from {source.name}")
    return res

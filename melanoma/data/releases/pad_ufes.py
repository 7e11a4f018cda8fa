"""Parser for PAD-UFES-20: ``metadata.csv`` + ``images/imgs_part_{1,2,3}/PAT_*.png``.

Smartphone clinical photos; several images per patient and lesion (splits are grouped by lesion,
and lesions of one patient are kept together through ``patient_id``).
"""

from __future__ import annotations

from pathlib import Path

from melanoma.data.manifest import (LabelFileError, ParseResult, attach_files, check_unique, index_files,
                       read_table, records_frame)

DIAGNOSES = {"ACK", "BCC", "MEL", "NEV", "SCC", "SEK"}


def parse_pad_ufes_20(root: Path) -> ParseResult:
    root = Path(root)
    meta = root / "metadata.csv"
    df = read_table(meta, ["patient_id", "lesion_id", "diagnostic", "img_id"], dataset="pad_ufes_20")
    check_unique(df, "img_id", meta)
    bad = sorted(set(df["diagnostic"].str.upper()) - DIAGNOSES)
    if bad:
        raise LabelFileError(f"{meta}: column 'diagnostic' has unknown value(s) {bad[:5]}; "
                             f"expected one of {sorted(DIAGNOSES)}")
    df["label"] = (df["diagnostic"].str.upper() == "MEL").astype(int)
    df["diagnosis"] = df["diagnostic"]
    df["image_id"] = df["img_id"].str.replace(r"\.png$", "", regex=True)
    df["split"] = "train"
    res = ParseResult()
    files, _ = index_files(root / "images", root, (".png",), into=res)
    present, missing, unlisted = attach_files(df, files, expected="images/imgs_part_?/{id}.png")
    res.records, res.missing, res.unlisted = records_frame(present), missing, res.unlisted + unlisted
    return res

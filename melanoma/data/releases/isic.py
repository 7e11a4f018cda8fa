"""Parsers for the ISIC challenge releases 2016–2020 and HAM10000 (official layouts).

Each ``parse_*`` takes the folder that directly holds the release's official top-level items and
returns a :class:`~melanoma.data.manifest.ParseResult`. See ``spec/datasets.md``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from melanoma.data.manifest import (ParseResult, attach_files, check_unique, index_files, parse_binary,
                       pick_duplicates, read_table, records_frame, walk_files)

JPG = (".jpg", ".jpeg")
ONE_HOT = {"0": 0, "1": 1, "0.0": 0, "1.0": 1}


def _one_hot_diagnosis(df: pd.DataFrame, classes: list[str], path: Path, id_col: str,
                       res: ParseResult) -> pd.DataFrame:
    """The diagnosis column of a one-hot ground truth. A row marking no class or several classes
    (MEL and NV both 1) has no label we could defend: it is dropped and reported in
    ``res.bad_labels`` with the classes it marks."""
    vals = {c: parse_binary(df[c], ONE_HOT, path=path, column=c) for c in classes}
    m = pd.DataFrame(vals, index=df.index)
    n = m.sum(axis=1)
    for i in df.index[n != 1]:
        marked = [c for c in classes if m.at[i, c] == 1]
        res.bad_labels.append({
            "image_id": df.at[i, id_col], "reason": "no-class" if not marked else "several-classes",
            "detail": f"{path.name}: one-hot row marks {marked or 'no class'}; exactly one of "
                      f"{classes} must be 1 (the row is not used; fix the label file to use it)"})
    df = df.loc[n == 1].copy()
    df["diagnosis"] = m.loc[n == 1].idxmax(axis=1)
    return df


def _finish(res: ParseResult, parts: list[tuple[pd.DataFrame, list, list]],
            ignored: dict | None = None) -> ParseResult:
    rows = pd.concat([p[0] for p in parts], ignore_index=True)
    res.records = records_frame(rows)
    res.missing += [m for p in parts for m in p[1]]
    res.unlisted += [u for p in parts for u in p[2]]
    res.ignored.update(ignored or {})
    return res


# ----------------------------------------------------------------------------- A: ISIC 2016

def parse_isic2016(root: Path) -> ParseResult:
    """ISIC 2016 Part 3: header-less ground truth; train labels benign/malignant, test 0/1 or 0.0/1.0."""
    root = Path(root)
    parts, res = [], ParseResult()
    for split, stem, mapping in (
            ("train", "Training", {"benign": 0, "malignant": 1}),
            ("test", "Test", {"0": 0, "1": 1, "0.0": 0, "1.0": 1})):
        gt = root / f"ISBI2016_ISIC_Part3_{stem}_GroundTruth.csv"
        folder = root / f"ISBI2016_ISIC_Part3_{stem}_Data"
        if not gt.is_file() and not folder.is_dir():
            continue  # a user may have only one of the two splits
        df = read_table(gt, ["image_id", "label"], dataset="isic2016", header=False,
                        names=["image_id", "label"])
        if len(df) and df.iloc[0]["image_id"].lower() in ("image_id", "image", "isic_id"):
            df = df.iloc[1:]  # tolerate a re-saved copy with a header row
        check_unique(df, "image_id", gt)
        df["diagnosis"] = df["label"]
        df["label"] = parse_binary(df["label"], mapping, path=gt, column="label (2nd)")
        df["split"] = split
        files, _ = index_files(folder, root, JPG, into=res)
        parts.append(attach_files(df, files, expected=f"{folder.name}/{{id}}.jpg"))
    if not parts:
        raise FileNotFoundError(f"isic2016: neither ISBI2016_ISIC_Part3_Training_* nor *_Test_* under {root}")
    return _finish(res, parts)


# ----------------------------------------------------------------------------- B: ISIC 2017

def parse_isic2017(root: Path) -> ParseResult:
    root = Path(root)
    parts, n_sp, res = [], 0, ParseResult()
    for split, stem in (("train", "Training"), ("val", "Validation"), ("test", "Test_v2")):
        gt = root / f"ISIC-2017_{stem}_Part3_GroundTruth.csv"
        folder = root / f"ISIC-2017_{stem}_Data"
        if not gt.is_file() and not folder.is_dir():
            continue
        df = read_table(gt, ["image_id", "melanoma", "seborrheic_keratosis"], dataset="isic2017")
        check_unique(df, "image_id", gt)
        df["label"] = parse_binary(df["melanoma"], ONE_HOT, path=gt, column="melanoma")
        sk = parse_binary(df["seborrheic_keratosis"], ONE_HOT, path=gt, column="seborrheic_keratosis")
        df["diagnosis"] = ["melanoma" if m else ("seborrheic_keratosis" if s else "nevus")
                           for m, s in zip(df["label"], sk)]
        df["split"] = split
        files, n = index_files(folder, root, JPG + (".png",), exclude=("_superpixels",), into=res)
        n_sp += n
        parts.append(attach_files(df, files, expected=f"{folder.name}/{{id}}.jpg"))
    if not parts:
        raise FileNotFoundError(f"isic2017: no ISIC-2017_*_Part3_GroundTruth.csv under {root}")
    return _finish(res, parts, {"superpixels": n_sp})


# ----------------------------------------------------------------------------- C: ISIC 2018

ISIC2018_CLASSES = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]


def parse_isic2018(root: Path) -> ParseResult:
    root = Path(root)
    parts, res = [], ParseResult()
    groups = root / "ISIC2018_Task3_Training_LesionGroupings.csv"
    lesions = {}
    if groups.is_file():
        g = read_table(groups, ["image", "lesion_id"], dataset="isic2018")
        lesions = dict(zip(g["image"], g["lesion_id"]))
    for split, stem in (("train", "Training"), ("val", "Validation"), ("test", "Test")):
        gt = root / f"ISIC2018_Task3_{stem}_GroundTruth" / f"ISIC2018_Task3_{stem}_GroundTruth.csv"
        folder = root / f"ISIC2018_Task3_{stem}_Input"
        if not gt.is_file() and not folder.is_dir():
            continue
        df = read_table(gt, ["image"] + ISIC2018_CLASSES, dataset="isic2018")
        check_unique(df, "image", gt)
        df = _one_hot_diagnosis(df, ISIC2018_CLASSES, gt, "image", res)
        df["label"] = (df["diagnosis"] == "MEL").astype(int)
        df["image_id"] = df["image"]
        df["lesion_id"] = [lesions.get(i, "") for i in df["image"]]
        df["split"] = split
        files, _ = index_files(folder, root, JPG, into=res)
        parts.append(attach_files(df, files, expected=f"{folder.name}/{{id}}.jpg"))
    if not parts:
        raise FileNotFoundError(f"isic2018: no ISIC2018_Task3_*_GroundTruth/ folder under {root}")
    return _finish(res, parts)


# ----------------------------------------------------------------------------- D: ISIC 2019

ISIC2019_CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]


def parse_isic2019(root: Path) -> ParseResult:
    root = Path(root)
    res = ParseResult()
    gt = root / "ISIC_2019_Training_GroundTruth.csv"
    df = read_table(gt, ["image"] + ISIC2019_CLASSES, dataset="isic2019")
    check_unique(df, "image", gt)
    df = _one_hot_diagnosis(df, ISIC2019_CLASSES, gt, "image", res)
    df["label"] = (df["diagnosis"] == "MEL").astype(int)
    df["image_id"] = df["image"]
    meta = root / "ISIC_2019_Training_Metadata.csv"
    if meta.is_file():
        m = read_table(meta, ["image", "lesion_id"], dataset="isic2019")
        df["lesion_id"] = df["image"].map(dict(zip(m["image"], m["lesion_id"]))).fillna("")
    df["split"] = "train"
    # ISIC 2019 ships some images with a "_downsampled" suffix; their id is the plain one (a plain
    # and a downsampled file of one id: the plain one is used, the other reported as a duplicate).
    files, _ = index_files(root / "ISIC_2019_Training_Input", root, JPG, into=res,
                           id_of=lambda p: p.stem.replace("_downsampled", ""))
    return _finish(res, [attach_files(df, files, expected="ISIC_2019_Training_Input/{id}.jpg")])


# ----------------------------------------------------------------------------- E: ISIC 2020

def parse_isic2020(root: Path) -> ParseResult:
    """ISIC 2020: labelled ``train/`` and the unlabelled Kaggle-leaderboard ``test/`` (label -1)."""
    root = Path(root)
    gt = root / "ISIC_2020_Training_GroundTruth.csv"
    df = read_table(gt, ["image_name", "patient_id", "lesion_id", "diagnosis", "benign_malignant",
                         "target"], dataset="isic2020")
    check_unique(df, "image_name", gt)
    df["label"] = parse_binary(df["target"], {"0": 0, "1": 1}, path=gt, column="target")
    bm = parse_binary(df["benign_malignant"], {"benign": 0, "malignant": 1}, path=gt,
                      column="benign_malignant")
    if (bm != df["label"]).any():
        bad = df.loc[bm != df["label"], "image_name"].tolist()[:5]
        from melanoma.data.manifest import LabelFileError
        raise LabelFileError(f"{gt}: 'target' and 'benign_malignant' disagree for {bad}")
    df["image_id"] = df["image_name"]
    df["split"] = "train"
    res = ParseResult()
    files, _ = index_files(root / "train", root, JPG, into=res)
    parts = [attach_files(df, files, expected="train/{id}.jpg")]
    test_files, _ = index_files(root / "test", root, JPG, into=res)
    if test_files:
        t = pd.DataFrame({"image_id": sorted(test_files)})
        t["path"] = t["image_id"].map(test_files)
        t["label"] = -1
        t["diagnosis"] = "unlabelled (SIIM-ISIC leaderboard)"
        t["split"] = "test"
        parts.append((t, [], []))
    res = _finish(res, parts)
    dups = root / "ISIC_2020_Training_Duplicates.csv"
    if dups.is_file():
        d = read_table(dups, ["image_name_1", "image_name_2"], dataset="isic2020")
        known = set(df["image_name"])
        pairs = list(zip(d["image_name_1"], d["image_name_2"]))
        good = [(a, b) for a, b in pairs if a in known and b in known]
        unknown = [(a, b) for a, b in pairs if a not in known or b not in known]
        res.notes.append(f"{len(good)} of {len(pairs)} duplicate pairs listed in {dups.name} kept "
                         "together in one split (where both images were ingested)")
        if unknown:
            res.notes.append(f"{len(unknown)} duplicate pair(s) in {dups.name} name image ids that "
                             f"{gt.name} does not list, e.g. {list(unknown[0])}; those pairs were "
                             "not used (listed in report.json under 'unused_duplicate_pairs')")
            res.extra["unused_duplicate_pairs"] = [
                {"image_name_1": a, "image_name_2": b,
                 "unknown": [x for x in (a, b) if x not in known]} for a, b in unknown]
        res.records.attrs["duplicate_pairs"] = good
    return res


# ----------------------------------------------------------------------------- HAM10000

def parse_ham10000(root: Path) -> ParseResult:
    root = Path(root)
    meta = root / "HAM10000_metadata.csv"
    df = read_table(meta, ["lesion_id", "image_id", "dx"], dataset="ham10000")
    check_unique(df, "image_id", meta)
    known = {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"}
    bad = sorted(set(df["dx"].str.lower()) - known)
    if bad:
        from melanoma.data.manifest import LabelFileError
        raise LabelFileError(f"{meta}: column 'dx' has unknown value(s) {bad[:5]}; expected {sorted(known)}")
    df["label"] = (df["dx"].str.lower() == "mel").astype(int)
    df["diagnosis"] = df["dx"]
    df["split"] = "train"
    res = ParseResult()
    # both parts in one index, so an id present in both is reported instead of one copy vanishing
    cands: dict[str, list[Path]] = {}
    for part in ("HAM10000_images_part_1", "HAM10000_images_part_2"):
        for p in walk_files(root / part, root, res):
            if p.suffix.lower() in JPG:
                cands.setdefault(p.stem, []).append(p)
    files = pick_duplicates(cands, root, JPG, res)
    return _finish(res, [attach_files(df, files, expected="HAM10000_images_part_{{1,2}}/{id}.jpg")])

"""Tiny releases in the official layouts, generated on the fly (random pixels; no third-party
images): the raw material of the bad-input corpus and the workflow reliability tests.

Each ``make_<short>(root, ...)`` writes a *valid* minimal release under ``root`` and returns
``root``; a test then breaks one thing in it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def image(path: Path, seed: int = 0, size=(64, 48), fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    fmt = fmt or {".png": "PNG", ".bmp": "BMP"}.get(path.suffix.lower(), "JPEG")
    Image.fromarray(arr).save(path, fmt)
    return path


def write_csv(path: Path, header: list[str] | None, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return path


def isic_id(i: int) -> str:
    return f"ISIC_{i:07d}"


def make_isic2016(root: Path, n: int = 4) -> Path:
    for stem, labels in (("Training", ["benign", "malignant"]), ("Test", ["0.0", "1.0"])):
        rows = []
        for i in range(n):
            iid = isic_id(i + (0 if stem == "Training" else 100))
            image(root / f"ISBI2016_ISIC_Part3_{stem}_Data" / f"{iid}.jpg", i)
            rows.append([iid, labels[i % 2]])
        write_csv(root / f"ISBI2016_ISIC_Part3_{stem}_GroundTruth.csv", None, rows)
    return root


def make_isic2017(root: Path, n: int = 4) -> Path:
    for k, stem in enumerate(("Training", "Validation", "Test_v2")):
        rows = []
        for i in range(n):
            iid = isic_id(1000 * k + i)
            image(root / f"ISIC-2017_{stem}_Data" / f"{iid}.jpg", 10 * k + i)
            rows.append([iid, "1.0" if i % 2 else "0.0", "0.0"])
        write_csv(root / f"ISIC-2017_{stem}_Part3_GroundTruth.csv",
                  ["image_id", "melanoma", "seborrheic_keratosis"], rows)
    return root


ISIC2018_CLASSES = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]


def make_isic2018(root: Path, n: int = 4, rows_override=None) -> Path:
    for k, stem in enumerate(("Training", "Validation", "Test")):
        rows = []
        for i in range(n):
            iid = isic_id(2000 + 100 * k + i)
            image(root / f"ISIC2018_Task3_{stem}_Input" / f"{iid}.jpg", 20 * k + i)
            onehot = ["1.0" if c == ("MEL" if i % 2 else "NV") else "0.0" for c in ISIC2018_CLASSES]
            rows.append([iid] + onehot)
        if rows_override and stem in rows_override:
            rows = rows_override[stem](rows)
        gt = root / f"ISIC2018_Task3_{stem}_GroundTruth"
        write_csv(gt / f"ISIC2018_Task3_{stem}_GroundTruth.csv", ["image"] + ISIC2018_CLASSES, rows)
    return root


ISIC2019_CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]


def make_isic2019(root: Path, n: int = 6) -> Path:
    rows = []
    for i in range(n):
        iid = isic_id(5000 + i)
        image(root / "ISIC_2019_Training_Input" / f"{iid}.jpg", i)
        rows.append([iid] + ["1.0" if c == ("MEL" if i % 2 else "NV") else "0.0" for c in ISIC2019_CLASSES])
    write_csv(root / "ISIC_2019_Training_GroundTruth.csv", ["image"] + ISIC2019_CLASSES, rows)
    write_csv(root / "ISIC_2019_Training_Metadata.csv", ["image", "age_approx", "lesion_id"],
              [[r[0], "50", f"BCN_{i:07d}"] for i, r in enumerate(rows)])
    return root


def make_isic2020(root: Path, n: int = 6, dup_pairs=()) -> Path:
    rows = []
    for i in range(n):
        iid = isic_id(7000 + i)
        image(root / "train" / f"{iid}.jpg", i)
        t = i % 2
        rows.append([iid, f"IP_{i // 2:07d}", f"L{i}", "male", "50", "torso", "melanoma" if t else "nevus",
                     "malignant" if t else "benign", str(t)])
    write_csv(root / "ISIC_2020_Training_GroundTruth.csv",
              ["image_name", "patient_id", "lesion_id", "sex", "age_approx",
               "anatom_site_general_challenge", "diagnosis", "benign_malignant", "target"], rows)
    if dup_pairs:
        write_csv(root / "ISIC_2020_Training_Duplicates.csv", ["image_name_1", "image_name_2"], dup_pairs)
    return root


def make_derm7pt(root: Path, n: int = 6, derm=None) -> Path:
    base = root / "release_v0"
    rows = []
    diags = ["melanoma", "clark nevus", "melanoma (in situ)", "blue nevus", "melanosis", "seborrheic keratosis"]
    for i in range(n):
        rel = f"Aaa/Aaa{i:03d}.jpg"
        image(base / "images" / rel, i)
        rows.append([i + 1, diags[i % len(diags)], "", "", rel if derm is None else derm(i, rel), f"case{i}"])
    write_csv(base / "meta" / "meta.csv", ["case_num", "diagnosis", "seven_point_score", "clinic", "derm", "case_id"],
              rows)
    idx = list(range(n))
    for name, part in (("train", idx[: n // 2]), ("valid", idx[n // 2: n // 2 + n // 4]),
                       ("test", idx[n // 2 + n // 4:])):
        write_csv(base / "meta" / f"{name}_indexes.csv", ["indexes"], [[j] for j in part])
    return root


def make_ph2(root: Path, n: int = 4) -> Path:
    lines = ["|| Name || Histological Diagnosis || Clinical Diagnosis ||"]
    for i in range(n):
        cid = f"IMD{i:03d}"
        image(root / "PH2 Dataset images" / cid / f"{cid}_Dermoscopic_Image" / f"{cid}.bmp", i)
        lines.append(f"|| {cid} || || {2 if i % 2 else 0} ||")
    (root / "PH2_dataset.txt").write_text("\n".join(lines) + "\n")
    return root


def make_pad_ufes_20(root: Path, n: int = 4) -> Path:
    rows = []
    for i in range(n):
        img = f"PAT_{i}_{i}_{i}.png"
        image(root / "images" / "imgs_part_1" / img, i)
        rows.append([f"PAT_{i}", str(i), "MEL" if i % 2 else "NEV", img, "True"])
    write_csv(root / "metadata.csv", ["patient_id", "lesion_id", "diagnostic", "img_id", "biopsed"], rows)
    return root


def make_mednode(root: Path, n: int = 4, seed: int = 0) -> Path:
    for cls in ("melanoma", "naevus"):
        for i in range(n):
            image(root / "complete_mednode_dataset" / cls / f"{cls[:3]}{i:03d}.jpg", seed + i + (0 if cls == "melanoma" else 50))
    return root


def make_kaggle(root: Path, n: int = 4, seed: int = 0) -> Path:
    for split in ("train", "test"):
        for cls in ("benign", "malignant"):
            for i in range(n):
                image(root / split / cls / f"{i + 1}.jpg", seed + i + 100 * (cls == "malignant") + 1000 * (split == "test"),
                      size=(48, 48))
    return root


def make_ham10000(root: Path, n: int = 4) -> Path:
    rows = []
    for i in range(n):
        iid = isic_id(9000 + i)
        image(root / f"HAM10000_images_part_{1 + i % 2}" / f"{iid}.jpg", i)
        rows.append([f"HAM_{i:07d}", iid, "mel" if i % 2 else "nv", "histo", "50", "male", "back"])
    write_csv(root / "HAM10000_metadata.csv", ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"], rows)
    return root


MAKERS = {"isic2016": make_isic2016, "isic2017": make_isic2017, "isic2018": make_isic2018,
          "isic2019": make_isic2019, "isic2020": make_isic2020, "derm7pt": make_derm7pt, "ph2": make_ph2,
          "pad_ufes_20": make_pad_ufes_20, "mednode": make_mednode, "kaggle": make_kaggle,
          "ham10000": make_ham10000}

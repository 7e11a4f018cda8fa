"""Parser for Kaggle "Skin cancer: malignant vs benign" (fanconic).

``train/{benign,malignant}/*.jpg`` and ``test/{benign,malignant}/*.jpg``; the same numeric file
names occur in both class folders and in both splits, so the id is ``<split>_<class>_<stem>``.
"""

from __future__ import annotations

from pathlib import Path

from melanoma.data.manifest import ParseResult, class_folder_files, records_frame

CLASSES = {"benign": 0, "malignant": 1}
SUFFIXES = (".jpg", ".jpeg", ".png")


def parse_kaggle(root: Path) -> ParseResult:
    root = Path(root)
    res = ParseResult()
    rows, found = [], False
    for split in ("train", "test"):
        for cls, label in CLASSES.items():
            folder = root / split / cls
            if not folder.is_dir():
                continue
            found = True
            # 1.jpg and 1.png in one folder would be one id twice: one is used, the other reported
            for stem, path in sorted(class_folder_files(folder, root, SUFFIXES, res).items()):
                rows.append({"image_id": f"{split}_{cls}_{stem}", "path": path, "label": label,
                             "diagnosis": cls, "split": split})
    if not found:
        raise FileNotFoundError(f"kaggle: no train/{{benign,malignant}} or test/{{benign,malignant}} "
                                f"folders under {root}")
    res.records = records_frame(rows)
    return res

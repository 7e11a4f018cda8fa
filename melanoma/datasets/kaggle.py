"""Parser for Kaggle "Skin cancer: malignant vs benign" (fanconic).

``train/{benign,malignant}/*.jpg`` and ``test/{benign,malignant}/*.jpg``; the same numeric file
names occur in both class folders and in both splits, so the id is ``<split>_<class>_<stem>``.
"""

from __future__ import annotations

from pathlib import Path

from .manifest import ParseResult, records_frame

CLASSES = {"benign": 0, "malignant": 1}


def parse_kaggle(root: Path) -> ParseResult:
    root = Path(root)
    rows, unlisted, found = [], [], False
    for split in ("train", "test"):
        for cls, label in CLASSES.items():
            folder = root / split / cls
            if not folder.is_dir():
                continue
            found = True
            for p in sorted(folder.iterdir()):
                if not p.is_file() or p.name.startswith("."):
                    continue
                if p.suffix.lower() in (".jpg", ".jpeg", ".png"):
                    rows.append({"image_id": f"{split}_{cls}_{p.stem}",
                                 "path": p.relative_to(root).as_posix(), "label": label,
                                 "diagnosis": cls, "split": split})
                else:
                    unlisted.append({"path": p.relative_to(root).as_posix(), "reason": "not an image"})
    if not found:
        raise FileNotFoundError(f"kaggle: no train/{{benign,malignant}} or test/{{benign,malignant}} "
                                f"folders under {root}")
    return ParseResult(records=records_frame(rows), unlisted=unlisted)

"""Parser for Kaggle "Skin cancer: malignant vs benign" (fanconic).

``train/{benign,malignant}/*.jpg`` and ``test/{benign,malignant}/*.jpg``; the same numeric file
names occur in both class folders and in both splits, so the id is ``<split>_<class>_<stem>``.
"""

from __future__ import annotations

from pathlib import Path

from .manifest import ParseResult, pick_duplicates, records_frame, walk_files

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
            cands: dict[str, list[Path]] = {}
            for p in walk_files(folder, root, res):
                if p.parent != folder:
                    res.unlisted.append({"path": p.relative_to(root).as_posix(),
                                         "reason": "in a sub-folder of a class folder"})
                elif p.suffix.lower() in SUFFIXES:
                    cands.setdefault(p.stem, []).append(p)
                else:
                    res.unlisted.append({"path": p.relative_to(root).as_posix(), "reason": "not an image"})
            # 1.jpg and 1.png in one folder would be one id twice: one is used, the other reported
            for stem, path in sorted(pick_duplicates(cands, root, SUFFIXES, res).items()):
                rows.append({"image_id": f"{split}_{cls}_{stem}", "path": path, "label": label,
                             "diagnosis": cls, "split": split})
    if not found:
        raise FileNotFoundError(f"kaggle: no train/{{benign,malignant}} or test/{{benign,malignant}} "
                                f"folders under {root}")
    res.records = records_frame(rows)
    return res

"""Parser for MED-NODE: ``complete_mednode_dataset/{melanoma,naevus}/*.jpg`` (label = folder)."""

from __future__ import annotations

from pathlib import Path

from .manifest import ParseResult, records_frame, require_file

CLASSES = {"melanoma": 1, "naevus": 0}


def parse_mednode(root: Path) -> ParseResult:
    root = Path(root)
    base = root / "complete_mednode_dataset"
    if not base.is_dir():
        require_file(base / "melanoma", "folder complete_mednode_dataset/", "mednode")
    rows, unlisted = [], []
    for cls, label in CLASSES.items():
        folder = base / cls
        if not folder.is_dir():
            raise FileNotFoundError(f"mednode: class folder {folder} is missing")
        for p in sorted(folder.iterdir()):
            if p.is_file() and not p.name.startswith("."):
                if p.suffix.lower() in (".jpg", ".jpeg"):
                    rows.append({"image_id": f"{cls}_{p.stem}", "path": p.relative_to(root).as_posix(),
                                 "label": label, "diagnosis": cls, "split": "train"})
                else:
                    unlisted.append({"path": p.relative_to(root).as_posix(), "reason": "not a .jpg"})
    extra = sorted(d.name for d in base.iterdir() if d.is_dir() and d.name not in CLASSES)
    res = ParseResult(records=records_frame(rows), unlisted=unlisted)
    if extra:
        res.notes.append(f"folders ignored (not a class): {extra}")
    return res

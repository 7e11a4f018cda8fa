"""Parser for MED-NODE: ``complete_mednode_dataset/{melanoma,naevus}/*.jpg`` (label = folder)."""

from __future__ import annotations

from pathlib import Path

from melanoma.data.manifest import ParseResult, class_folder_files, records_frame, require_file

CLASSES = {"melanoma": 1, "naevus": 0}
SUFFIXES = (".jpg", ".jpeg")


def parse_mednode(root: Path) -> ParseResult:
    root = Path(root)
    base = root / "complete_mednode_dataset"
    if not base.is_dir():
        require_file(base / "melanoma", "folder complete_mednode_dataset/", "mednode")
    rows, res = [], ParseResult()
    for cls, label in CLASSES.items():
        folder = base / cls
        if not folder.is_dir():
            raise FileNotFoundError(f"mednode: class folder {folder} is missing")
        for stem, path in sorted(class_folder_files(folder, root, SUFFIXES, res, "not a .jpg").items()):
            rows.append({"image_id": f"{cls}_{stem}", "path": path, "label": label,
                         "diagnosis": cls, "split": "train"})
    extra = sorted(d.name for d in base.iterdir() if d.is_dir() and d.name not in CLASSES)
    res.records = records_frame(rows)
    if extra:
        res.notes.append(f"folders ignored (not a class): {extra}")
    return res

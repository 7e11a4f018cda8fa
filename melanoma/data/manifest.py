"""The manifest schema, the parsers' shared plumbing, and deterministic splits.

A parser turns one official release into a :class:`ParseResult`: one row per image the release's
label files list (``records``), plus everything that did not fit — listed images whose file is
missing, image files no label file lists — each with a reason. Ingest then decodes the images,
hashes them, makes the missing splits and writes ``manifest.parquet`` with :data:`MANIFEST_COLUMNS`.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

#: Columns of every ``manifest.parquet`` (in this order).
MANIFEST_COLUMNS = [
    "dataset",       # short name (isic2017)
    "letter",        # paper letter (B) or "" (HAM10000)
    "image_id",      # unique within the dataset
    "path",          # relative to the data root given to ingest
    "label",         # 1 melanoma, 0 not, -1 unknown (ISIC 2020 test)
    "diagnosis",     # the release's own label text
    "split",         # train / val / test (as released, or made)
    "release_split",  # the split the release gave ("" where it gave none)
    "patient_id",
    "lesion_id",
    "width",
    "height",
    "content_hash",  # sha256 of the file's bytes (cache key)
    "pixel_hash",    # sha256 of decoded pixels (finds renamed / re-saved copies)
    "phash",         # 64-bit perceptual (DCT) hash (finds resized / re-encoded copies)
    "dhash",         # 64-bit difference hash (second near-duplicate test, see dedup.py)
    "synthetic",     # True for the embedded synthetic replicas
]

RECORD_COLUMNS = ["image_id", "path", "label", "diagnosis", "split", "patient_id", "lesion_id"]
SPLITS = ("train", "val", "test")


class LabelFileError(ValueError):
    """A label file that cannot be read as its release documents it (names file and column)."""


@dataclass
class ParseResult:
    records: pd.DataFrame = field(default_factory=lambda: records_frame([]))
    missing: list[dict] = field(default_factory=list)    # listed, file absent
    unlisted: list[dict] = field(default_factory=list)   # file present, not listed
    ignored: dict[str, int] = field(default_factory=dict)  # e.g. {"superpixels": 2750}
    notes: list[str] = field(default_factory=list)
    outside: list[dict] = field(default_factory=list)    # resolves outside the release root: not read
    duplicates: list[dict] = field(default_factory=list)  # a second file for one image id: not used
    bad_labels: list[dict] = field(default_factory=list)  # listed rows whose label is undecidable
    extra: dict = field(default_factory=dict)             # more report.json fields of one parser


# ----------------------------------------------------------------------------- confinement
#
# Every path that comes from a label file or a directory walk must stay inside the release root
# once every symbolic link and ``..`` is resolved; anything else is reported (reason
# ``outside-root``) and never opened. A release folder that is itself a link is fine: the root is
# resolved first.

def real_root(root: Path) -> Path:
    return Path(os.path.realpath(root))


def confined(root: Path, path: Path) -> Path | None:
    """``path`` resolved, if it lies inside the (resolved) release ``root``; else None."""
    try:
        real = Path(os.path.realpath(path))
    except (OSError, RuntimeError, ValueError):  # a link loop, a NUL byte
        return None
    rr = real_root(root)
    return real if real == rr or real.is_relative_to(rr) else None


def outside_entry(root: Path, path: Path | str, *, source: str = "", resolve: bool = True) -> dict:
    """A report entry for a path that escapes the release root (it is not opened). ``resolve``:
    follow links to say where it leads; else the path is only normalised (``..``), untouched."""
    p = Path(path)
    full = p if p.is_absolute() else root / p
    shown = full.relative_to(root).as_posix() if _lex_inside(root, full) else str(path)
    try:
        target = os.path.realpath(full) if resolve else os.path.normpath(full)
    except (OSError, RuntimeError, ValueError):
        target = "(unresolvable)"
    return {"path": shown, "reason": "outside-root",
            "detail": f"resolves to {target}, outside the release folder {real_root(root)}"
                      + (f" (from {source})" if source else "")
                      + "; copy the file into the release folder (links are not followed out)"}


def _lex_inside(root: Path, p: Path) -> bool:
    try:
        p.relative_to(root)
        return True
    except ValueError:
        return False


def walk_files(folder: Path, root: Path, into: ParseResult) -> list[Path]:
    """Every regular file under ``folder`` (sorted, hidden names skipped) that resolves inside the
    release ``root``. A file or folder that is a link to somewhere outside is reported in
    ``into.outside`` (a folder once, without listing it); a folder reached twice through links is
    walked once (counted in ``into.ignored``)."""
    out: list[Path] = []
    if not folder.is_dir():
        return out
    if confined(root, folder) is None:
        into.outside.append(outside_entry(root, folder))
        return out
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            into.ignored["folders reached twice through links"] = \
                into.ignored.get("folders reached twice through links", 0) + 1
            continue
        seen.add(real)
        keep = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            full = Path(dirpath) / d
            if confined(root, full) is None:
                into.outside.append(outside_entry(root, full))
            else:
                keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            full = Path(dirpath) / name
            real_f = confined(root, full)
            if real_f is None:
                into.outside.append(outside_entry(root, full))
            elif real_f.is_file():
                out.append(full)
            else:  # a dangling link, a socket, a fifo
                into.unlisted.append({"path": full.relative_to(root).as_posix(),
                                      "reason": "not a regular file (dangling link?)"})
    return sorted(out)


def require_file(path: Path, what: str, dataset: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(
            f"{dataset}: {what} not found at {path}. Is --root the folder that directly holds the "
            f"release's official top-level items? See spec/datasets.md and the README's data section.")
    return path


def read_table(path: Path, required: list[str], *, dataset: str, header: bool = True,
               names: list[str] | None = None, **kw) -> pd.DataFrame:
    """Read a CSV as strings, with BOM tolerated and a clear error for a missing column."""
    require_file(path, "label file", dataset)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig",
                         header=0 if header else None, names=names, **kw)
    except pd.errors.EmptyDataError:
        raise LabelFileError(f"{path}: the label file is empty (0 bytes or blank); download the "
                             "release again") from None
    except (UnicodeDecodeError, pd.errors.ParserError, csv.Error) as e:
        raise LabelFileError(f"{path}: cannot parse as CSV ({e})") from e
    df.columns = [str(c).strip() for c in df.columns]
    miss = [c for c in required if c not in df.columns]
    if miss:
        hint = ""
        if len(df.columns) == 1 and any(d in df.columns[0] for d in ";\t|"):
            hint = " (the file seems to use another delimiter than ',')"
        raise LabelFileError(f"{path}: missing column(s) {miss}; found {list(df.columns)}{hint}")
    for c in df.columns:
        df[c] = df[c].str.strip()
    return df


def parse_binary(values: pd.Series, mapping: dict[str, int], *, path: Path, column: str) -> pd.Series:
    """Map label text to 0/1 with ``mapping``; any other value is a :class:`LabelFileError`."""
    norm = values.astype(str).str.strip().str.lower()
    bad = sorted(set(norm[~norm.isin(list(mapping))]))
    if bad:
        raise LabelFileError(f"{path}: column {column!r} has unknown label value(s) {bad[:5]}; "
                             f"expected one of {sorted(mapping)}")
    return norm.map(mapping).astype(int)


def check_unique(df: pd.DataFrame, col: str, path: Path) -> None:
    dup = df[col][df[col].duplicated()].unique()
    if len(dup):
        raise LabelFileError(f"{path}: duplicate {col} value(s) {list(dup[:5])} "
                             f"({len(dup)} in all); each image must be listed once")


def index_files(folder: Path, root: Path, suffixes: tuple[str, ...],
                exclude: tuple[str, ...] = (), *, into: ParseResult,
                id_of=lambda p: p.stem) -> tuple[dict[str, str], int]:
    """Map image id (the file stem, or ``id_of(path)``) → path relative to ``root`` for files
    under ``folder``; count excluded ones. Files resolving outside ``root`` go to ``into.outside``;
    when several files give one id (``x.jpg`` and ``x.jpeg``), the one whose suffix comes first
    in ``suffixes`` is used and the others go to ``into.duplicates``."""
    cands: dict[str, list[Path]] = {}
    n_excluded = 0
    for p in walk_files(folder, root, into):
        if any(x in p.name for x in exclude):
            n_excluded += 1
            continue
        if p.suffix.lower() in suffixes:
            cands.setdefault(id_of(p), []).append(p)
    return pick_duplicates(cands, root, suffixes, into), n_excluded


def class_folder_files(folder: Path, root: Path, suffixes: tuple[str, ...], into: ParseResult,
                       not_image: str = "not an image") -> dict[str, str]:
    """Image id (file stem) → path relative to ``root`` for the images directly in a class folder
    (one folder per label: MED-NODE, Kaggle). A file in a sub-folder, or with another suffix
    (reason ``not_image``), is reported in ``into.unlisted``; one id given by several files goes
    through :func:`pick_duplicates`."""
    cands: dict[str, list[Path]] = {}
    for p in walk_files(folder, root, into):
        if p.parent != folder:
            into.unlisted.append({"path": p.relative_to(root).as_posix(),
                                  "reason": "in a sub-folder of a class folder"})
        elif p.suffix.lower() in suffixes:
            cands.setdefault(p.stem, []).append(p)
        else:
            into.unlisted.append({"path": p.relative_to(root).as_posix(), "reason": not_image})
    return pick_duplicates(cands, root, suffixes, into)


def pick_duplicates(cands: dict[str, list[Path]], root: Path, suffixes: tuple[str, ...],
                    into: ParseResult) -> dict[str, str]:
    """One file per image id: the preferred suffix (then the shortest, then the first path);
    every other candidate is reported in ``into.duplicates``."""
    rank = {s: i for i, s in enumerate(suffixes)}
    found: dict[str, str] = {}
    for iid, ps in cands.items():
        ps = sorted(ps, key=lambda p: (rank.get(p.suffix.lower(), len(rank)), len(p.name), p.as_posix()))
        found[iid] = ps[0].relative_to(root).as_posix()
        for other in ps[1:]:
            into.duplicates.append({"image_id": iid, "path": other.relative_to(root).as_posix(),
                                    "reason": "duplicate-id",
                                    "detail": f"another file gives the same image id; "
                                              f"{found[iid]} is used, this one is not"})
    return found


def records_frame(rows: list[dict] | pd.DataFrame) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for c in RECORD_COLUMNS:
        if c not in df.columns:
            df[c] = ""
    df = df[RECORD_COLUMNS].copy()
    df["label"] = df["label"].astype(int)
    for c in ("image_id", "path", "diagnosis", "split", "patient_id", "lesion_id"):
        df[c] = df[c].fillna("").astype(str)
    return df.sort_values("image_id", kind="stable").reset_index(drop=True)


def attach_files(rows: pd.DataFrame, files: dict[str, str], *, key: str = "image_id",
                 expected: str = "") -> tuple[pd.DataFrame, list[dict], list[dict]]:
    """Join listed rows to found files by ``key``: returns (present rows, missing, unlisted)."""
    listed = set(rows[key])
    has = rows[key].isin(list(files))
    missing = [{"image_id": i, "label": int(lab), "expected": expected.format(id=i),
                "reason": "listed in labels, file missing"}
               for i, lab in zip(rows.loc[~has, key], rows.loc[~has, "label"])]
    unlisted = [{"path": p, "reason": "image file not listed in any label file"}
                for s, p in sorted(files.items()) if s not in listed]
    out = rows.loc[has].copy()
    out["path"] = out[key].map(files)
    return out, missing, unlisted


# ----------------------------------------------------------------------------- splits

def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def connected_groups(df: pd.DataFrame, pairs=()) -> np.ndarray:
    """A group key per row: rows sharing a patient, a lesion or identical pixels (``pixel_hash``,
    when present), and the listed duplicate ``pairs`` of image ids, are connected, transitively.
    The key is the smallest image id of the group."""
    parent = {i: i for i in df["image_id"]}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a, b):
        a, b = find(a), find(b)
        if a != b:
            parent[max(a, b)] = min(a, b)

    for col in ("patient_id", "lesion_id", "pixel_hash"):
        if col not in df.columns:
            continue
        for _, ids in df[df[col] != ""].groupby(col)["image_id"]:
            ids = sorted(ids)
            for other in ids[1:]:
                union(ids[0], other)
    for a, b in pairs:
        if a in parent and b in parent:
            union(a, b)
    return np.array(["G:" + find(i) for i in df["image_id"]])


def make_val_split(df: pd.DataFrame, *, seed: int = 0, val_fraction: float = 0.2,
                   from_split: str = "train", pairs=()) -> pd.Series:
    """Carve a validation split out of ``from_split`` rows; return the new ``split`` column.

    Deterministic and independent of row order: groups (images connected by a shared
    ``patient_id``, ``lesion_id``, identical pixels or a listed duplicate pair, across all rows;
    see :func:`connected_groups`)
    are ordered by ``sha256(seed:group)`` inside each label stratum (a group's stratum is its
    maximum label), and the first ``round(val_fraction * n_groups)`` of each stratum
    go to ``val``. Images of one lesion/patient never straddle train and val.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    split = df["split"].copy()
    sel = df["split"] == from_split
    if not sel.any():
        return split
    sub = df.loc[sel]
    group = connected_groups(df, pairs)[sel.to_numpy()]
    g = pd.DataFrame({"group": group, "label": sub["label"].clip(lower=0).values}, index=sub.index)
    strata = g.groupby("group")["label"].max()
    val_groups: set[str] = set()
    for _, groups in strata.groupby(strata):
        ordered = sorted(groups.index, key=lambda k: _rank(seed, k))
        n_val = int(round(val_fraction * len(ordered)))
        if len(ordered) >= 2:
            n_val = min(max(n_val, 1), len(ordered) - 1)
        val_groups.update(ordered[:n_val])
    split.loc[g.index[g["group"].isin(val_groups)]] = "val"
    return split


def summarize(manifest: pd.DataFrame) -> pd.DataFrame:
    """Counts per split: images and melanoma (label 1), as a small table."""
    rows = []
    for split in SPLITS:
        s = manifest[manifest["split"] == split]
        if len(s):
            rows.append({"split": split, "images": len(s), "melanoma": int((s["label"] == 1).sum()),
                         "unlabelled": int((s["label"] < 0).sum())})
    return pd.DataFrame(rows)


def read_manifest(work: str | Path, dataset: str) -> pd.DataFrame:
    from melanoma.data.registry import get

    short = get(dataset).short
    p = Path(work) / short / "manifest.parquet"
    if not p.is_file():
        raise FileNotFoundError(f"no manifest for {short} at {p}; run `melanoma ingest {short} "
                                f"--root <data>/{short} --out {work}` first")
    return pd.read_parquet(p)

"""A release's fingerprint: what its folder holds, cheaply, so changed data is never used stale.

The fingerprint is the sha256 over every file's relative path, size and modification time (links:
their target), hidden names skipped as ingest skips them. ``WORK/<name>/release.json`` holds the
fingerprint of the release as last seen; :func:`update_stamp` rewrites it **only when it changed**,
so its mtime says when the data last changed. The workflow's ingest rule takes that file as input:
delete an image or edit a label file and the next ``snakemake`` re-ingests the release and redoes
everything downstream (features, training, evaluation, report). Ingest also records the
fingerprint of the data it read in ``report.json``.

Measured: 0.15–0.18 s per 10,000 files (local disk, warm cache, 2 busy cores; ``lstat`` only, no
file is opened), so ~1.5 s per workflow start for all eleven real releases.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from melanoma.io import read_json, write_json


def fingerprint(root: str | os.PathLike) -> dict:
    """``{"sha256", "n_files", "bytes", "root"}`` of the folder ``root`` (``"missing"`` if absent)."""
    root = Path(root)
    if not root.is_dir():
        return {"sha256": "missing", "n_files": 0, "bytes": 0, "root": str(root)}
    h = hashlib.sha256()
    n = size = 0
    for dirpath, dirnames, filenames in os.walk(root):  # links to folders: recorded, not walked
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            if name.startswith("."):
                continue
            full = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name)).replace(os.sep, "/")
            try:
                st = os.lstat(full)
                link = os.readlink(full) if os.path.islink(full) else ""
            except OSError as e:  # vanished while walking, or unreadable: part of the state
                h.update(f"{rel}\0error {e.errno}\n".encode())
                continue
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0{link}\n".encode("utf-8", "surrogateescape"))
            n += 1
            size += st.st_size
    return {"sha256": h.hexdigest(), "n_files": n, "bytes": size, "root": str(root)}


def update_stamp(root: str | os.PathLike, stamp: str | os.PathLike) -> dict:
    """Make ``stamp`` (``WORK/<name>/release.json``) hold the fingerprint of ``root``; the file is
    rewritten only when the fingerprint changed (or it is missing or unreadable)."""
    stamp = Path(stamp)
    fp = fingerprint(root)
    try:
        old = read_json(stamp) if stamp.is_file() else None
    except (OSError, ValueError):
        old = None
    if not (isinstance(old, dict) and old.get("sha256") == fp["sha256"]):
        write_json(stamp, fp)
    return fp

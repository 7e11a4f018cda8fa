"""melanoma.data.fingerprint: a release folder's fingerprint changes when its files change, only then."""

from __future__ import annotations

import json
import os
import shutil

from melanoma.data.fingerprint import fingerprint, update_stamp


def _release(root):
    (root / "images" / "sub").mkdir(parents=True)
    (root / "labels.csv").write_text("image_id,melanoma\na,0\nb,1\n")
    (root / "images" / "a.jpg").write_bytes(b"A" * 100)
    (root / "images" / "sub" / "b.jpg").write_bytes(b"B" * 50)
    return root


def test_counts_files_and_bytes_and_is_stable(tmp_path):
    root = _release(tmp_path / "r")
    fp = fingerprint(root)
    assert fp["n_files"] == 3 and fp["bytes"] == len("image_id,melanoma\na,0\nb,1\n") + 150
    assert fp["root"] == str(root) and len(fp["sha256"]) == 64
    assert fingerprint(root) == fp  # nothing changed: the same fingerprint


def test_a_missing_folder(tmp_path):
    assert fingerprint(tmp_path / "nowhere") == {"sha256": "missing", "n_files": 0, "bytes": 0,
                                                  "root": str(tmp_path / "nowhere")}


def test_every_change_of_a_file_changes_it(tmp_path):
    root = _release(tmp_path / "r")
    seen = {fingerprint(root)["sha256"]}

    def changed():
        h = fingerprint(root)["sha256"]
        assert h not in seen
        seen.add(h)

    a = root / "images" / "a.jpg"
    st = a.stat()
    a.write_bytes(b"C" * 100)                                   # same size, new content: mtime moves
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    changed()
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000))  # touched only
    changed()
    a.write_bytes(b"C" * 101)                                   # size
    changed()
    (root / "images" / "c.jpg").write_bytes(b"new")             # a file added
    changed()
    (root / "images" / "sub" / "b.jpg").unlink()                # a file deleted
    changed()
    (root / "images" / "c.jpg").rename(root / "images" / "d.jpg")  # a file renamed
    changed()


def test_hidden_names_are_skipped_as_ingest_skips_them(tmp_path):
    root = _release(tmp_path / "r")
    fp = fingerprint(root)
    (root / ".DS_Store").write_bytes(b"x")
    (root / ".git").mkdir()
    (root / ".git" / "index").write_bytes(b"y" * 10)
    (root / "images" / "._a.jpg").write_bytes(b"z")
    assert fingerprint(root) == fp


def test_relative_paths_count_not_where_the_folder_is(tmp_path):
    """A copy with the same files, sizes and mtimes elsewhere has the same hash."""
    root = _release(tmp_path / "r")
    copy = tmp_path / "elsewhere" / "r2"
    shutil.copytree(root, copy, copy_function=shutil.copy2)
    for d in (root, copy):  # folders' own mtimes are not hashed; files' are: make them equal
        for f in d.rglob("*"):
            if f.is_file():
                os.utime(f, ns=(1_000_000_000, 2_000_000_000))
    a, b = fingerprint(root), fingerprint(copy)
    assert a["sha256"] == b["sha256"] and a["root"] != b["root"]


def test_links_are_recorded_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big.bin").write_bytes(b"o" * 1000)
    root = _release(tmp_path / "r")
    fp = fingerprint(root)
    (root / "linked").symlink_to(outside, target_is_directory=True)
    with_link = fingerprint(root)
    assert with_link["sha256"] != fp["sha256"]
    assert with_link["n_files"] == fp["n_files"] + 1          # the link itself, not the file behind it
    (outside / "big.bin").write_bytes(b"p" * 2000)            # what is behind the link does not count
    assert fingerprint(root)["sha256"] == with_link["sha256"]
    (root / "linked").unlink()
    (root / "linked").symlink_to(tmp_path, target_is_directory=True)  # another target
    assert fingerprint(root)["sha256"] != with_link["sha256"]


def test_update_stamp_rewrites_only_when_the_data_changed(tmp_path):
    root = _release(tmp_path / "r")
    stamp = tmp_path / "work" / "r" / "release.json"
    fp = update_stamp(root, stamp)
    assert json.loads(stamp.read_text()) == fp == fingerprint(root)
    os.utime(stamp, ns=(1, 1))                                # so a rewrite would show
    assert update_stamp(root, stamp) == fp and stamp.stat().st_mtime_ns == 1
    (root / "labels.csv").write_text("image_id,melanoma\na,1\nb,1\n")
    fp2 = update_stamp(root, stamp)
    assert fp2["sha256"] != fp["sha256"] and json.loads(stamp.read_text()) == fp2
    assert stamp.stat().st_mtime_ns != 1


def test_an_unreadable_stamp_is_rewritten(tmp_path):
    root = _release(tmp_path / "r")
    stamp = tmp_path / "release.json"
    stamp.write_text("{not json")
    fp = update_stamp(root, stamp)
    assert json.loads(stamp.read_text()) == fp
    stamp.write_text('["a list, not a stamp"]')
    update_stamp(root, stamp)
    assert json.loads(stamp.read_text()) == fp

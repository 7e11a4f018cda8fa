"""melanoma/io.py: atomic writes and reads that name what is wrong."""

from __future__ import annotations

import os
import stat

import numpy as np
import pandas as pd
import pytest
import torch

from melanoma.io import (CorruptFileError, atomic_path, read_json, read_torch, read_yaml, write_bytes, write_json,
                         write_parquet, write_text, write_yaml)


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    f = tmp_path / "out.json"
    write_json(f, {"a": 1})
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(f) as tmp:
            tmp.write_text('{"a": 2, "half')
            raise RuntimeError("boom")
    assert read_json(f) == {"a": 1}  # the complete old file, not the torn new one
    assert _leftovers(tmp_path) == []


def test_unserialisable_json_leaves_nothing_under_the_final_name(tmp_path):
    f = tmp_path / "x.json"
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        write_json(f, {"bad": object()})
    assert not f.exists() and _leftovers(f.parent) == []


def test_round_trips_with_numpy_and_paths(tmp_path):
    obj = {"i": np.int64(3), "f": np.float32(0.5), "v": np.arange(3), "p": tmp_path, "nan": float("nan")}
    write_json(tmp_path / "a.json", obj)
    back = read_json(tmp_path / "a.json")
    assert back["i"] == 3 and back["f"] == 0.5 and back["v"] == [0, 1, 2] and back["p"] == str(tmp_path)
    assert np.isnan(back["nan"])
    write_yaml(tmp_path / "a.yaml", {"b": [1, 2], "a": "x"})
    assert list(read_yaml(tmp_path / "a.yaml")) == ["b", "a"]  # key order kept
    write_text(tmp_path / "t.txt", "é\n")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "é\n"
    write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    df = pd.DataFrame({"x": [1, 2], "y": ["a", "b"]})
    write_parquet(tmp_path / "d.parquet", df)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "d.parquet"), df)
    assert _leftovers(tmp_path) == []


def test_a_finished_file_gets_the_umask_mode_not_mkstemps_0600(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    write_text(tmp_path / "m.txt", "x")
    assert stat.S_IMODE((tmp_path / "m.txt").stat().st_mode) == 0o666 & ~umask


def test_read_torch_names_a_truncated_file_and_the_fix(tmp_path):
    f = tmp_path / "checkpoint.pt"
    torch.save({"w": torch.ones(100)}, f)
    assert torch.equal(read_torch(f)["w"], torch.ones(100))
    f.write_bytes(f.read_bytes()[:50])
    with pytest.raises(CorruptFileError, match=r"checkpoint .*checkpoint\.pt is unreadable .*; delete it"):
        read_torch(f, what="checkpoint", fix="delete it")
    with pytest.raises(FileNotFoundError):  # missing is not corrupt
        read_torch(tmp_path / "absent.pt")

"""The bad-input corpus: every way a user's input can be wrong, generated here (random pixels and
hand-written label files, no third-party images), each with the outcome the program promises.

``tests/test_bad_input.py`` runs every case; the README's table "Bad input: what happens" is this
corpus rendered (``python -m tests.badinput`` prints it; a test fails when the README differs).
A case is a function ``(tmp, ctx)`` that builds its input under ``tmp``, runs the program on it and
asserts the outcome: a clear error that names the file/field and says what to do, or a counted,
reported skip — never a traceback deep in a stack, never a silent change.

``REFERENCES`` lists the cases that need a browser or a whole workflow; they live in the test
files named there (the README table lists them too, marked as such).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from . import releases as R

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Case:
    id: str
    area: str
    input: str
    outcome: str
    check: Callable


CASES: list[Case] = []


def case(area: str, input: str, outcome: str):
    def deco(fn):
        CASES.append(Case(fn.__name__, area, input, outcome, fn))
        return fn
    return deco


#: Cases that need a browser or a whole Snakemake run: (area, input, outcome, test).
REFERENCES = [
    ("web page", "a non-image file, a huge image, a tiny image dropped on the page",
     "a clear message on the page, no hang", "tests/report/test_web.py::test_bad_input_gives_a_clear_message"),
    ("web page", "any image scored in the page", "no request leaves the page's origin",
     "tests/report/test_web.py::test_no_request_leaves_the_origin"),
    ("kill", "SIGKILL of the whole workflow, twice, at random moments",
     "no half-written file; rerun gives the same summary", "tests/pipeline/test_workflow.py::test_sigkill_and_resume_gives_the_same_summary"),
    ("workflow", "an image deleted and a label changed in a release after ingest",
     "the next run re-ingests it and retrains the runs using it; a third run has nothing to do",
     "tests/pipeline/test_workflow_reliability.py::test_changed_data_is_reingested_and_retrained"),
    ("workflow", "data, work and results folders whose paths hold spaces, quotes and parentheses",
     "the workflow runs (every shell path quoted)", "tests/pipeline/test_workflow_reliability.py::test_grid_under_a_path_with_spaces_and_quotes"),
    ("workflow", "a run that failed, retried with `melanoma retry RUN --grid G`",
     "its steps and the summary are redone; the run is ok", "tests/pipeline/test_workflow_reliability.py::test_retry_reruns_a_failed_run"),
    ("book", "every page of the built book", "one `THEBE_JS_URL` declaration (no console error)",
     "tests/pipeline/test_workflow_reliability.py::test_book_pages_declare_thebe_once"),
    ("evaluate", "bad `melanoma reject --thresholds START:STOP:STEP`", "error naming the problem", "tests/evaluate/test_evaluate.py"),
    ("evaluate", "evaluation set with one class or no validation split",
     "a reported skip in `rejection.json`", "tests/evaluate/test_evaluate.py"),
    ("evaluate", "a rejection that keeps < 0.7 of its test split, relaxed its validation floor, or retains one class",
     "`flags` in `rejection.json` and `summary.parquet`; listed apart in the book, never ranked; captions say it",
     "tests/report/test_book.py::test_flagged_rejection_in_summary_tables_and_captions"),
    ("evaluate", "relative rejection thresholds with a value >= 1, absolute ones above 1 bit",
     "error naming the mode and the valid range", "tests/evaluate/test_evaluate.py"),
    ("params", "`solver: lbfgs` on the loop path, an empty or negative `reg_grid`",
     "`ParamError` naming the field", "tests/train/test_recipe.py"),
    ("memory", "`loader: resident` with too little free (device) memory",
     "`ResidentMemoryError` with the size needed and what is free, suggesting `loader: dataloader`",
     "tests/train/test_resident.py"),
    ("group", "runs trained together that differ in model / size / path or frozen weights",
     "`ValueError` naming the setting", "tests/train/test_group.py"),
    ("weights", "ImageNet weights offline and not cached",
     "`WeightsUnavailableError` naming the cache file and the pre-fetch command", "tests/train/test_weights.py"),
]


# ----------------------------------------------------------------------------- helpers

class Ctx:
    """What a case may need besides its own folder: a small ingested work folder (made once)."""

    def __init__(self, factory, monkeypatch):
        self._factory = factory
        self.monkeypatch = monkeypatch

    @property
    def work(self) -> Path:
        return _shared_work(self._factory)


_WORK: dict[str, Path] = {}


def _shared_work(factory) -> Path:
    if "w" not in _WORK:
        from melanoma.data.ingest import ingest_dataset

        d = factory.mktemp("badinput_work")
        R.make_mednode(d / "data" / "mednode", n=10)
        R.make_kaggle(d / "data" / "kaggle", n=10)
        for s in ("mednode", "kaggle"):
            ingest_dataset(s, d / "data" / s, d / "work", progress=False)
        _WORK["w"] = d / "work"
    return _WORK["w"]


def ingest(short, root, work, **kw):
    from melanoma.data.ingest import ingest_dataset

    return ingest_dataset(short, root, work, progress=False, **kw)


def parse(short, root):
    from melanoma.data.ingest import parse as _parse

    return _parse(short, root)


def cli(*argv) -> tuple[int, str]:
    """Run ``melanoma ARGV`` in-process: (exit code, stdout + stderr)."""
    from melanoma.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue()


def raises(exc, match: str, fn, *a, **kw):
    with pytest.raises(exc, match=match or None) as e:
        fn(*a, **kw)
    return e.value


def no_traceback(text: str) -> None:
    assert "Traceback" not in text, text


def _png_header(w: int, h: int) -> bytes:
    def chunk(t: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + t + data + struct.pack(">I", zlib.crc32(t + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def _bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


RGB = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)


def _decode(tmp: Path, name: str, data: bytes):
    from melanoma.data.images import open_image

    p = tmp / name
    p.write_bytes(data)
    return open_image(p)


def _bad_image(tmp: Path, name: str, data: bytes, reason: str) -> None:
    from melanoma.data.images import ImageError

    e = raises(ImageError, "", _decode, tmp, name, data)
    assert e.reason == reason and name in str(e)


def _mode(mode: str) -> tuple[Image.Image, str]:
    base = Image.fromarray(RGB)
    if mode == "I;16":
        return Image.fromarray(np.random.default_rng(1).integers(0, 65535, (40, 60)).astype(np.uint16)), "PNG"
    if mode in ("I", "F"):
        return base.convert("L").convert(mode), "TIFF"
    if mode in ("CMYK", "YCbCr"):
        return base.convert(mode), "JPEG"
    return base.convert(mode), "PNG"


def _to_rgb_ok(tmp: Path, mode: str) -> np.ndarray:
    im, fmt = _mode(mode)
    out = _decode(tmp, f"img.{fmt.lower()}", _bytes(im, fmt))
    assert out.dtype == np.uint8 and out.shape == (40, 60, 3)
    return out


def _isic2017_gt(root: Path, text: str, encoding="utf-8") -> Path:
    p = root / "ISIC-2017_Training_Part3_GroundTruth.csv"
    p.write_bytes(text.encode(encoding))
    return p


def _only_training_2017(root: Path, n=4) -> Path:
    R.make_isic2017(root, n=n)
    for stem in ("Validation", "Test_v2"):
        shutil.rmtree(root / f"ISIC-2017_{stem}_Data")
        (root / f"ISIC-2017_{stem}_Part3_GroundTruth.csv").unlink()
    return root


def _outside_image(tmp: Path) -> Path:
    return R.image(tmp / "elsewhere" / "secret.jpg", 99)


def _recording_reads(ctx) -> list[str]:
    """Record every path ingest decodes (the serial path runs in this process)."""
    import melanoma.data.ingest as ing

    seen: list[str] = []
    real = ing._decode

    def spy(args):
        seen.append(args[0])
        return real(args)

    ctx.monkeypatch.setattr(ing, "_decode", spy)
    return seen


def _grid(tmp: Path, text: str) -> Path:
    base = f"name: g\ndata: synthetic\nwork: {tmp}/work\nresults: {tmp}/results\n"
    p = tmp / "g.yaml"
    p.write_text(base + text)
    return p


GOOD = "models: [meshnet]\ncombinations: [B]\neval_sets: [ISIC2017]\n"


def _load_grid(p):
    from melanoma.pipeline.grid import expand, load_grid

    return expand(load_grid(p))


def _params(work: Path, out: Path, **kw):
    from melanoma.train.params import TrainParams

    d = dict(work=str(work), out=str(out), model="meshnet", weights="none", freeze="none", train="I",
             eval_sets=["kaggle"], image_size=32, epochs=2, augment=True)
    d.update(kw)
    return TrainParams.from_dict(d)


def _train(p, **kw):
    from melanoma.train.recipe import train_run

    return train_run(p, progress=False, log=lambda *a, **k: None, **kw)


# ============================================================================= images

@case("image", "zero-byte image", "`empty`, excluded and counted in `report.json` (`--strict`: error)")
def image_zero_byte(tmp, ctx):
    _bad_image(tmp, "zero.jpg", b"", "empty")


@case("image", "text file named `.jpg`", "`not-an-image`")
def image_text_as_jpg(tmp, ctx):
    _bad_image(tmp, "text.jpg", b"this is not an image\n" * 10, "not-an-image")


@case("image", "HTML page named `.png`", "`not-an-image`")
def image_html_as_png(tmp, ctx):
    _bad_image(tmp, "page.png", b"<!doctype html><html><body>404</body></html>", "not-an-image")


@case("image", "random bytes named `.bmp`", "`not-an-image`")
def image_random_bytes(tmp, ctx):
    _bad_image(tmp, "noise.bmp", np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
               "not-an-image")


@case("image", "truncated JPEG", "`truncated`")
def image_truncated_jpeg(tmp, ctx):
    _bad_image(tmp, "cut.jpg", _bytes(Image.fromarray(RGB), "JPEG")[:300], "truncated")


@case("image", "truncated PNG", "`truncated` or `corrupt`, never decoded half")
def image_truncated_png(tmp, ctx):
    from melanoma.data.images import ImageError

    data = _bytes(Image.fromarray(RGB), "PNG")
    e = raises(ImageError, "", _decode, tmp, "cut.png", data[: len(data) // 2])
    assert e.reason in ("truncated", "corrupt")


@case("image", "30000×30000 PNG header (decompression bomb)", "`too-large` from the header, before decoding")
def image_bomb(tmp, ctx):
    _bad_image(tmp, "bomb.png", _png_header(30000, 30000), "too-large")


@case("image", "1×1 px image", "`too-small` (minimum side 16)")
def image_one_pixel(tmp, ctx):
    _bad_image(tmp, "tiny.png", _bytes(Image.new("RGB", (1, 1)), "PNG"), "too-small")


@case("image", "15×200 px image (one side under 16)", "`too-small`")
def image_thin(tmp, ctx):
    _bad_image(tmp, "thin.png", _bytes(Image.new("RGB", (15, 200)), "PNG"), "too-small")


@case("image", "16×16 px image (the smallest allowed)", "decoded")
def image_min_side_ok(tmp, ctx):
    assert _decode(tmp, "ok.png", _bytes(Image.new("RGB", (16, 16)), "PNG")).shape == (16, 16, 3)


@case("image", "listed file deleted before decoding", "`missing`")
def image_missing(tmp, ctx):
    from melanoma.data.images import ImageError, open_image

    assert raises(ImageError, "", open_image, tmp / "gone.jpg").reason == "missing"


for _m in ("CMYK", "YCbCr", "P", "L", "1", "RGBA", "LA"):
    def _conv(tmp, ctx, m=_m):
        _to_rgb_ok(tmp, m)
    _conv.__name__ = f"image_mode_{_m.replace(';', '_').lower()}"
    case("image", f"{_m} image", "converted to RGB (alpha dropped)")(_conv)


for _m in ("I;16", "I", "F"):
    def _wide(tmp, ctx, m=_m):
        out = _to_rgb_ok(tmp, m)
        if m == "I;16":
            assert out.max() > 200 and out.min() < 50  # rescaled from the full range, not clipped
    _wide.__name__ = f"image_wide_{_m.replace(';', '_').lower()}"
    case("image", {"I;16": "16-bit PNG", "I": "32-bit integer TIFF", "F": "32-bit float TIFF"}[_m],
         "rescaled from its full range to 8 bits")(_wide)


@case("image", "EXIF-rotated photo", "pixels made upright")
def image_exif_rotated(tmp, ctx):
    exif = Image.Exif()
    exif[0x0112] = 6
    assert _decode(tmp, "rot.jpg", _bytes(Image.fromarray(RGB), "JPEG", exif=exif.tobytes())).shape[:2] == (60, 40)


@case("image", "PNG saved with a `.jpg` name", "decoded by content, not by name")
def image_png_named_jpg(tmp, ctx):
    assert _decode(tmp, "x.jpg", _bytes(Image.fromarray(RGB), "PNG")).shape == (40, 60, 3)


@case("image", "JPEG with trailing garbage after the image", "decoded (the image is intact)")
def image_trailing_garbage(tmp, ctx):
    assert _decode(tmp, "x.jpg", _bytes(Image.fromarray(RGB), "JPEG") + b"\0garbage" * 50).shape == (40, 60, 3)


@case("image", "a bad image inside a release", "excluded, listed in `report.json` `bad` with its reason; "
      "`--strict`: `BadImageError` naming the file")
def image_bad_in_release(tmp, ctx):
    from melanoma.data.ingest import BadImageError

    root = _only_training_2017(tmp / "r")
    (root / "ISIC-2017_Training_Data" / "ISIC_0000001.jpg").write_bytes(b"")
    m, r = ingest("isic2017", root, tmp / "w")
    assert r["n_bad"] == 1 and r["bad"][0]["reason"] == "empty" and "ISIC_0000001" not in set(m["image_id"])
    raises(BadImageError, "ISIC_0000001.jpg: empty", ingest, "isic2017", root, tmp / "w2", strict=True)


# ============================================================================= label files

@case("labels", "label file missing a column", "`LabelFileError` naming file and column")
def labels_missing_column(tmp, ctx):
    from melanoma.data.manifest import LabelFileError

    root = _only_training_2017(tmp)
    _isic2017_gt(root, "image_id,melanoma\nISIC_0000000,0.0\n")
    raises(LabelFileError, r"GroundTruth.csv.*seborrheic_keratosis", parse, "isic2017", root)


@case("labels", "unknown label value (`maybe`)", "`LabelFileError` naming file, column and the values")
def labels_unknown_value(tmp, ctx):
    from melanoma.data.manifest import LabelFileError

    root = _only_training_2017(tmp)
    _isic2017_gt(root, "image_id,melanoma,seborrheic_keratosis\nISIC_0000000,maybe,0.0\n")
    raises(LabelFileError, r"column 'melanoma' has unknown label value\(s\) \['maybe'\]", parse, "isic2017", root)


@case("labels", "duplicate image ids", "`LabelFileError` naming the ids")
def labels_duplicate_ids(tmp, ctx):
    from melanoma.data.manifest import LabelFileError

    root = _only_training_2017(tmp)
    _isic2017_gt(root, "image_id,melanoma,seborrheic_keratosis\nISIC_0000000,0.0,0.0\nISIC_0000000,1.0,0.0\n")
    raises(LabelFileError, "duplicate image_id.*ISIC_0000000", parse, "isic2017", root)


@case("labels", "`;`-delimited CSV", "`LabelFileError` that suggests the delimiter")
def labels_semicolon(tmp, ctx):
    from melanoma.data.manifest import LabelFileError

    root = _only_training_2017(tmp)
    _isic2017_gt(root, "image_id;melanoma;seborrheic_keratosis\nISIC_0000000;0.0;0.0\n")
    raises(LabelFileError, "another delimiter", parse, "isic2017", root)


@case("labels", "tab-delimited CSV", "`LabelFileError` that suggests the delimiter")
def labels_tab(tmp, ctx):
    from melanoma.data.manifest import LabelFileError

    root = _only_training_2017(tmp)
    _isic2017_gt(root, "image_id\tmelanoma\tseborrheic_keratosis\nISIC_0000000\t0.0\t0.0\n")
    raises(LabelFileError, "another delimiter", parse, "isic2017", root)


@case("labels", "UTF-8 BOM", "read normally")
def labels_bom(tmp, ctx):
    root = _only_training_2017(tmp)
    _isic2017_gt(root, "image_id,melanoma,seborrheic_keratosis\n"
                 + "".join(f"ISIC_{i:07d},{'1.0' if i % 2 else '0.0'},0.0\n" for i in range(4)), "utf-8-sig")
    assert len(parse("isic2017", root).records) == 4


@case("labels", "non-UTF-8 bytes", "`LabelFileError: cannot parse as CSV`")
def labels_latin1(tmp, ctx):
    from melanoma.data.manifest import LabelFileError

    root = _only_training_2017(tmp)
    (root / "ISIC-2017_Training_Part3_GroundTruth.csv").write_bytes(
        b"image_id,melanoma,seborrheic_keratosis,note\nISIC_0000000,0.0,0.0,caf\xe9\n")
    raises(LabelFileError, "cannot parse as CSV", parse, "isic2017", root)


@case("labels", "empty (0-byte) label file", "`LabelFileError`: the label file is empty")
def labels_empty_file(tmp, ctx):
    from melanoma.data.manifest import LabelFileError

    root = _only_training_2017(tmp)
    _isic2017_gt(root, "")
    raises(LabelFileError, "GroundTruth.csv: the label file is empty", parse, "isic2017", root)


@case("labels", "label file with a header and no rows", "`IngestError`: no usable image (0 listed)")
def labels_header_only(tmp, ctx):
    from melanoma.data.ingest import IngestError

    root = _only_training_2017(tmp / "r")
    _isic2017_gt(root, "image_id,melanoma,seborrheic_keratosis\n")
    raises(IngestError, "no usable image.*0 listed", ingest, "isic2017", root, tmp / "w")


@case("labels", "ids listed without an image", "counted as `missing` with the expected path")
def labels_listed_missing(tmp, ctx):
    root = _only_training_2017(tmp / "r")
    (root / "ISIC-2017_Training_Data" / "ISIC_0000003.jpg").unlink()
    _, r = ingest("isic2017", root, tmp / "w")
    assert r["n_missing"] == 1 and r["missing"][0]["expected"].endswith("ISIC_0000003.jpg")


@case("labels", "images no label file lists", "counted as `unlisted`")
def labels_unlisted(tmp, ctx):
    root = _only_training_2017(tmp / "r")
    R.image(root / "ISIC-2017_Training_Data" / "ISIC_0009999.jpg")
    _, r = ingest("isic2017", root, tmp / "w")
    assert r["n_unlisted"] == 1 and r["unlisted"][0]["path"].endswith("ISIC_0009999.jpg")


@case("labels", "ISIC 2017 `*_superpixels.png` beside the images", "not used; counted under `ignored`")
def labels_superpixels(tmp, ctx):
    root = _only_training_2017(tmp)
    R.image(root / "ISIC-2017_Training_Data" / "ISIC_0000000_superpixels.png")
    res = parse("isic2017", root)
    assert res.ignored["superpixels"] == 1 and len(res.records) == 4


@case("labels", "ISIC 2016 test labels `0`/`1` and `0.0`/`1.0` mixed", "both read")
def labels_isic2016_mixed(tmp, ctx):
    root = R.make_isic2016(tmp)
    R.write_csv(root / "ISBI2016_ISIC_Part3_Test_GroundTruth.csv", None,
                [[R.isic_id(100 + i), v] for i, v in enumerate(["0", "1.0", "0.0", "1"])])
    rec = parse("isic2016", root).records
    assert list(rec[rec["split"] == "test"]["label"]) == [0, 1, 0, 1]


@case("labels", "ISIC 2016 ground truth re-saved with a header row", "the header row is skipped")
def labels_isic2016_header(tmp, ctx):
    root = R.make_isic2016(tmp)
    p = root / "ISBI2016_ISIC_Part3_Training_GroundTruth.csv"
    p.write_text("image_id,label\n" + p.read_text())
    assert len(parse("isic2016", root).records) == 8


@case("labels", "ISIC 2016 training label `maybe`", "`LabelFileError` naming the column")
def labels_isic2016_bad(tmp, ctx):
    from melanoma.data.manifest import LabelFileError

    root = R.make_isic2016(tmp)
    R.write_csv(root / "ISBI2016_ISIC_Part3_Training_GroundTruth.csv", None, [[R.isic_id(0), "maybe"]])
    raises(LabelFileError, r"label \(2nd\).*maybe", parse, "isic2016", root)


def _onehot(tmp, short, row_fn, expect_reason):
    if short == "isic2018":
        root = R.make_isic2018(tmp / "r", rows_override={"Training": lambda rows: [row_fn(rows[0])] + rows[1:]})
    else:
        root = R.make_isic2019(tmp / "r")
        gt = root / "ISIC_2019_Training_GroundTruth.csv"
        df = pd.read_csv(gt, dtype=str)
        df.iloc[0] = row_fn(list(df.iloc[0]))
        df.to_csv(gt, index=False)
    m, r = ingest(short, root, tmp / "w")
    bad_id = r["bad_labels"][0]["image_id"]
    assert r["n_bad_labels"] == 1 and r["bad_labels"][0]["reason"] == expect_reason
    assert bad_id not in set(m["image_id"])
    return r


@case("labels", "ISIC 2018 one-hot row with MEL and NV both 1", "excluded, counted in `bad_labels` "
      "(`several-classes`, naming the classes)")
def labels_isic2018_two_classes(tmp, ctx):
    r = _onehot(tmp, "isic2018", lambda row: [row[0], "1.0", "1.0"] + ["0.0"] * 5, "several-classes")
    assert "MEL" in r["bad_labels"][0]["detail"] and "NV" in r["bad_labels"][0]["detail"]


@case("labels", "ISIC 2018 one-hot row of all zeros", "excluded, counted in `bad_labels` (`no-class`)")
def labels_isic2018_no_class(tmp, ctx):
    _onehot(tmp, "isic2018", lambda row: [row[0]] + ["0.0"] * 7, "no-class")


@case("labels", "ISIC 2019 one-hot row with MEL and NV both 1", "excluded, counted in `bad_labels`")
def labels_isic2019_two_classes(tmp, ctx):
    _onehot(tmp, "isic2019", lambda row: [row[0], "1.0", "1.0"] + ["0.0"] * 7, "several-classes")


@case("labels", "ISIC 2019 one-hot row of all zeros", "excluded, counted in `bad_labels`")
def labels_isic2019_no_class(tmp, ctx):
    _onehot(tmp, "isic2019", lambda row: [row[0]] + ["0.0"] * 9, "no-class")


@case("labels", "one-hot value `2`", "`LabelFileError` naming the column")
def labels_onehot_two(tmp, ctx):
    from melanoma.data.manifest import LabelFileError

    root = R.make_isic2018(tmp, rows_override={"Training": lambda rows: [[rows[0][0], "2"] + rows[0][2:]] + rows[1:]})
    raises(LabelFileError, "column 'MEL' has unknown label value", parse, "isic2018", root)


@case("labels", "one-hot bad row with `--strict`", "`BadImageError` naming the row")
def labels_onehot_strict(tmp, ctx):
    from melanoma.data.ingest import BadImageError

    root = R.make_isic2018(tmp / "r", rows_override={"Training": lambda rows: [[rows[0][0]] + ["0.0"] * 7] + rows[1:]})
    raises(BadImageError, "no-class", ingest, "isic2018", root, tmp / "w", strict=True)


@case("labels", "ISIC 2020 `target` and `benign_malignant` disagree", "`LabelFileError` naming the images")
def labels_isic2020_disagree(tmp, ctx):
    from melanoma.data.manifest import LabelFileError

    root = R.make_isic2020(tmp)
    gt = root / "ISIC_2020_Training_GroundTruth.csv"
    df = pd.read_csv(gt, dtype=str)
    df.loc[0, "target"] = "1"
    df.to_csv(gt, index=False)
    raises(LabelFileError, "disagree", parse, "isic2020", root)


@case("labels", "ISIC 2020 duplicate pairs naming ids the ground truth lacks",
      "pairs not used, counted in the note and listed under `unused_duplicate_pairs`")
def labels_isic2020_unknown_pairs(tmp, ctx):
    root = R.make_isic2020(tmp / "r", dup_pairs=[[R.isic_id(7000), R.isic_id(7002)], [R.isic_id(7001), "ISIC_9999999"]])
    _, r = ingest("isic2020", root, tmp / "w")
    assert "1 of 2 duplicate pairs" in " ".join(r["notes"])
    assert r["unused_duplicate_pairs"][0]["unknown"] == ["ISIC_9999999"]


@case("labels", "ISIC 2020 duplicates file missing a column", "`LabelFileError` naming file and column")
def labels_isic2020_dups_column(tmp, ctx):
    from melanoma.data.manifest import LabelFileError

    root = R.make_isic2020(tmp)
    R.write_csv(root / "ISIC_2020_Training_Duplicates.csv", ["image_name_1"], [[R.isic_id(7000)]])
    raises(LabelFileError, "Duplicates.csv: missing column.*image_name_2", parse, "isic2020", root)


@case("labels", "HAM10000 unknown `dx`", "`LabelFileError` naming the values")
def labels_ham_dx(tmp, ctx):
    from melanoma.data.manifest import LabelFileError

    root = R.make_ham10000(tmp)
    p = root / "HAM10000_metadata.csv"
    p.write_text(p.read_text().replace(",nv,", ",naevus,", 1))
    raises(LabelFileError, "'dx' has unknown value.*naevus", parse, "ham10000", root)


@case("labels", "PAD-UFES-20 unknown `diagnostic`", "`LabelFileError` naming the values")
def labels_pad_diag(tmp, ctx):
    from melanoma.data.manifest import LabelFileError

    root = R.make_pad_ufes_20(tmp)
    p = root / "metadata.csv"
    p.write_text(p.read_text().replace(",NEV,", ",MOLE,", 1))
    raises(LabelFileError, "'diagnostic' has unknown value.*MOLE", parse, "pad_ufes_20", root)


@case("labels", "PAD-UFES-20 `img_id` listed twice", "`LabelFileError` naming the id")
def labels_pad_dup(tmp, ctx):
    from melanoma.data.manifest import LabelFileError

    root = R.make_pad_ufes_20(tmp)
    p = root / "metadata.csv"
    lines = p.read_text().splitlines()
    p.write_text("\n".join(lines + [lines[1]]) + "\n")
    raises(LabelFileError, "duplicate img_id", parse, "pad_ufes_20", root)


@case("labels", "derm7pt `melanosis`", "not melanoma (word match); `melanoma (in situ)` is")
def labels_derm7pt_melanosis(tmp, ctx):
    rec = parse("derm7pt", R.make_derm7pt(tmp)).records.set_index("image_id")
    assert rec.loc["Aaa004", "label"] == 0 and rec.loc["Aaa002", "label"] == 1


@case("labels", "derm7pt path whose letter case differs from the files", "found")
def labels_derm7pt_case(tmp, ctx):
    root = R.make_derm7pt(tmp, derm=lambda i, rel: rel.upper() if i == 0 else rel)
    assert len(parse("derm7pt", root).records) == 6


@case("labels", "derm7pt index out of range", "`LabelFileError` naming the index file")
def labels_derm7pt_index_range(tmp, ctx):
    from melanoma.data.manifest import LabelFileError

    root = R.make_derm7pt(tmp)
    R.write_csv(root / "release_v0" / "meta" / "test_indexes.csv", ["indexes"], [[99]])
    raises(LabelFileError, "test_indexes.csv.*'99'", parse, "derm7pt", root)


@case("labels", "derm7pt row in two index files", "`LabelFileError` naming the row")
def labels_derm7pt_index_twice(tmp, ctx):
    from melanoma.data.manifest import LabelFileError

    root = R.make_derm7pt(tmp)
    R.write_csv(root / "release_v0" / "meta" / "test_indexes.csv", ["indexes"], [[0]])
    raises(LabelFileError, "row 0 is already in the train split", parse, "derm7pt", root)


@case("labels", "derm7pt index `x`", "`LabelFileError`")
def labels_derm7pt_index_text(tmp, ctx):
    from melanoma.data.manifest import LabelFileError

    root = R.make_derm7pt(tmp)
    R.write_csv(root / "release_v0" / "meta" / "test_indexes.csv", ["indexes"], [["x"]])
    raises(LabelFileError, "not a row number", parse, "derm7pt", root)


@case("labels", "derm7pt image listed by two cases", "`LabelFileError` naming the image")
def labels_derm7pt_same_image(tmp, ctx):
    from melanoma.data.manifest import LabelFileError

    root = R.make_derm7pt(tmp, derm=lambda i, rel: "Aaa/Aaa000.jpg" if i == 1 else rel)
    raises(LabelFileError, "listed twice.*Aaa000", parse, "derm7pt", root)


@case("labels", "PH2 xlsx without its header row", "`LabelFileError`")
def labels_ph2_xlsx_no_header(tmp, ctx):
    from melanoma.data.manifest import LabelFileError

    pd.DataFrame([["legend"], ["more legend"]]).to_excel(tmp / "PH2_dataset.xlsx", header=False, index=False)
    raises(LabelFileError, "Image Name", parse, "ph2", tmp)


@case("labels", "PH2 xlsx row with two `X` marks", "`LabelFileError` naming the image")
def labels_ph2_two_marks(tmp, ctx):
    from melanoma.data.manifest import LabelFileError

    rows = [["legend", "", "", ""]] * 3 + [["Image Name", "Common Nevus", "Atypical Nevus", "Melanoma"],
                                           ["IMD000", "X", "", "X"]]
    pd.DataFrame(rows).to_excel(tmp / "PH2_dataset.xlsx", header=False, index=False)
    raises(LabelFileError, "exactly one 'X'.*IMD000", parse, "ph2", tmp)


@case("labels", "PH2 txt without a `Clinical Diagnosis` header", "`LabelFileError`")
def labels_ph2_txt_header(tmp, ctx):
    from melanoma.data.manifest import LabelFileError

    (tmp / "PH2_dataset.txt").write_text("|| Name || Other ||\n|| IMD000 || 1 ||\n")
    raises(LabelFileError, "Clinical Diagnosis", parse, "ph2", tmp)


@case("labels", "PH2 txt diagnosis code `5`", "`LabelFileError` naming the value")
def labels_ph2_txt_code(tmp, ctx):
    from melanoma.data.manifest import LabelFileError

    root = R.make_ph2(tmp)
    p = root / "PH2_dataset.txt"
    p.write_text(p.read_text().replace("|| 2 ||", "|| 5 ||", 1))
    raises(LabelFileError, r"unknown value\(s\) \['5'\]", parse, "ph2", root)


@case("labels", "PH2 mask folders (`_lesion`, `_roi`)", "not inputs; counted under `ignored`")
def labels_ph2_masks(tmp, ctx):
    root = R.make_ph2(tmp)
    (root / "PH2 Dataset images" / "IMD000" / "IMD000_lesion").mkdir()
    assert parse("ph2", root).ignored["mask folders"] == 1


@case("labels", "missing data root", "`FileNotFoundError` saying where the release goes")
def labels_missing_root(tmp, ctx):
    raises(FileNotFoundError, "does not exist; download", parse, "isic2017", tmp / "nowhere")


@case("labels", "missing label file", "`FileNotFoundError` naming the file and the layout")
def labels_missing_gt(tmp, ctx):
    raises(FileNotFoundError, "ISIC_2019_Training_GroundTruth.csv.*--root", parse, "isic2019", tmp)


@case("labels", "MED-NODE without its class folder", "`FileNotFoundError` naming it")
def labels_mednode_class_folder(tmp, ctx):
    (tmp / "complete_mednode_dataset").mkdir()
    raises(FileNotFoundError, "melanoma", parse, "mednode", tmp)


@case("labels", "MED-NODE extra folder", "not used; named in the report's notes")
def labels_mednode_extra(tmp, ctx):
    root = R.make_mednode(tmp)
    (root / "complete_mednode_dataset" / "other").mkdir()
    assert "other" in " ".join(parse("mednode", root).notes)


@case("labels", "Kaggle without class folders", "`FileNotFoundError`")
def labels_kaggle_no_folders(tmp, ctx):
    raises(FileNotFoundError, "no train/", parse, "kaggle", tmp)


@case("labels", "a `.txt` file in a Kaggle class folder", "counted as `unlisted` (`not an image`)")
def labels_kaggle_txt(tmp, ctx):
    root = R.make_kaggle(tmp)
    (root / "train" / "benign" / "notes.txt").write_text("x")
    assert [u["reason"] for u in parse("kaggle", root).unlisted] == ["not an image"]


@case("labels", "an image in a sub-folder of a class folder", "counted as `unlisted`, not silently skipped")
def labels_class_subfolder(tmp, ctx):
    root = R.make_mednode(tmp)
    R.image(root / "complete_mednode_dataset" / "melanoma" / "more" / "x.jpg")
    assert [u["reason"] for u in parse("mednode", root).unlisted] == ["in a sub-folder of a class folder"]


@case("labels", "every listed image missing", "`IngestError` naming the counts, the first reasons and "
      "`report.json` (written); no manifest")
def labels_all_missing(tmp, ctx):
    from melanoma.data.ingest import IngestError

    root = _only_training_2017(tmp / "r")
    shutil.rmtree(root / "ISIC-2017_Training_Data")
    e = raises(IngestError, r"no usable image.*4 missing.*report.json", ingest, "isic2017", root, tmp / "w")
    rep = json.loads((tmp / "w" / "isic2017" / "report.json").read_text())
    assert rep["n_missing"] == 4 and not (tmp / "w" / "isic2017" / "manifest.parquet").exists()
    assert "ISIC_0000000" in str(e)


@case("labels", "every image undecodable", "`IngestError` with the reasons; `report.json` lists each file")
def labels_all_bad(tmp, ctx):
    from melanoma.data.ingest import IngestError

    root = _only_training_2017(tmp / "r")
    for p in (root / "ISIC-2017_Training_Data").iterdir():
        p.write_bytes(b"not an image")
    raises(IngestError, "(?s)4 bad.*not-an-image", ingest, "isic2017", root, tmp / "w")
    assert json.loads((tmp / "w" / "isic2017" / "report.json").read_text())["n_bad"] == 4


@case("labels", "re-ingest of a release that lost every image", "the stale manifest is removed, not trained on")
def labels_stale_manifest(tmp, ctx):
    from melanoma.data.ingest import IngestError

    root = _only_training_2017(tmp / "r")
    ingest("isic2017", root, tmp / "w")
    shutil.rmtree(root / "ISIC-2017_Training_Data")
    raises(IngestError, "no usable image", ingest, "isic2017", root, tmp / "w")
    assert not (tmp / "w" / "isic2017" / "manifest.parquet").exists()


# ============================================================================= paths

@case("paths", "derm7pt `derm` path with `../` to a file outside the release",
      "`outside-root` in `report.json`, excluded, never opened")
def paths_derm7pt_dotdot(tmp, ctx):
    _outside_image(tmp)
    root = R.make_derm7pt(tmp / "rel", derm=lambda i, rel: "../../../elsewhere/secret.jpg" if i == 0 else rel)
    reads = _recording_reads(ctx)
    m, r = ingest("derm7pt", root, tmp / "w")
    assert r["n_outside_root"] == 1 and r["outside_root"][0]["reason"] == "outside-root"
    assert len(m) == 5 and not any("secret" in p for p in reads)


@case("paths", "derm7pt `derm` path `/etc/passwd`", "`outside-root`, never opened")
def paths_derm7pt_absolute(tmp, ctx):
    root = R.make_derm7pt(tmp / "rel", derm=lambda i, rel: "/etc/passwd" if i == 1 else rel)
    reads = _recording_reads(ctx)
    _, r = ingest("derm7pt", root, tmp / "w")
    assert [o["path"] for o in r["outside_root"]] == ["/etc/passwd"]
    assert not any("passwd" in p for p in reads)


@case("paths", "derm7pt `derm` path with a Windows drive (`C:\\x.jpg`)", "`outside-root`")
def paths_derm7pt_drive(tmp, ctx):
    root = R.make_derm7pt(tmp / "rel", derm=lambda i, rel: "C:\\images\\x.jpg" if i == 1 else rel)
    assert len(parse("derm7pt", root).outside) == 1


@case("paths", "derm7pt image folder holding a link to a folder outside", "`outside-root`")
def paths_derm7pt_linked_folder(tmp, ctx):
    out = _outside_image(tmp).parent
    root = R.make_derm7pt(tmp / "rel", derm=lambda i, rel: "Out/secret.jpg" if i == 0 else rel)
    os.symlink(out, root / "release_v0" / "images" / "Out")
    res = parse("derm7pt", root)
    assert len(res.outside) == 1 and "secret" not in " ".join(res.records["path"])


@case("paths", "ISIC image that is a symbolic link to a file outside the release", "`outside-root`, excluded")
def paths_isic_file_link(tmp, ctx):
    secret = _outside_image(tmp)
    root = _only_training_2017(tmp / "rel")
    p = root / "ISIC-2017_Training_Data" / "ISIC_0000001.jpg"
    p.unlink()
    os.symlink(secret, p)
    reads = _recording_reads(ctx)
    m, r = ingest("isic2017", root, tmp / "w")
    assert r["n_outside_root"] == 1 and "ISIC_0000001" not in set(m["image_id"])
    assert r["n_missing"] == 1  # listed, and its only file is not usable
    assert not any("ISIC_0000001" in p for p in reads)


@case("paths", "ISIC image folder that is a link to a folder outside", "`outside-root` (the folder, once), "
      "its images `missing`")
def paths_isic_folder_link(tmp, ctx):
    root = _only_training_2017(tmp / "rel")
    shutil.move(root / "ISIC-2017_Training_Data", tmp / "moved")
    os.symlink(tmp / "moved", root / "ISIC-2017_Training_Data")
    res = parse("isic2017", root)
    assert len(res.outside) == 1 and len(res.missing) == 4


@case("paths", "a link inside the release to another file inside it", "used (links are resolved, then checked)")
def paths_link_inside(tmp, ctx):
    root = _only_training_2017(tmp / "rel")
    d = root / "ISIC-2017_Training_Data"
    shutil.move(d / "ISIC_0000001.jpg", root / "kept.jpg")
    os.symlink(root / "kept.jpg", d / "ISIC_0000001.jpg")
    m, r = ingest("isic2017", root, tmp / "w")
    assert len(m) == 4 and r["n_outside_root"] == 0


@case("paths", "the release folder itself is a link (data on another disk)", "ingested normally")
def paths_root_is_link(tmp, ctx):
    real = _only_training_2017(tmp / "disk" / "isic2017")
    os.symlink(real, tmp / "isic2017")
    m, r = ingest("isic2017", tmp / "isic2017", tmp / "w")
    assert len(m) == 4 and r["n_outside_root"] == 0


@case("paths", "Kaggle image linked to a file outside", "`outside-root`")
def paths_kaggle_link(tmp, ctx):
    secret = _outside_image(tmp)
    root = R.make_kaggle(tmp / "rel")
    os.symlink(secret, root / "train" / "benign" / "99.jpg")
    res = parse("kaggle", root)
    assert len(res.outside) == 1 and "train_benign_99" not in set(res.records["image_id"])


@case("paths", "MED-NODE class folder linked outside", "`outside-root`; that class is empty")
def paths_mednode_link(tmp, ctx):
    root = R.make_mednode(tmp / "rel")
    cls = root / "complete_mednode_dataset" / "naevus"
    shutil.move(cls, tmp / "naevus_elsewhere")
    os.symlink(tmp / "naevus_elsewhere", cls)
    res = parse("mednode", root)
    assert len(res.outside) == 1 and set(res.records["label"]) == {1}


@case("paths", "PH2 case folder linked outside", "`outside-root`")
def paths_ph2_link(tmp, ctx):
    root = R.make_ph2(tmp / "rel")
    case_dir = root / "PH2 Dataset images" / "IMD001"
    shutil.move(case_dir, tmp / "IMD001")
    os.symlink(tmp / "IMD001", case_dir)
    res = parse("ph2", root)
    assert len(res.outside) == 1 and "IMD001" not in set(res.records["image_id"])


@case("paths", "HAM10000 image linked outside", "`outside-root`")
def paths_ham_link(tmp, ctx):
    secret = _outside_image(tmp)
    root = R.make_ham10000(tmp / "rel")
    p = root / "HAM10000_images_part_1" / "ISIC_0009000.jpg"
    p.unlink()
    os.symlink(secret, p)
    assert len(parse("ham10000", root).outside) == 1


@case("paths", "a folder link that loops back to its parent", "walked once, no hang (counted under `ignored`)")
def paths_loop(tmp, ctx):
    root = _only_training_2017(tmp / "rel")
    os.symlink(root / "ISIC-2017_Training_Data", root / "ISIC-2017_Training_Data" / "loop")
    res = parse("isic2017", root)
    assert len(res.records) == 4 and res.ignored.get("folders reached twice through links") == 1


@case("paths", "a dangling link among the images", "counted as `unlisted` (not a regular file)")
def paths_dangling(tmp, ctx):
    root = _only_training_2017(tmp / "rel")
    os.symlink(root / "nothing.jpg", root / "ISIC-2017_Training_Data" / "ISIC_0000777.jpg")
    res = parse("isic2017", root)
    assert any("not a regular file" in u["reason"] for u in res.unlisted)


@case("paths", "a path outside the release with `--strict`", "`BadImageError` naming it")
def paths_strict(tmp, ctx):
    from melanoma.data.ingest import BadImageError

    root = R.make_derm7pt(tmp / "rel", derm=lambda i, rel: "/etc/passwd" if i == 1 else rel)
    raises(BadImageError, "outside-root", ingest, "derm7pt", root, tmp / "w", strict=True)


@case("paths", "data root whose path holds spaces and quotes", "ingested (paths are never split)")
def paths_spaces(tmp, ctx):
    root = R.make_mednode(tmp / "my data (copy) it's" / "mednode")
    assert len(ingest("mednode", root, tmp / "work dir")[0]) == 8


# ============================================================================= duplicate ids

@case("duplicates", "`ISIC_x.jpg` and `ISIC_x.jpeg`", "the `.jpg` used; the other listed in `duplicates`")
def dup_isic_jpeg(tmp, ctx):
    root = _only_training_2017(tmp / "r")
    R.image(root / "ISIC-2017_Training_Data" / "ISIC_0000001.jpeg", 5)
    m, r = ingest("isic2017", root, tmp / "w")
    assert r["n_duplicates"] == 1 and r["duplicates"][0]["path"].endswith(".jpeg")
    assert m.set_index("image_id").loc["ISIC_0000001", "path"].endswith(".jpg") and m["image_id"].is_unique


@case("duplicates", "Kaggle `1.jpg` and `1.png` in one class folder", "one image id, the other file in `duplicates`")
def dup_kaggle_png(tmp, ctx):
    root = R.make_kaggle(tmp / "r")
    R.image(root / "train" / "benign" / "1.png", 77)
    m, r = ingest("kaggle", root, tmp / "w")
    assert r["n_duplicates"] == 1 and m["image_id"].is_unique and len(m) == 16


@case("duplicates", "MED-NODE `x.jpg` and `x.JPG`", "one used, the other in `duplicates`")
def dup_mednode_case(tmp, ctx):
    root = R.make_mednode(tmp)
    R.image(root / "complete_mednode_dataset" / "melanoma" / "mel000.JPG", 55)
    res = parse("mednode", root)
    assert len(res.duplicates) == 1 and res.records["image_id"].is_unique


@case("duplicates", "ISIC 2019 `ISIC_x.jpg` and `ISIC_x_downsampled.jpg`", "the plain file used, the other in `duplicates`")
def dup_isic2019_downsampled(tmp, ctx):
    root = R.make_isic2019(tmp)
    R.image(root / "ISIC_2019_Training_Input" / "ISIC_0005000_downsampled.jpg", 9)
    res = parse("isic2019", root)
    assert len(res.duplicates) == 1 and "_downsampled" in res.duplicates[0]["path"]
    assert "_downsampled" not in " ".join(res.records["path"])


@case("duplicates", "HAM10000 id in both image parts", "one used, the other in `duplicates`")
def dup_ham_parts(tmp, ctx):
    root = R.make_ham10000(tmp)
    R.image(root / "HAM10000_images_part_2" / "ISIC_0009000.jpg", 8)
    res = parse("ham10000", root)
    assert len(res.duplicates) == 1 and res.records["image_id"].is_unique


@case("duplicates", "PAD-UFES-20 image in two `imgs_part_*` folders", "one used, the other in `duplicates`")
def dup_pad_parts(tmp, ctx):
    root = R.make_pad_ufes_20(tmp)
    R.image(root / "images" / "imgs_part_2" / "PAT_0_0_0.png", 4)
    assert len(parse("pad_ufes_20", root).duplicates) == 1


# ============================================================================= ingest as a whole

@case("ingest", "disk full while caching images", "`IngestError`: the disk is full, where, what to do; "
      "no partial file kept")
def ingest_disk_full(tmp, ctx):
    from melanoma.data.cache import ImageCache
    from melanoma.data.ingest import IngestError

    root = R.make_mednode(tmp / "r")

    def full(self, key, rgb):
        raise OSError(errno.ENOSPC, "No space left on device")

    ctx.monkeypatch.setattr(ImageCache, "put", full)
    raises(IngestError, "the disk is full while writing under .*cache.*free space", ingest, "mednode", root, tmp / "w")
    assert not (tmp / "w" / "mednode" / "manifest.parquet").exists()


@case("ingest", "disk full while writing the manifest (CLI)", "exit 2, one line, no traceback")
def ingest_disk_full_cli(tmp, ctx):
    import melanoma.data.ingest as ing

    root = R.make_mednode(tmp / "r")

    def full(path, df):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    ctx.monkeypatch.setattr(ing, "write_parquet", full)
    rc, out = cli("ingest", "mednode", "--root", root, "--out", tmp / "w", "--quiet")
    assert rc == 2 and "the disk is full" in out
    no_traceback(out)


@case("ingest", "`ingest --all` with a misnamed folder (`med_node`)", "error naming it: did you mean `mednode/`?")
def ingest_all_misnamed(tmp, ctx):
    R.make_mednode(tmp / "data" / "med_node")
    R.make_kaggle(tmp / "data" / "kaggle")
    rc, out = cli("ingest", "--all", "--root", tmp / "data", "--out", tmp / "w", "--quiet")
    assert rc == 2 and "med_node/: did you mean mednode/?" in out
    assert not (tmp / "w" / "kaggle").exists()


@case("ingest", "`ingest --all --skip-unknown` with an unknown folder", "the others ingested; the folder "
      "printed and listed in `ingest-all.json`")
def ingest_all_skip(tmp, ctx):
    R.make_kaggle(tmp / "data" / "kaggle")
    (tmp / "data" / "downloads").mkdir()
    rc, out = cli("ingest", "--all", "--root", tmp / "data", "--out", tmp / "w", "--quiet", "--skip-unknown")
    assert rc == 0 and "skipped" in out and "downloads" in out
    assert json.loads((tmp / "w" / "ingest-all.json").read_text())["unknown_folders"][0]["folder"] == "downloads"


@case("ingest", "`ingest --all` with two spellings of one release (`isic2017/`, `ISIC2017/`)", "error naming both")
def ingest_all_twice(tmp, ctx):
    from melanoma.data.ingest import IngestError, ingest_all

    _only_training_2017(tmp / "data" / "isic2017")
    _only_training_2017(tmp / "data" / "ISIC2017")
    raises(IngestError, "same release", ingest_all, tmp / "data", tmp / "w", progress=False)


@case("ingest", "`ingest --all` on a folder with no release", "`FileNotFoundError`")
def ingest_all_none(tmp, ctx):
    from melanoma.data.ingest import ingest_all

    raises(FileNotFoundError, "no release folders", ingest_all, tmp, tmp / "w")


@case("ingest", "unknown DATASET name", "error listing the valid letters and names")
def ingest_unknown_dataset(tmp, ctx):
    rc, out = cli("ingest", "isic2099", "--root", tmp, "--out", tmp / "w")
    assert rc == 2 and "unknown dataset 'isic2099'" in out and "B=isic2017" in out


@case("ingest", "a release changed after ingest (image deleted, label changed)",
      "its fingerprint changes: `report.json` and `WORK/<name>/release.json` record it")
def ingest_fingerprint_changes(tmp, ctx):
    from melanoma.data.fingerprint import fingerprint, update_stamp

    root = R.make_mednode(tmp / "r")
    _, r = ingest("mednode", root, tmp / "w")
    assert r["fingerprint"] == fingerprint(root)
    stamp = tmp / "w" / "mednode" / "release.json"
    update_stamp(root, stamp)
    t0 = stamp.stat().st_mtime_ns
    time.sleep(0.01)
    update_stamp(root, stamp)
    assert stamp.stat().st_mtime_ns == t0  # unchanged data: the stamp is not touched
    base = root / "complete_mednode_dataset"
    (base / "naevus" / "nae000.jpg").unlink()
    shutil.move(base / "naevus" / "nae001.jpg", base / "melanoma" / "nae001.jpg")
    assert update_stamp(root, stamp)["sha256"] != r["fingerprint"]["sha256"]
    assert json.loads(stamp.read_text())["n_files"] == 7


@case("ingest", "a label file edited in place (same size)", "the fingerprint changes (mtime)")
def ingest_fingerprint_edit(tmp, ctx):
    from melanoma.data.fingerprint import fingerprint

    root = _only_training_2017(tmp)
    a = fingerprint(root)
    gt = root / "ISIC-2017_Training_Part3_GroundTruth.csv"
    gt.write_text(gt.read_text().replace("ISIC_0000000,0.0", "ISIC_0000000,1.0"))
    os.utime(gt, ns=(gt.stat().st_atime_ns, gt.stat().st_mtime_ns + 10**9))
    assert fingerprint(root)["sha256"] != a["sha256"]


# ============================================================================= run parameters

def _bad_param(ctx, match, **kw):
    from melanoma.train.params import ParamError

    raises(ParamError, match, _params, ctx.work, ctx.work / "x", **kw)


for _id, _kw, _match, _input in [
        ("unknown_model", dict(model="resnt18"), r"model: unknown model \(did you mean 'resnet18'\?\)", "unknown model `resnt18`"),
        ("bad_combo", dict(train="A-Z"), r"TrainParams.train", "combination `A-Z`"),
        ("negative_epochs", dict(epochs=-3), r"epochs: must be a positive integer", "`epochs: -3`"),
        ("bad_freeze", dict(freeze="all"), r"freeze: must be one of", "`freeze: all`"),
        ("unknown_eval", dict(eval_sets=["ISIC2099"]), r"eval_sets: unknown dataset 'ISIC2099'", "unknown evaluation set"),
        ("empty_eval", dict(eval_sets=""), r"eval_sets: needs at least one evaluation set", "`eval_sets: \"\"`"),
        ("empty_eval_list", dict(eval_sets=[]), r"eval_sets: needs at least one", "`eval_sets: []`"),
        ("negative_views", dict(views=-1), r"views: must be an integer >= 0", "`views: -1`"),
        ("image_size_8", dict(image_size=8), r"image_size: must be at least 32 px", "`image_size: 8`"),
        ("image_size_31", dict(image_size=31), r"image_size: must be at least 32", "`image_size: 31`"),
        ("image_size_text", dict(image_size="224"), r"image_size: must be a positive integer", "`image_size: \"224\"`"),
        ("resize_small", dict(resize=16), r"resize: must be an integer >= image_size", "`resize` under `image_size`"),
        ("lr_text", dict(lr="fast"), r"lr: must be a number", "`lr: fast`"),
        ("lr_zero", dict(lr=0), r"need lr > 0", "`lr: 0`"),
        ("momentum_one", dict(momentum=1.0), r"momentum < 1", "`momentum: 1`"),
        ("augment_text", dict(augment="yes"), r"augment: must be true or false", "`augment: \"yes\"`"),
        ("seed_negative", dict(seed=-1), r"seed: must be an integer >= 0", "`seed: -1`"),
        ("batch_zero", dict(batch_size=0), r"batch_size: must be a positive integer", "`batch_size: 0`"),
        ("workers_negative", dict(workers=-1), r"workers: must be an integer >= 0", "`workers: -1`"),
        ("fast_with_conv", dict(fast=True, freeze="conv"), r"fast: the feature-cache path needs", "`fast: true` with `freeze: conv`"),
        ("bad_loader", dict(loader="gpu"), r"loader: must be one of", "`loader: gpu`"),
        ("unknown_field", dict(epoch=3), r"unknown field\(s\) 'epoch' \(did you mean 'epochs'\?\)", "unknown field `epoch`"),
]:
    def _pcase(tmp, ctx, kw=_kw, match=_match):
        _bad_param(ctx, match, **kw)
    _pcase.__name__ = f"params_{_id}"
    case("params", _input, "`ParamError` naming the field and the valid values")(_pcase)


@case("params", "work folder that does not exist", "`ParamError` telling to run `melanoma ingest`")
def params_missing_work(tmp, ctx):
    from melanoma.train.params import ParamError

    raises(ParamError, "run `melanoma ingest` first", _params, tmp / "nowhere", tmp / "x")


@case("params", "`melanoma train --image-size 8`", "exit 2 with the parameter error, before any work")
def params_cli_image_size(tmp, ctx):
    rc, out = cli("train", "--work", ctx.work, "--model", "meshnet", "--train", "I", "--eval", "J",
                  "--out", tmp / "run", "--image-size", "8", "--quiet")
    assert rc == 2 and "image_size: must be at least 32" in out and not (tmp / "run").exists()
    no_traceback(out)


@case("params", "`melanoma train --eval \"\"`", "exit 2: at least one evaluation set (it used to train, then print an empty table)")
def params_cli_empty_eval(tmp, ctx):
    rc, out = cli("train", "--work", ctx.work, "--model", "meshnet", "--train", "I", "--eval", "",
                  "--out", tmp / "run", "--quiet")
    assert rc == 2 and "eval_sets: needs at least one" in out and not (tmp / "run").exists()


@case("params", "params YAML with a Python tag (`!!python/object/apply:os.system`)",
      "`ParamError` naming file and line; nothing is executed")
def params_yaml_python_tag(tmp, ctx):
    from melanoma.train.params import ParamError, TrainParams

    p = tmp / "p.yaml"
    p.write_text(f"model: !!python/object/apply:os.system ['touch {tmp}/pwned']\n")
    raises(ParamError, r"p.yaml: not valid YAML \(line 1.*tags", TrainParams.from_yaml, p)
    assert not (tmp / "pwned").exists()


@case("params", "params YAML with a syntax error", "`ParamError` naming file, line and column")
def params_yaml_syntax(tmp, ctx):
    from melanoma.train.params import ParamError, TrainParams

    p = tmp / "p.yaml"
    p.write_text("model: meshnet\ntrain: [B, C\n")
    raises(ParamError, r"p.yaml: not valid YAML \(line \d+, column \d+\)", TrainParams.from_yaml, p)


@case("params", "params YAML holding a list", "`ParamError`: a mapping is expected")
def params_yaml_list(tmp, ctx):
    from melanoma.train.params import ParamError, TrainParams

    p = tmp / "p.yaml"
    p.write_text("- model\n- meshnet\n")
    raises(ParamError, "mapping", TrainParams.from_yaml, p)


@case("params", "`melanoma train --params` with a YAML syntax error", "exit 2, one line, no traceback")
def params_cli_yaml(tmp, ctx):
    p = tmp / "p.yaml"
    p.write_text("epochs: [1\n")
    rc, out = cli("train", "--work", ctx.work, "--out", tmp / "run", "--params", p)
    assert rc == 2 and "not valid YAML" in out
    no_traceback(out)


# ============================================================================= grid files

def _bad_grid(tmp, text, match):
    from melanoma.train.params import ParamError

    raises(ParamError, match, _load_grid, _grid(tmp, text))


for _id, _text, _match, _input in [
        ("typo_train", GOOD + "trian: {epochs: 3}\n", r"unknown key\(s\) 'trian' \(did you mean 'train'\?\)", "top-level typo `trian:`"),
        ("typo_overrides", GOOD + "model_overides: {meshnet: {epochs: 3}}\n", r"'model_overides' \(did you mean 'model_overrides'\?\)", "`model_overides:`"),
        ("typo_calibrate", GOOD + "calibrat: {bins: 10}\n", r"'calibrat' \(did you mean 'calibrate'\?\)", "`calibrat:`"),
        ("typo_train_key", GOOD + "train: {epoch: 3}\n", r"train: unknown key\(s\) 'epoch' \(did you mean 'epochs'\?\)", "`train: {epoch: 3}`"),
        ("typo_reject_key", GOOD + "reject: {min_coverge: 0.8}\n", r"reject: unknown key.*'min_coverage'", "`reject: {min_coverge: 0.8}`"),
        ("typo_calibrate_key", GOOD + "calibrate: {bin: 10}\n", r"calibrate: unknown key.*'bins'", "`calibrate: {bin: 10}`"),
        ("typo_override_key", GOOD + "model_overrides: {meshnet: {imagesize: 64}}\n", r"model_overrides.meshnet: unknown key.*'image_size'", "`model_overrides: {meshnet: {imagesize: 64}}`"),
        ("typo_synthetic_key", GOOD + "synthetic: {scal: 0.5}\n", r"synthetic: unknown key.*'scale'", "`synthetic: {scal: 0.5}`"),
        ("run_key_in_train", GOOD + "train: {model: resnet18}\n", r"train: unknown key\(s\) 'model'", "`train: {model: …}` (set by the grid)"),
        ("override_other_model", GOOD + "model_overrides: {meshnet_s4: {epochs: 3}}\n", r"models not in the grid: 'meshnet_s4' \(did you mean 'meshnet'\?\)", "override for a model not in the grid"),
        ("unknown_model", "models: [resnt18]\ncombinations: [B]\neval_sets: [ISIC2017]\n", r"unknown model 'resnt18' \(did you mean 'resnet18'\?\)", "unknown model"),
        ("unknown_combo", "models: [meshnet]\ncombinations: [B, X]\neval_sets: [ISIC2017]\n", r"combination 'X'", "unknown combination"),
        ("repeated_combo", "models: [meshnet]\ncombinations: [B, ISIC2017]\neval_sets: [ISIC2017]\n", r"combinations listed twice", "repeated combination"),
        ("no_models", "models: []\ncombinations: [B]\neval_sets: [ISIC2017]\n", r"models is empty: the grid would have 0 runs", "`models: []` (0 runs)"),
        ("no_combos", "models: [meshnet]\ncombinations: []\neval_sets: [ISIC2017]\n", r"combinations is empty: the grid would have 0 runs", "`combinations: []` (0 runs)"),
        ("no_eval", "models: [meshnet]\ncombinations: [B]\neval_sets: []\n", r"eval_sets must be a non-empty list", "`eval_sets: []`"),
        ("unknown_eval", "models: [meshnet]\ncombinations: [B]\neval_sets: [ISIC2099]\n", r"g.yaml: unknown dataset 'ISIC2099'", "unknown evaluation set"),
        ("missing_key", "models: [meshnet]\ncombinations: [B]\n", r"missing key 'eval_sets'", "missing `eval_sets`"),
        ("train_list", GOOD + "train: [epochs, 3]\n", r"'train' must be a mapping", "`train:` a list"),
        ("group_zero", GOOD + "group: 0\n", r"group for meshnet must be an integer >= 1", "`group: 0`"),
        ("reject_mode", GOOD + "reject: {mode: absolut}\n", r"reject.mode must be one of relative, absolute, coverage.*did you mean 'absolute'", "`reject: {mode: absolut}`"),
        ("reject_thresholds", GOOD + "reject: {thresholds: '0:x'}\n", r"reject.thresholds: thresholds must look like START:STOP:STEP", "`reject: {thresholds: '0:x'}`"),
        ("reject_grid_renamed", GOOD + "reject: {grid: '0:0.2:0.01'}\n", r"reject.grid was renamed to reject.thresholds", "`reject: {grid: …}` (the old name of `thresholds`)"),
        ("reject_coverage", GOOD + "reject: {min_coverage: 80}\n", r"min_coverage must be a number in \[0, 1\]", "`reject: {min_coverage: 80}`"),
        ("calibrate_bins", GOOD + "calibrate: {bins: 0}\n", r"calibrate.bins must be an integer >= 1", "`calibrate: {bins: 0}`"),
        ("web_run", GOOD + "web: {run: meshnet__C}\n", r"web.run is 'meshnet__C', not a run of this grid.*meshnet__B", "`web.run` naming no run"),
        ("figures_run", GOOD + "figures: {rejection: meshnet__BC}\n", r"figures.rejection is 'meshnet__BC'", "`figures:` naming no run"),
        ("override_combos", GOOD + "model_overrides: {meshnet: {combinations: [Q]}}\n", r"model_overrides.meshnet.combinations: 'Q'", "override `combinations: [Q]`"),
        ("bad_train_value", GOOD + "train: {epochs: -1}\n", r"run meshnet__B.*epochs: must be a positive integer", "`train: {epochs: -1}`"),
]:
    def _gcase(tmp, ctx, text=_text, match=_match):
        _bad_grid(tmp, text, match)
    _gcase.__name__ = f"grid_{_id}"
    case("grid", _input, "`ParamError` naming the file and the entry (unknown keys: did you mean)")(_gcase)


@case("grid", "grid YAML with a Python tag", "`ParamError` naming file and line; nothing executed")
def grid_python_tag(tmp, ctx):
    from melanoma.train.params import ParamError

    p = tmp / "g.yaml"
    p.write_text(f"name: !!python/object/apply:os.system ['touch {tmp}/pwned']\n" + GOOD)
    raises(ParamError, r"g.yaml: not valid YAML \(line 1", _load_grid, p)
    assert not (tmp / "pwned").exists()


@case("grid", "grid YAML with a syntax error", "`ParamError` naming file, line and column")
def grid_syntax(tmp, ctx):
    from melanoma.train.params import ParamError

    p = tmp / "g.yaml"
    p.write_text("name: g\nmodels: [meshnet\n")
    raises(ParamError, r"g.yaml: not valid YAML \(line \d+, column \d+\)", _load_grid, p)


@case("grid", "grid file holding a list", "`ParamError`: a grid file is a mapping")
def grid_list(tmp, ctx):
    from melanoma.train.params import ParamError

    p = tmp / "g.yaml"
    p.write_text("- models\n- meshnet\n")
    raises(ParamError, "a grid file .* is a mapping", _load_grid, p)


@case("grid", "`data: ${DATA_ROOT}` with DATA_ROOT unset", "`ParamError` telling to set DATA_ROOT")
def grid_data_root_unset(tmp, ctx):
    from melanoma.train.params import ParamError

    ctx.monkeypatch.delenv("DATA_ROOT", raising=False)
    p = tmp / "g.yaml"
    p.write_text("name: g\ndata: ${DATA_ROOT}\n" + GOOD)
    raises(ParamError, "set DATA_ROOT", _load_grid, p)


@case("grid", "`combinations:` naming a file that does not exist", "`ParamError` naming the file")
def grid_combo_file(tmp, ctx):
    _bad_grid(tmp, "models: [meshnet]\ncombinations: nope.txt\neval_sets: [ISIC2017]\n", "nope.txt, which does not exist")


@case("grid", "`melanoma grid expand` on a grid with a typo", "exit 2, one line, no traceback")
def grid_cli(tmp, ctx):
    rc, out = cli("grid", "expand", _grid(tmp, GOOD + "calibrat: {}\n"))
    assert rc == 2 and "did you mean 'calibrate'" in out
    no_traceback(out)


@case("grid", "the shipped grids (`params/demo.yaml`, `params/paper.yaml`)", "valid under the strict checks")
def grid_shipped(tmp, ctx):
    ctx.monkeypatch.setenv("DATA_ROOT", str(tmp))
    assert len(_load_grid(REPO / "params" / "demo.yaml")) >= 6
    assert len(_load_grid(REPO / "params" / "paper.yaml")) == 1296


# ============================================================================= checkpoints, models

def _killed_run(ctx, tmp):
    p = _params(ctx.work, tmp / "run", epochs=3)
    _train(p, stop_after=1)
    assert (tmp / "run" / "checkpoint.pt").is_file()
    return p


def _restarts_after(ctx, tmp, damage):
    p = _killed_run(ctx, tmp)
    ck = tmp / "run" / "checkpoint.pt"
    damage(ck)
    logs = []
    from melanoma.train.recipe import train_run

    out = train_run(p, progress=False, log=logs.append)
    run = json.loads((out / "run.json").read_text())
    aside = Path(run["checkpoint_moved_aside"]["file"])
    assert aside.is_file() and aside.name.startswith("checkpoint.corrupt-")
    assert any("checkpoint" in l and "moved aside" in l and "epoch 1" in l for l in logs), logs
    assert not ck.exists() and run["epochs"] == 3
    assert len(pd.read_csv(out / "history.csv")) == 3  # trained from scratch, all epochs
    return run


@case("checkpoint", "`checkpoint.pt` overwritten with garbage", "named in the log and `run.json`, moved aside, "
      "the run restarts from epoch 1 and finishes")
def checkpoint_garbage(tmp, ctx):
    _restarts_after(ctx, tmp, lambda ck: ck.write_bytes(b"\0garbage" * 100))


@case("checkpoint", "`checkpoint.pt` truncated to half", "moved aside, the run restarts and finishes")
def checkpoint_truncated(tmp, ctx):
    _restarts_after(ctx, tmp, lambda ck: ck.write_bytes(ck.read_bytes()[: ck.stat().st_size // 2]))


@case("checkpoint", "`checkpoint.pt` of zero bytes", "moved aside, the run restarts and finishes")
def checkpoint_empty(tmp, ctx):
    _restarts_after(ctx, tmp, lambda ck: ck.write_bytes(b""))


@case("checkpoint", "`checkpoint.pt` that is a valid file of the wrong structure", "moved aside, the run restarts")
def checkpoint_wrong_structure(tmp, ctx):
    import torch

    _restarts_after(ctx, tmp, lambda ck: torch.save({"hello": torch.zeros(3)}, ck))


@case("checkpoint", "`checkpoint.pt` whose weights do not fit the model", "moved aside, the run restarts")
def checkpoint_wrong_shapes(tmp, ctx):
    import torch

    def damage(ck):
        d = torch.load(ck, weights_only=True)
        d["model"] = {k: torch.zeros(1) for k in d["model"]}
        torch.save(d, ck)
    _restarts_after(ctx, tmp, damage)


@case("checkpoint", "a killed run resumed", "continues after its last finished epoch")
def checkpoint_resume(tmp, ctx):
    p = _killed_run(ctx, tmp)
    logs = []
    from melanoma.train.recipe import train_run

    train_run(p, progress=False, log=logs.append)
    assert any("resuming after epoch 1" in l for l in logs)


@case("checkpoint", "`melanoma export` on a truncated `model.pt`", "exit 2 naming the file and how to retrain, no traceback")
def checkpoint_export_truncated(tmp, ctx):
    out = _train(_params(ctx.work, tmp / "run", epochs=1))
    m = out / "model.pt"
    m.write_bytes(m.read_bytes()[:100])
    rc, text = cli("export", out, "--out", tmp / "web")
    assert rc == 2 and "model.pt is unreadable (truncated or corrupt" in text and "melanoma retry" in text
    no_traceback(text)


@case("checkpoint", "`melanoma export` on a folder that is not a run", "`FileNotFoundError` saying it is not a finished run")
def checkpoint_export_not_run(tmp, ctx):
    rc, text = cli("export", tmp, "--out", tmp / "web")
    assert rc == 2 and "is not a finished run" in text


@case("workers", "`workers: 2` instead of `0` (loop path, augmentation on)",
      "identical predictions: each image's augmentation is seeded by its place in the epoch "
      "(measured before: up to 8.8e-4 apart)")
def workers_identical(tmp, ctx):
    a = _train(_params(ctx.work, tmp / "w0", workers=0))
    b = _train(_params(ctx.work, tmp / "w2", workers=2))
    pa, pb = (pd.read_parquet(x / "predictions.parquet")["p_melanoma"].to_numpy() for x in (a, b))
    np.testing.assert_array_equal(pa, pb)


# ============================================================================= one writer per grid

def lock_holder(grid: Path, tmp: Path, seconds: int = 120) -> subprocess.Popen:
    """Another process holding ``grid``'s lock (for ``seconds``), returned once it holds it."""
    code = ("import time; from melanoma.pipeline.runner import grid_lock\n"
            f"with grid_lock({str(grid)!r}):\n    open({str(tmp / 'held')!r}, 'w').close(); time.sleep({seconds})\n")
    p = subprocess.Popen([sys.executable, "-c", code], cwd=tmp, env=dict(os.environ, PYTHONPATH=str(REPO)))
    for _ in range(1200):
        if (tmp / "held").exists():
            return p
        time.sleep(0.05)
    p.kill()
    raise AssertionError("the lock holder did not start")


@case("one writer", "a second run on a grid while the first is alive",
      "`GridBusyError` naming the owner's pid and command; nothing is unlocked")
def lock_second_run(tmp, ctx):
    from melanoma.pipeline.runner import GridBusyError, grid_lock

    g = _grid(tmp, GOOD)
    p = lock_holder(g, tmp)
    try:
        with pytest.raises(GridBusyError, match=f"being run by pid {p.pid}"):
            with grid_lock(g):
                pass
        rc, out = cli("demo", "--grid", g)
        assert rc == 2 and f"pid {p.pid}" in out
    finally:
        p.kill()
        p.wait()


@case("one writer", "the lock of a run that was SIGKILLed", "taken over by the next run (its owner is dead)")
def lock_stale(tmp, ctx):
    from melanoma.pipeline.runner import grid_lock

    g = _grid(tmp, GOOD)
    p = lock_holder(g, tmp)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    with grid_lock(g):
        assert str(os.getpid()) in (tmp / "results" / ".melanoma.lock").read_text()


@case("one writer", "Snakemake's lock while a Snakemake process works in the repository",
      "left alone (`--unlock` would remove every grid's locks)")
def lock_live_snakemake(tmp, ctx):
    from melanoma.pipeline.runner import live_snakemakes, unlock

    fake = tmp / "bin" / "snakemake"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nsleep 60\n")
    fake.chmod(0o755)
    p = subprocess.Popen([str(fake)], cwd=REPO)
    try:
        for _ in range(100):
            if p.pid in live_snakemakes(REPO):
                break
            time.sleep(0.05)
        assert p.pid in live_snakemakes(REPO)
        assert unlock(_grid(tmp, GOOD)) is False
    finally:
        p.kill()
        p.wait()


@case("one writer", "a killed head's Snakemake lock while its cluster jobs' Snakemakes (`--nolock`) run on",
      "not counted as live writers (they hold no lock): the lock is removed, so the rerun can resume")
def lock_cluster_jobs_running(tmp, ctx):
    from melanoma.pipeline.runner import live_snakemakes, unlock_with

    fake = tmp / "bin" / "snakemake"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nsleep 60\n")
    fake.chmod(0o755)
    wd = tmp / "wd"
    wd.mkdir()
    job = subprocess.Popen([str(fake), "--snakefile", "S", "--nolock", "--mode", "remote"], cwd=wd)
    head = None
    try:
        time.sleep(0.3)
        assert job.poll() is None and job.pid not in live_snakemakes(wd)
        marker = tmp / "unlocked"
        assert unlock_with(["sh", "-c", f"touch {marker}"], wd) is True and marker.exists()
        head = subprocess.Popen([str(fake), "--snakefile", "S"], cwd=wd)  # a head takes locks: counted
        for _ in range(100):
            if head.pid in live_snakemakes(wd):
                break
            time.sleep(0.05)
        marker.unlink()
        assert head.pid in live_snakemakes(wd) and unlock_with(["sh", "-c", f"touch {marker}"], wd) is False
        assert not marker.exists()
    finally:
        for p in (job, head):
            if p is not None:
                p.kill()
                p.wait()


@case("one writer", "`melanoma locked` (`make slurm-demo`'s Snakemake) on a grid another run holds",
      "refuses with the owner's pid; its command never runs")
def lock_locked_command(tmp, ctx):
    g = _grid(tmp, GOOD)
    p = lock_holder(g, tmp)
    try:
        marker = tmp / "ran"
        rc, out = cli("locked", "--grid", g, "--workdir", tmp, "--", "sh", "-c", f"touch {marker}")
        assert rc == 2 and f"being run by pid {p.pid}" in out and not marker.exists()
    finally:
        p.kill()
        p.wait()
    rc, out = cli("locked", "--grid", g, "--workdir", tmp, "--", "sh", "-c", "exit 3")
    assert rc == 3  # once free, the command runs under the lock and its exit status is passed on


@case("one writer", "`melanoma retry` with a run id not in the grid", "`ParamError` with did you mean")
def retry_unknown_run(tmp, ctx):
    rc, out = cli("retry", "meshnet__C", "--grid", _grid(tmp, GOOD))
    assert rc == 2 and "no run 'meshnet__C' in this grid (did you mean 'meshnet__B'?)" in out


@case("one writer", "`melanoma retry` on a run whose steps all succeeded", "says so and does nothing (`--force` retrains)")
def retry_not_failed(tmp, ctx):
    g = _grid(tmp, GOOD)
    d = tmp / "results" / "runs" / "meshnet__B"
    d.mkdir(parents=True)
    for s in ("train", "calibrate", "reject"):
        (d / f"status-{s}.json").write_text('{"status": "ok"}')
    rc, out = cli("retry", "meshnet__B", "--grid", g)
    assert rc == 0 and "did not fail" in out and "nothing to retry" in out


# ============================================================================= book

@case("book", "the book's pages (sphinx-thebe's inline script)", "`THEBE_JS_URL` declared once per page "
      "(it was twice: a console error on every page)")
def book_thebe_once(tmp, ctx):
    book = tmp / "book"
    book.mkdir()
    shutil.copy(REPO / "book" / "_config.yml", book / "_config.yml")
    cfg = (book / "_config.yml").read_text().replace('html_extra_path: ["_generated/extra"]', "html_copy_source: false")
    (book / "_config.yml").write_text(cfg)
    (book / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n- file: two\n")
    (book / "intro.md").write_text("# Intro\n\nOne.\n")
    (book / "two.md").write_text("# Two\n\nTwo.\n")
    jb = Path(sys.executable).parent / "jupyter-book"
    r = subprocess.run([str(jb), "build", str(book), "-W", "-n", "--keep-going"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    for page in ("intro", "two"):
        assert (book / "_build" / "html" / f"{page}.html").read_text().count("const THEBE_JS_URL") == 1


# ============================================================================= the README table

AREAS = ["image", "labels", "paths", "duplicates", "ingest", "params", "grid", "checkpoint", "workers",
         "one writer", "book", "evaluate", "memory", "group", "weights", "web page", "kill", "workflow"]


def markdown() -> str:
    """The README's bad-input table: every corpus case, then the cases other test files hold."""
    rows = [(c.area, c.input, c.outcome, f"`{c.id}`") for c in CASES]
    rows += [(a, i, o, f"`{t.split('::')[-1]}` ({t.split('::')[0].split('/')[-1]})") for a, i, o, t in REFERENCES]
    rows.sort(key=lambda r: AREAS.index(r[0]) if r[0] in AREAS else len(AREAS))
    lines = [f"{len(CASES)} cases generated and run by `tests/test_bad_input.py` (case name in the last column), "
             f"and {len(REFERENCES)} that need a browser or a whole workflow run (test file named).",
             "", "| area | input | outcome | case |", "|---|---|---|---|"]
    cell = lambda x: x.replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines += [f"| {cell(a)} | {cell(i)} | {cell(o)} | {t} |" for a, i, o, t in rows]
    return "\n".join(lines) + "\n"


BEGIN = "<!-- bad-input table: generated from tests/badinput.py by `python -m tests.badinput`; do not edit -->"
END = "<!-- end of bad-input table -->"


def readme_section(text: str) -> str:
    a, b = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[a:b].strip("\n") + "\n"


def write_readme(readme: Path = REPO / "README.md") -> None:
    text = readme.read_text()
    a, b = text.index(BEGIN) + len(BEGIN), text.index(END)
    readme.write_text(text[:a] + "\n" + markdown() + text[b:])


if __name__ == "__main__":
    if "--write" in sys.argv:
        write_readme()
    else:
        print(markdown(), end="")

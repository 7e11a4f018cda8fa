"""Parsers on the real samples in ../shared/realdata (skipped where the folder is absent)."""

from __future__ import annotations

import pytest

from melanoma.data.dedup import find_duplicates
from melanoma.data.ingest import ingest_dataset, parse
from melanoma.data.manifest import MANIFEST_COLUMNS

from tests.conftest import realdata


def _counts(m, split):
    s = m[m["split"] == split]
    return len(s), int((s["label"] == 1).sum())


@pytest.fixture(scope="module")
def real_work(tmp_path_factory):
    work = tmp_path_factory.mktemp("realwork")
    out = {}
    for ds, sub in [("mednode", "MEDNODE"), ("isic2017", "ISIC2017"), ("ph2", "PH2"), ("isic2016", "ISIC2016")]:
        out[ds] = ingest_dataset(ds, realdata(sub), work, progress=False)
    return work, out


def test_mednode(real_work):
    m, r = real_work[1]["mednode"]
    assert (len(m), int(m["label"].sum())) == (170, 70)
    assert r["n_missing"] == r["n_bad"] == 0
    assert set(m["split"]) == {"train", "val"}  # made 80:20
    assert abs((m["split"] == "val").mean() - 0.2) < 0.02
    assert list(m.columns) == MANIFEST_COLUMNS


def test_isic2017(real_work):
    m, r = real_work[1]["isic2017"]
    assert _counts(m, "train") == (2000, 374)
    assert _counts(m, "val") == (150, 30)
    assert _counts(m, "test") == (600, 117)
    assert r["validation_split"] == "as released"
    assert not m["path"].str.contains("superpixels").any()


def test_ph2_xlsx_and_missing_images(real_work):
    m, r = real_work[1]["ph2"]
    res = parse("ph2", realdata("PH2"))
    listed = len(res.records) + len(res.missing)
    listed_mel = int(res.records["label"].sum()) + sum(x["label"] for x in res.missing)
    assert (listed, listed_mel) == (200, 40)
    assert len(m) == 24 and int(m["label"].sum()) == 8
    assert r["n_missing"] == 176 and r["n_listed"] == 200
    assert all(x["reason"].startswith("listed") for x in r["missing"])


def test_isic2016_test_csv(real_work):
    m, r = real_work[1]["isic2016"]
    res = parse("isic2016", realdata("ISIC2016"))
    listed = len(res.records) + len(res.missing)
    listed_mel = int(res.records["label"].sum()) + sum(x["label"] for x in res.missing)
    assert (listed, listed_mel) == (379, 75)
    assert len(m) == 305 and r["n_missing"] == 74
    missing_file = realdata("ISIC2016") / "MISSING_IMAGES.txt"
    if missing_file.is_file():
        expected = {l.split(",")[0].strip() for l in missing_file.read_text().splitlines()
                    if l.startswith("ISIC_")}
        assert {x["image_id"] for x in r["missing"]} == expected


def test_isic2016_test_inside_isic2017_training(real_work):
    _, out = real_work
    a, b = out["isic2017"][0], out["isic2016"][0]
    pairs = find_duplicates(a[a["split"] == "train"], b)
    by_id = pairs[pairs["kind"] == "id"]
    assert by_id["image_id_b"].nunique() == 305
    # and the same 305 have identical pixels (checked independently of the id)
    pix = a[a["split"] == "train"].merge(b, on="pixel_hash")
    assert pix["image_id_y"].nunique() == 305
    assert (pix["image_id_x"] == pix["image_id_y"]).all()


def test_reingest_is_incremental_and_identical(real_work, tmp_path):
    work, out = real_work
    m1, _ = out["mednode"]
    m2, r2 = ingest_dataset("mednode", realdata("MEDNODE"), work, progress=False)
    assert r2["n_reused"] == 170 and r2["n_decoded"] == 0
    assert m1.equals(m2)

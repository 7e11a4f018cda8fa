"""Bad label files and bad images inside a release → a clear error or a counted, reported skip."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from melanoma.data.ingest import BadImageError, ingest_dataset, parse
from melanoma.data.manifest import LabelFileError


def _img(p, seed=0):
    p.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(p, "JPEG")


def make_isic2017(root, rows, header="image_id,melanoma,seborrheic_keratosis", sep=",",
                  encoding="utf-8", images=None):
    d = root / "ISIC-2017_Training_Data"
    d.mkdir(parents=True, exist_ok=True)
    for i, iid in enumerate(images if images is not None else [r[0] for r in rows]):
        _img(d / f"{iid}.jpg", i)
    text = header.replace(",", sep) + "\n" + "\n".join(sep.join(r) for r in rows) + "\n"
    (root / "ISIC-2017_Training_Part3_GroundTruth.csv").write_bytes(text.encode(encoding))
    return root


ROWS = [("ISIC_0000001", "0.0", "0.0"), ("ISIC_0000002", "1.0", "0.0"), ("ISIC_0000003", "0.0", "1.0")]


def test_good_minimal_release(tmp_path):
    res = parse("isic2017", make_isic2017(tmp_path, ROWS))
    assert list(res.records["label"]) == [0, 1, 0]
    assert list(res.records["diagnosis"]) == ["nevus", "melanoma", "seborrheic_keratosis"]


def test_missing_column(tmp_path):
    make_isic2017(tmp_path, [r[:2] for r in ROWS], header="image_id,melanoma")
    with pytest.raises(LabelFileError, match=r"ISIC-2017_Training_Part3_GroundTruth.csv.*seborrheic_keratosis"):
        parse("isic2017", tmp_path)


def test_unknown_label(tmp_path):
    make_isic2017(tmp_path, ROWS + [("ISIC_0000004", "maybe", "0.0")])
    with pytest.raises(LabelFileError, match=r"column 'melanoma' has unknown label value\(s\) \['maybe'\]"):
        parse("isic2017", tmp_path)


def test_duplicate_ids(tmp_path):
    make_isic2017(tmp_path, ROWS + [ROWS[0]], images=[r[0] for r in ROWS])
    with pytest.raises(LabelFileError, match="duplicate image_id"):
        parse("isic2017", tmp_path)


def test_wrong_delimiter(tmp_path):
    make_isic2017(tmp_path, ROWS, sep=";")
    with pytest.raises(LabelFileError, match="another delimiter"):
        parse("isic2017", tmp_path)


def test_bom_is_tolerated(tmp_path):
    make_isic2017(tmp_path, ROWS, encoding="utf-8-sig")
    assert len(parse("isic2017", tmp_path).records) == 3


def test_wrong_encoding_is_clear(tmp_path):
    make_isic2017(tmp_path, ROWS, header="image_id,melanoma,seborrheic_keratosis,note")
    p = tmp_path / "ISIC-2017_Training_Part3_GroundTruth.csv"
    p.write_bytes(p.read_bytes().replace(b"\n", b",caf\xe9\n", 1))
    with pytest.raises(LabelFileError, match="cannot parse as CSV"):
        parse("isic2017", tmp_path)


def test_ids_without_images_and_images_without_ids(tmp_path):
    make_isic2017(tmp_path, ROWS, images=["ISIC_0000001", "ISIC_0000002", "ISIC_0000009"])
    m, r = ingest_dataset("isic2017", tmp_path, tmp_path / "work", progress=False)
    assert r["n_missing"] == 1 and r["missing"][0]["image_id"] == "ISIC_0000003"
    assert r["n_unlisted"] == 1 and r["unlisted"][0]["path"].endswith("ISIC_0000009.jpg")
    assert len(m) == 2 and r["n_listed"] == 3


def test_bad_image_is_reported_or_strict_error(tmp_path):
    make_isic2017(tmp_path, ROWS)
    (tmp_path / "ISIC-2017_Training_Data" / "ISIC_0000002.jpg").write_bytes(b"not a jpeg")
    m, r = ingest_dataset("isic2017", tmp_path, tmp_path / "work", progress=False)
    assert r["n_bad"] == 1 and r["bad"][0]["reason"] == "not-an-image"
    assert "ISIC_0000002" not in set(m["image_id"]) and len(m) == 2
    with pytest.raises(BadImageError, match="ISIC_0000002.jpg: not-an-image"):
        ingest_dataset("isic2017", tmp_path, tmp_path / "work2", strict=True, progress=False)


def test_missing_root_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        parse("isic2017", tmp_path / "nowhere")


def test_missing_label_file_is_clear(tmp_path):
    (tmp_path / "complete_mednode_dataset").mkdir()
    with pytest.raises(FileNotFoundError, match="melanoma"):
        parse("mednode", tmp_path)


def test_isic2016_string_and_float_labels(tmp_path):
    for stem, rows in (("Training", [("ISIC_0000001", "benign"), ("ISIC_0000002", "malignant")]),
                       ("Test", [("ISIC_0000003", "0.0"), ("ISIC_0000004", "1")])):
        for i, (iid, _) in enumerate(rows):
            _img(tmp_path / f"ISBI2016_ISIC_Part3_{stem}_Data" / f"{iid}.jpg", i)
        (tmp_path / f"ISBI2016_ISIC_Part3_{stem}_GroundTruth.csv").write_text(
            "\n".join(",".join(r) for r in rows) + "\n")
    rec = parse("isic2016", tmp_path).records
    assert dict(zip(rec["image_id"], rec["label"])) == {
        "ISIC_0000001": 0, "ISIC_0000002": 1, "ISIC_0000003": 0, "ISIC_0000004": 1}
    assert dict(zip(rec["image_id"], rec["split"]))["ISIC_0000003"] == "test"


def test_ph2_xlsx_without_header_row(tmp_path):
    import pandas as pd

    pd.DataFrame([["legend"], ["more legend"]]).to_excel(tmp_path / "PH2_dataset.xlsx", header=False, index=False)
    with pytest.raises(LabelFileError, match="Image Name"):
        parse("ph2", tmp_path)


def test_derm7pt_melanosis_is_not_melanoma(tmp_path):
    base = tmp_path / "release_v0"
    (base / "meta").mkdir(parents=True)
    diags = ["melanoma (in situ)", "melanosis", "melanoma metastasis", "clark nevus"]
    rows = []
    for i, d in enumerate(diags):
        _img(base / "images" / "ABC" / f"Abc{i:03d}.jpg", i)
        rows.append({"case_num": i + 1, "diagnosis": d, "derm": f"abc/ABC{i:03d}.JPG".replace("ABC", "Abc"),
                     "clinic": ""})
    import pandas as pd

    pd.DataFrame(rows).to_csv(base / "meta" / "meta.csv", index=False)
    for name, idx in (("train", [0, 1]), ("valid", [2]), ("test", [3])):
        pd.DataFrame({"indexes": idx}).to_csv(base / "meta" / f"{name}_indexes.csv", index=False)
    rec = parse("derm7pt", tmp_path).records.set_index("image_id")
    assert rec["label"].to_dict() == {"Abc000": 1, "Abc001": 0, "Abc002": 1, "Abc003": 0}
    assert rec.loc["Abc002", "split"] == "val"

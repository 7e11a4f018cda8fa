"""Tests of the SYNTHETIC dataset replicas (:mod:`melanoma.data.synthetic`).

The replicas must reproduce the official layouts of the eleven releases (``shared/spec/
datasets.md``), hit the requested counts, be byte-for-byte deterministic, contain the planted
duplicates, and carry images whose look separates the classes imperfectly.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from melanoma.data.registry import SHORT_NAMES
from melanoma.data.synthetic import BASE_COUNTS, GENERATOR, requested_counts, write_replicas

SCALE = 0.3


@pytest.fixture(scope="module")
def replica(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synthetic") / "data"
    return out, write_replicas(out, scale=SCALE, seed=0)


@pytest.fixture(scope="module")
def truth(replica) -> dict[str, pd.DataFrame]:
    out, _ = replica
    return {s: pd.read_csv(out / s / "SYNTHETIC_truth.csv", dtype={"image_id": str, "path": str})
            for s in SHORT_NAMES}


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _auc(scores, labels) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half)."""
    s, y = np.asarray(scores, float), np.asarray(labels)
    pos, neg = s[y == 1], s[y == 0]
    return float(((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum())
                 / (len(pos) * len(neg)))


# ---------------------------------------------------------------------------------------------
# layout
# ---------------------------------------------------------------------------------------------

def test_every_release_and_ground_truth_files(replica):
    out, summary = replica
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(SHORT_NAMES)
    assert (out / "PLANTED_DUPLICATES.csv").is_file()
    assert set(summary["counts"]) == set(SHORT_NAMES)
    for s in SHORT_NAMES:
        info = json.loads((out / s / "SYNTHETIC.json").read_text())
        assert info["synthetic"] is True and info["generator"] == GENERATOR
        assert info["seed"] == 0 and info["scale"] == SCALE and info["dataset"] == s
        t = pd.read_csv(out / s / "SYNTHETIC_truth.csv")
        assert list(t.columns) == ["image_id", "label", "split", "path"]
        assert t["image_id"].is_unique
        assert set(t["split"]) <= {"train", "val", "test"}
        for p in t["path"]:
            assert (out / s / p).is_file(), (s, p)


def test_isic2016_layout_and_headerless_csvs(replica, truth):
    root = replica[0] / "isic2016"
    for name in ("ISBI2016_ISIC_Part3_Training_Data", "ISBI2016_ISIC_Part3_Test_Data"):
        files = sorted((root / name).iterdir())
        assert files and all(re.fullmatch(r"ISIC_\d{7}\.jpg", f.name) for f in files)
    train_csv = root / "ISBI2016_ISIC_Part3_Training_GroundTruth.csv"
    test_csv = root / "ISBI2016_ISIC_Part3_Test_GroundTruth.csv"
    assert train_csv.read_text().startswith("ISIC_")  # no header
    assert test_csv.read_text().startswith("ISIC_")
    tr = pd.read_csv(train_csv, header=None, dtype=str)
    te = pd.read_csv(test_csv, header=None, dtype=str)
    assert tr.shape[1] == 2 and te.shape[1] == 2
    assert set(tr[1]) == {"benign", "malignant"}
    assert set(te[1]) == {"0.0", "1.0"}
    t = truth["isic2016"].set_index("image_id")
    assert all(t.loc[i, "label"] == int(v == "malignant") for i, v in zip(tr[0], tr[1]))
    assert all(t.loc[i, "label"] == int(float(v)) for i, v in zip(te[0], te[1]))
    assert set(tr[0]) == set(t.index[t.split == "train"])


def test_isic2017_layout(replica, truth):
    root = replica[0] / "isic2017"
    t = truth["isic2017"].set_index("image_id")
    for stem, split in (("ISIC-2017_Training", "train"), ("ISIC-2017_Validation", "val"),
                        ("ISIC-2017_Test_v2", "test")):
        gt = pd.read_csv(root / f"{stem}_Part3_GroundTruth.csv", dtype={"melanoma": str})
        assert list(gt.columns) == ["image_id", "melanoma", "seborrheic_keratosis"]
        assert set(gt["melanoma"]) == {"0.0", "1.0"}
        assert set(gt["image_id"]) == set(t.index[t.split == split])
        assert all(t.loc[gt.image_id, "label"].to_numpy() == gt["melanoma"].astype(float).astype(int))
        folder = root / f"{stem}_Data"
        jpgs = sorted(folder.glob("ISIC_*.jpg"))
        assert len(jpgs) == len(gt)
        for jpg in jpgs[:5]:  # every image has its superpixel map, same size
            sp = folder / f"{jpg.stem}_superpixels.png"
            assert sp.is_file()
            assert Image.open(sp).size == Image.open(jpg).size
        assert len(list(folder.glob("*_superpixels.png"))) == len(gt)


def test_isic2018_layout(replica, truth):
    root = replica[0] / "isic2018"
    t = truth["isic2018"].set_index("image_id")
    for name, split in (("Training", "train"), ("Validation", "val"), ("Test", "test")):
        assert (root / f"ISIC2018_Task3_{name}_Input").is_dir()
        gt_dir = root / f"ISIC2018_Task3_{name}_GroundTruth"
        gt = pd.read_csv(gt_dir / f"ISIC2018_Task3_{name}_GroundTruth.csv")
        assert list(gt.columns) == ["image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
        assert (gt.iloc[:, 1:].sum(axis=1) == 1.0).all()  # one-hot
        assert set(gt["image"]) == set(t.index[t.split == split])
        assert all(t.loc[gt.image, "label"].to_numpy() == gt["MEL"].astype(int))
    groups = pd.read_csv(root / "ISIC2018_Task3_Training_LesionGroupings.csv")
    assert list(groups.columns[:2]) == ["image", "lesion_id"]
    assert groups["lesion_id"].nunique() < len(groups)  # some lesions have several images


def test_isic2019_and_ham10000_layout(replica, truth):
    out = replica[0]
    root = out / "isic2019"
    gt = pd.read_csv(root / "ISIC_2019_Training_GroundTruth.csv")
    assert list(gt.columns) == ["image", "MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
    meta = pd.read_csv(root / "ISIC_2019_Training_Metadata.csv")
    assert list(meta.columns) == ["image", "age_approx", "anatom_site_general", "lesion_id", "sex"]
    assert set(meta["image"]) == set(gt["image"])
    assert all((root / "ISIC_2019_Training_Input" / f"{i}.jpg").is_file() for i in gt["image"])
    t = truth["isic2019"].set_index("image_id")
    assert all(t.loc[gt.image, "label"].to_numpy() == gt["MEL"].astype(int))

    ham = out / "ham10000"
    hm = pd.read_csv(ham / "HAM10000_metadata.csv")
    assert list(hm.columns) == ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]
    in_parts = {p.stem for part in (1, 2) for p in (ham / f"HAM10000_images_part_{part}").glob("ISIC_*.jpg")}
    assert in_parts == set(hm["image_id"])
    assert all((ham / f"HAM10000_images_part_{k}").is_dir() for k in (1, 2))
    t18 = truth["isic2018"]
    assert set(hm["image_id"]) == set(t18.image_id[t18.split == "train"])  # HAM10000 = 2018 training
    th = truth["ham10000"].set_index("image_id")
    assert all(th.loc[hm.image_id, "label"].to_numpy() == (hm["dx"] == "mel").astype(int))


def test_isic2020_layout(replica, truth):
    root = replica[0] / "isic2020"
    gt = pd.read_csv(root / "ISIC_2020_Training_GroundTruth.csv")
    assert list(gt.columns) == ["image_name", "patient_id", "lesion_id", "sex", "age_approx",
                                "anatom_site_general_challenge", "diagnosis", "benign_malignant",
                                "target"]
    assert ((gt["target"] == 1) == (gt["benign_malignant"] == "malignant")).all()
    assert gt["patient_id"].nunique() < len(gt)  # several images per patient
    assert all((root / "train" / f"{i}.jpg").is_file() for i in gt["image_name"])
    dups = pd.read_csv(root / "ISIC_2020_Training_Duplicates.csv")
    assert list(dups.columns) == ["image_name_1", "image_name_2"] and len(dups) >= 1
    for a, b in zip(dups.image_name_1, dups.image_name_2):
        assert np.array_equal(_pixels(root / "train" / f"{a}.jpg"), _pixels(root / "train" / f"{b}.jpg"))
    held = pd.read_csv(root / "ISIC_2020_Test_GroundTruth_SYNTHETIC.csv")
    assert list(held.columns) == ["image_name", "target"]
    test_files = {p.stem for p in (root / "test").glob("ISIC_*.jpg")}
    assert test_files == set(held["image_name"])
    t = truth["isic2020"]
    assert (t.label[t.split == "test"] == -1).all()  # unlabelled in the release
    assert int(held["target"].sum()) == requested_counts(SCALE)["isic2020"]["test"]["melanoma"]


def test_derm7pt_layout(replica, truth):
    root = replica[0] / "derm7pt" / "release_v0"
    meta = pd.read_csv(root / "meta" / "meta.csv")
    assert list(meta.columns) == [
        "case_num", "diagnosis", "seven_point_score", "pigment_network", "streaks", "pigmentation",
        "regression_structures", "dots_and_globules", "blue_whitish_veil", "vascular_structures",
        "level_of_diagnostic_difficulty", "elevation", "location", "sex", "management", "clinic",
        "derm", "case_id", "notes"]
    for col in ("clinic", "derm"):
        assert all((root / "images" / p).is_file() for p in meta[col])
    # letter case differs between folder and file name somewhere (e.g. NEL/Nel026.jpg)
    pairs = [p.split("/") for p in meta["derm"]]
    assert any(d != f[:3] and d.lower() == f[:3].lower() for d, f in pairs)
    is_mel = meta["diagnosis"].str.startswith("melanoma")
    assert "melanosis" in set(meta["diagnosis"])
    assert set(meta.diagnosis[is_mel]) <= {
        "melanoma", "melanoma (in situ)", "melanoma (less than 0.76 mm)",
        "melanoma (0.76 to 1.5 mm)", "melanoma (more than 1.5 mm)", "melanoma metastasis"}
    idx = {}
    for name in ("train", "valid", "test"):
        f = pd.read_csv(root / "meta" / f"{name}_indexes.csv")
        assert list(f.columns) == ["indexes"]
        idx[name] = list(f["indexes"])
    all_idx = sorted(idx["train"] + idx["valid"] + idx["test"])
    assert all_idx == list(range(len(meta)))  # a partition of the row positions
    t = truth["derm7pt"].set_index("image_id")
    for name, split in (("train", "train"), ("valid", "val"), ("test", "test")):
        rows = meta.iloc[idx[name]]
        stems = [Path(p).stem for p in rows["derm"]]
        assert (t.loc[stems, "split"] == split).all()
        assert (t.loc[stems, "label"].to_numpy() == is_mel.iloc[idx[name]].astype(int).to_numpy()).all()


def test_ph2_layout_xlsx_and_txt(replica, truth):
    root = replica[0] / "ph2"
    raw = pd.read_excel(root / "PH2_dataset.xlsx", header=None)
    header = list(raw.iloc[12])
    assert raw.shape[1] == 17
    assert header == ["Image Name", "Histological Diagnosis", "Common Nevus", "Atypical Nevus", "Melanoma",
                      "Asymmetry\n(0/1/2)", "Pigment Network\n(AT/T)", "Dots/Globules\n(A/AT/T)",
                      "Streaks\n(A/P)", "Regression Areas\n(A/P)", "Blue-Whitish Veil\n(A/P)",
                      "White", "Red", "Light-Brown", "Dark-Brown", "Blue-Gray", "Black"]
    data = raw.iloc[13:].copy()
    data.columns = header
    n = requested_counts(SCALE)["ph2"]["train"]["n"]
    assert raw.shape[0] == 13 + n and len(data) == n
    marks = data[["Common Nevus", "Atypical Nevus", "Melanoma"]]
    assert {v for v in marks.to_numpy().ravel() if isinstance(v, str)} == {"X"}
    assert (marks.notna().sum(axis=1) == 1).all()  # exactly one class per lesion
    t = truth["ph2"].set_index("image_id")
    is_mel = (data["Melanoma"] == "X").astype(int).to_numpy()
    assert (t.loc[data["Image Name"], "label"].to_numpy() == is_mel).all()
    for iid in data["Image Name"]:
        base = root / "PH2 Dataset images" / iid
        bmp = base / f"{iid}_Dermoscopic_Image" / f"{iid}.bmp"
        mask = base / f"{iid}_lesion" / f"{iid}_lesion.bmp"
        assert bmp.is_file() and mask.is_file() and (base / f"{iid}_roi").is_dir()
        assert Image.open(bmp).format == "BMP" and Image.open(bmp).size == Image.open(mask).size
    lines = (root / "PH2_dataset.txt").read_text().splitlines()
    head = [c.strip() for c in lines[0].split("|")]
    assert "Clinical Diagnosis" in head and "Name" in head
    ci, ni = head.index("Clinical Diagnosis"), head.index("Name")
    rows = [[c.strip() for c in ln.split("|")] for ln in lines[1:] if ln.startswith("||")]
    assert len(rows) == n
    txt = {r[ni]: int(r[ci]) for r in rows}
    assert all((txt[i] == 2) == bool(t.loc[i, "label"]) for i in t.index)


def test_pad_ufes_20_layout(replica, truth):
    root = replica[0] / "pad_ufes_20"
    meta = pd.read_csv(root / "metadata.csv")
    cols = list(meta.columns)
    assert cols[:2] == ["patient_id", "lesion_id"] and cols[-2:] == ["img_id", "biopsed"]
    assert "diagnostic" in cols
    assert set(meta["diagnostic"]) <= {"MEL", "ACK", "BCC", "NEV", "SCC", "SEK"}
    assert meta["img_id"].str.fullmatch(r"PAT_\d+_\d+_\d+\.png").all()
    assert meta["patient_id"].nunique() < len(meta)  # several images per patient
    where = {p.name: p.parent.name for p in (root / "images").glob("imgs_part_*/*.png")}
    assert set(where) == set(meta["img_id"])
    assert set(where.values()) == {"imgs_part_1", "imgs_part_2", "imgs_part_3"}
    t = truth["pad_ufes_20"].set_index("image_id")
    stems = meta["img_id"].str.replace(".png", "", regex=False)
    assert (t.loc[stems, "label"].to_numpy() == (meta["diagnostic"] == "MEL").astype(int).to_numpy()).all()


def test_mednode_and_kaggle_layout(replica, truth):
    out = replica[0]
    med = out / "mednode" / "complete_mednode_dataset"
    assert sorted(p.name for p in med.iterdir()) == ["melanoma", "naevus"]
    tm = truth["mednode"]
    assert tm["image_id"].str.fullmatch(r"(melanoma|naevus)_\d+").all()
    assert all(tm.label == tm.image_id.str.startswith("melanoma").astype(int))

    kg = out / "kaggle"
    names = {}
    for split in ("train", "test"):
        for cls in ("benign", "malignant"):
            files = sorted((kg / split / cls).glob("*.jpg"))
            assert files and all(re.fullmatch(r"\d+\.jpg", f.name) for f in files)
            assert all(Image.open(f).size == (224, 224) for f in files)
            names[split, cls] = {f.name for f in files}
        assert names[split, "benign"] & names[split, "malignant"]  # same names in both folders
    tk = truth["kaggle"]
    assert tk["image_id"].str.fullmatch(r"(train|test)_(benign|malignant)_\d+").all()
    assert all(tk.label == tk.image_id.str.contains("malignant").astype(int))


# ---------------------------------------------------------------------------------------------
# counts
# ---------------------------------------------------------------------------------------------

def test_counts_match_request(replica, truth):
    out, summary = replica
    want = requested_counts(SCALE)
    for s in SHORT_NAMES:
        info = json.loads((out / s / "SYNTHETIC.json").read_text())
        assert info["counts"] == want[s] == summary["counts"][s], s
        t = truth[s]
        for split, c in want[s].items():
            sub = t[t.split == split]
            assert len(sub) == c["n"], (s, split)
            if not (s == "isic2020" and split == "test"):
                assert int((sub.label == 1).sum()) == c["melanoma"], (s, split)
                assert set(sub.label) == {0, 1}


def test_requested_counts_at_scale_one_are_the_brief():
    want = requested_counts(1.0)
    for s, splits in BASE_COUNTS.items():
        for split, (n, mel) in splits.items():
            assert want[s][split] == {"n": n, "melanoma": mel}, (s, split)
    tiny = requested_counts(0.01)
    assert all(c["melanoma"] >= 3 and c["n"] - c["melanoma"] >= 3
               for splits in tiny.values() for c in splits.values())


# ---------------------------------------------------------------------------------------------
# determinism
# ---------------------------------------------------------------------------------------------

def test_same_seed_same_bytes_other_seed_other_bytes(replica, tmp_path):
    out, _ = replica
    first = _hashes(out)
    again = tmp_path / "again"
    write_replicas(again, scale=SCALE, seed=0)
    assert _hashes(again) == first
    other = tmp_path / "other"
    write_replicas(other, scale=SCALE, seed=1)
    h1 = _hashes(other)
    images = [k for k in first if k.endswith((".jpg", ".png", ".bmp"))]
    same = sum(first[k] == h1.get(k) for k in images)
    assert same < 0.05 * len(images)
    assert first["isic2016/ISBI2016_ISIC_Part3_Training_GroundTruth.csv"] != \
        h1["isic2016/ISBI2016_ISIC_Part3_Training_GroundTruth.csv"]


def test_refuses_to_overwrite_a_real_release(tmp_path):
    real = tmp_path / "isic2016"
    real.mkdir()
    (real / "ISBI2016_ISIC_Part3_Training_GroundTruth.csv").write_text("ISIC_0000000,benign\n")
    with pytest.raises(FileExistsError):
        write_replicas(tmp_path, scale=0.01)
    assert (real / "ISBI2016_ISIC_Part3_Training_GroundTruth.csv").exists()


# ---------------------------------------------------------------------------------------------
# planted duplicates
# ---------------------------------------------------------------------------------------------

def test_planted_duplicates_are_real(replica, truth):
    out, _ = replica
    dups = pd.read_csv(out / "PLANTED_DUPLICATES.csv", dtype=str)
    assert list(dups.columns) == ["kind", "dataset_a", "image_id_a", "dataset_b", "image_id_b"]
    paths = {s: truth[s].set_index("image_id")["path"] for s in SHORT_NAMES}
    kinds = set()
    for r in dups.itertuples(index=False):
        a = _pixels(out / r.dataset_a / paths[r.dataset_a][r.image_id_a])
        b = _pixels(out / r.dataset_b / paths[r.dataset_b][r.image_id_b])
        la = truth[r.dataset_a].set_index("image_id").loc[r.image_id_a, "label"]
        lb = truth[r.dataset_b].set_index("image_id").loc[r.image_id_b, "label"]
        assert la == lb
        if r.kind in ("id", "pixels"):
            assert np.array_equal(a, b), tuple(r)
            assert (r.image_id_a == r.image_id_b) == (r.kind == "id")
        else:
            assert r.kind == "resized" and r.dataset_b == "kaggle" and b.shape == (224, 224, 3)
            small = np.asarray(Image.fromarray(a).resize((224, 224), Image.Resampling.LANCZOS), np.float32)
            err = np.abs(small - b.astype(np.float32)).mean()
            assert 0 < err < 4, err  # the same picture, re-encoded
        kinds.add((r.kind, r.dataset_a, r.dataset_b))
    assert {("id", "isic2016", "isic2017"), ("id", "isic2018", "isic2019"), ("id", "isic2017", "isic2019"),
            ("id", "isic2018", "ham10000"), ("pixels", "isic2020", "isic2020"),
            ("pixels", "mednode", "pad_ufes_20"), ("resized", "isic2017", "kaggle"),
            ("resized", "isic2018", "kaggle")} <= kinds
    # ISIC 2017 training holds every ISIC 2016 test image
    t16, t17 = truth["isic2016"], truth["isic2017"]
    assert set(t16.image_id[t16.split == "test"]) <= set(t17.image_id[t17.split == "train"])


def test_no_unplanted_duplicates(replica, truth):
    out, _ = replica
    dups = pd.read_csv(out / "PLANTED_DUPLICATES.csv", dtype=str)
    planted = {frozenset({(r.dataset_a, r.image_id_a), (r.dataset_b, r.image_id_b)})
               for r in dups.itertuples(index=False) if r.kind != "resized"}
    by_hash: dict[str, list[tuple[str, str]]] = {}
    for s in SHORT_NAMES:
        for iid, p in zip(truth[s].image_id, truth[s].path):
            h = hashlib.sha1(_pixels(out / s / p).tobytes()).hexdigest()
            by_hash.setdefault(h, []).append((s, iid))
    for members in by_hash.values():
        for i, a in enumerate(members):
            for b in members[i + 1:]:
                assert frozenset({a, b}) in planted, (a, b)


# ---------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------

def test_image_formats_and_sizes(replica, truth):
    out, _ = replica
    for s in SHORT_NAMES:
        for p in truth[s].path[:8]:
            with Image.open(out / s / p) as im:
                w, h = im.size
                fmt = im.format
            assert {"ph2": "BMP", "pad_ufes_20": "PNG"}.get(s, "JPEG") == fmt, (s, p)
            if s == "kaggle":
                assert (w, h) == (224, 224)
            else:
                assert 100 <= min(w, h) and max(w, h) <= 320, (s, p, w, h)


def test_classes_separate_but_not_perfectly(replica, truth):
    out, _ = replica
    scores, labels = [], []
    for s in ("isic2016", "isic2017", "isic2018", "isic2019", "derm7pt", "ph2", "mednode", "kaggle"):
        t = truth[s][truth[s].label >= 0]
        for p, y in zip(t.path, t.label):
            a = _pixels(out / s / p).astype(np.float32) / 255
            h, w, _ = a.shape
            centre = a[h // 4:3 * h // 4, w // 4:3 * w // 4]
            scores.append(float(centre.std(axis=(0, 1)).mean()))  # colour variation in the centre
            labels.append(int(y))
    scores, labels = np.array(scores), np.array(labels)
    assert scores[labels == 1].mean() > scores[labels == 0].mean()
    auc = _auc(scores, labels)
    assert 0.6 < auc < 0.97, auc


def test_perceptual_hash_separates_planted_copies_from_other_images(replica, truth):
    """A 256-bit pHash finds the resized copies and no other pair (what dedup relies on)."""
    imagehash = pytest.importorskip("imagehash")
    out, _ = replica
    keys, bits = [], []
    for s in SHORT_NAMES:
        for iid, p in zip(truth[s].image_id, truth[s].path):
            with Image.open(out / s / p) as im:
                bits.append(imagehash.phash(im, hash_size=16).hash.ravel())
            keys.append((s, iid))
    bits = np.array(bits, dtype=np.uint8)
    dist = bits.astype(np.int32) @ (1 - bits.T) + (1 - bits.astype(np.int32)) @ bits.T
    dups = pd.read_csv(out / "PLANTED_DUPLICATES.csv", dtype=str)
    index = {k: i for i, k in enumerate(keys)}
    planted = np.zeros_like(dist, dtype=bool)
    for r in dups.itertuples(index=False):
        i, j = index[r.dataset_a, r.image_id_a], index[r.dataset_b, r.image_id_b]
        planted[i, j] = planted[j, i] = True
    assert dist[planted].max() <= 12
    off = ~planted & ~np.eye(len(keys), dtype=bool)
    assert dist[off].min() > 24

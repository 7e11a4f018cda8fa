"""Writers of the ISIC 2016, 2017, 2018, 2019 and 2020 replicas in their official layouts
(folders, file names, ground-truth and metadata CSVs); :data:`ISIC_WRITERS` maps each release
to its writer."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from melanoma.data.synthetic.plan import lesion_groups, n_dups, owners, pick_records, shuffled_labels
from melanoma.data.synthetic.writer import SEX, Rec, Writer, choice, one_decimal, write_csv


def _age(rng: np.random.Generator, missing: float = 0.03) -> str:
    return "" if rng.random() < missing else one_decimal(5 * int(rng.integers(3, 18)))


_SITES_2019 = ["anterior torso", "upper extremity", "posterior torso", "lower extremity",
               "lateral torso", "head/neck", "palms/soles", "oral/genital"]
_SITES_2020 = ["torso", "lower extremity", "upper extremity", "head/neck", "palms/soles",
               "oral/genital"]
_ISIC_TXT = {
    "ATTRIBUTION.txt": "SYNTHETIC replica: no real images. The real release credits its "
                       "contributing institutions here.\n",
    "LICENSE.txt": "SYNTHETIC replica. The real release is licensed CC-BY-NC 4.0.\n",
}


def _isic_txt(folder: Path) -> None:
    """The ``ATTRIBUTION.txt``/``LICENSE.txt`` files that ISIC 2018/2019 folders contain."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in _ISIC_TXT.items():
        (folder / name).write_text(text, encoding="utf-8")


def _isic2016(w: Writer) -> None:
    short = "isic2016"
    rng = w.rng(short, 0)
    recs: list[Rec] = []
    for split, folder in (("train", "ISBI2016_ISIC_Part3_Training_Data"),
                          ("test", "ISBI2016_ISIC_Part3_Test_Data")):
        c = w.counts[short][split]
        ids = w.isic_ids(c["n"], 0, 11403)
        for iid, lab in zip(ids, shuffled_labels(rng, c["n"], c["melanoma"])):
            recs.append(Rec(iid, int(lab), split, f"{folder}/{iid}.jpg"))
    w.render(short, recs)
    tr = [r for r in recs if r.split == "train"]
    te = [r for r in recs if r.split == "test"]
    write_csv(w.out / short / "ISBI2016_ISIC_Part3_Training_GroundTruth.csv", None,
              ([r.image_id, "malignant" if r.label else "benign"] for r in tr))
    write_csv(w.out / short / "ISBI2016_ISIC_Part3_Test_GroundTruth.csv", None,
              ([r.image_id, one_decimal(r.label)] for r in te))
    w.finish(short, recs)


def _superpixels(path: Path, size: tuple[int, int], rng: np.random.Generator) -> None:
    """An ISIC 2017 ``*_superpixels.png``: a label map encoded in the R and G channels."""
    wd, ht = size
    cs = int(rng.integers(12, 20))
    y = (np.arange(ht) // cs)[:, None]
    x = (np.arange(wd) // cs)[None, :]
    lab = y * (wd // cs + 1) + x
    rgb = np.zeros((ht, wd, 3), np.uint8)
    rgb[..., 0] = lab & 255
    rgb[..., 1] = (lab >> 8) & 255
    Image.fromarray(rgb).save(path, "PNG", compress_level=1)


def _isic2017(w: Writer) -> None:
    short = "isic2017"
    rng = w.rng(short, 0)
    folders = {"train": "ISIC-2017_Training", "val": "ISIC-2017_Validation", "test": "ISIC-2017_Test_v2"}
    recs: list[Rec] = []
    new: list[Rec] = []
    copies: list[tuple[Rec, Rec]] = []
    t16 = [r for r in w.recs["isic2016"] if r.split == "test"]
    for split, stem in folders.items():
        c = w.counts[short][split]
        n, mel = c["n"], c["melanoma"]
        if split == "train":  # ISIC 2016's test images are part of ISIC 2017's training set
            for r in t16:
                rr = Rec(r.image_id, r.label, split, f"{stem}_Data/{r.image_id}.jpg")
                recs.append(rr)
                copies.append((r, rr))
            n -= len(t16)
            mel -= sum(r.label for r in t16)
        ids = w.isic_ids(n, 0, 16072)
        for iid, lab in zip(ids, shuffled_labels(rng, n, mel)):
            rr = Rec(iid, int(lab), split, f"{stem}_Data/{iid}.jpg")
            recs.append(rr)
            new.append(rr)
    new.sort(key=lambda r: r.image_id)
    w.render(short, new)
    for src, dst in copies:
        w.copy(("isic2016", src.path), short, dst.path)
        w.planted(("isic2016", src.image_id), (short, dst.image_id))
    for r in sorted(recs, key=lambda r: r.image_id):
        rs = w.rng(short, 3, int(r.image_id[5:]))
        with Image.open(w.out / short / r.path) as im:
            size = im.size
        _superpixels(w.out / short / r.path.replace(".jpg", "_superpixels.png"), size, rs)
        r.meta["sk"] = int(r.label == 0 and rs.random() < 0.22)
        r.meta["age"] = "unknown" if rs.random() < 0.1 else str(5 * int(rs.integers(3, 18)))
        r.meta["sex"] = "unknown" if rs.random() < 0.1 else choice(rs, SEX)
    for split, stem in folders.items():
        rows = sorted((r for r in recs if r.split == split), key=lambda r: r.image_id)
        write_csv(w.out / short / f"{stem}_Part3_GroundTruth.csv",
                  ["image_id", "melanoma", "seborrheic_keratosis"],
                  ([r.image_id, one_decimal(r.label), one_decimal(r.meta["sk"])] for r in rows))
        write_csv(w.out / short / f"{stem}_Data" / f"{stem}_Data_metadata.csv",
                  ["image_id", "age_approximate", "sex"],
                  ([r.image_id, r.meta["age"], r.meta["sex"]] for r in rows))
    w.finish(short, recs)


_DX2018 = ["NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
_DX2018_P = [0.75, 0.06, 0.04, 0.12, 0.013, 0.017]
_CONFIRM = {"histo": "histopathology", "follow_up": "serial imaging showing no change",
            "consensus": "single image expert consensus",
            "confocal": "confocal microscopy with consensus dermoscopy"}


def _isic2018(w: Writer) -> None:
    short = "isic2018"
    rng = w.rng(short, 0)
    ranges = {"train": (24306, 34321), "val": (34321, 34524), "test": (34524, 36064)}
    names = {"train": "Training", "val": "Validation", "test": "Test"}
    recs: list[Rec] = []
    lesion_no = 0
    for split, name in names.items():
        c = w.counts[short][split]
        ids = w.isic_ids(c["n"], *ranges[split])
        labels = shuffled_labels(rng, c["n"], c["melanoma"])
        groups = lesion_groups(rng, labels, 1.4 if split == "train" else 1.0) + lesion_no
        for iid, lab, g in zip(ids, labels, groups):
            recs.append(Rec(iid, int(lab), split, f"ISIC2018_Task3_{name}_Input/{iid}.jpg", int(g)))
        lesion_no = int(groups.max()) + 1
    w.render(short, recs)
    lesion_ids = w.rng(short, 4).choice(np.arange(0, max(7500, 4 * lesion_no)), size=lesion_no,
                                        replace=False)
    # per-lesion metadata (shared by HAM10000)
    lesion_meta: dict[int, dict[str, str]] = {}
    for r in recs:
        if r.group not in lesion_meta:
            rs = w.rng(short, 5, r.group)
            dx = "MEL" if r.label else choice(rs, _DX2018, _DX2018_P)
            dxt = "histo" if dx in ("MEL", "BCC", "AKIEC") else choice(
                rs, ["histo", "follow_up", "consensus", "confocal"], [0.4, 0.4, 0.17, 0.03])
            lesion_meta[r.group] = {
                "lesion_id": f"HAM_{int(lesion_ids[r.group]):07d}", "dx": dx, "dx_type": dxt,
                "age": _age(rs, 0.01), "sex": choice(rs, SEX + ["unknown"], [0.54, 0.45, 0.01]),
                "localization": choice(rs, ["back", "lower extremity", "trunk", "upper extremity",
                                            "abdomen", "face", "chest", "foot", "neck", "scalp",
                                            "unknown"])}
        r.meta.update(lesion_meta[r.group])
    for split, name in names.items():
        _isic_txt(w.out / short / f"ISIC2018_Task3_{name}_Input")
        gt = w.out / short / f"ISIC2018_Task3_{name}_GroundTruth"
        _isic_txt(gt)
        rows = sorted((r for r in recs if r.split == split), key=lambda r: r.image_id)
        write_csv(gt / f"ISIC2018_Task3_{name}_GroundTruth.csv",
                  ["image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"],
                  ([r.image_id] + [one_decimal(r.meta["dx"] == d) for d in ["MEL"] + _DX2018] for r in rows))
    train = sorted((r for r in recs if r.split == "train"), key=lambda r: r.image_id)
    write_csv(w.out / short / "ISIC2018_Task3_Training_LesionGroupings.csv",
              ["image", "lesion_id", "diagnosis_confirm_type"],
              ([r.image_id, r.meta["lesion_id"], _CONFIRM[r.meta["dx_type"]]] for r in train))
    w.finish(short, recs)


_DX2019 = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
_DX2019_NONMEL = ["NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"]
_DX2019_P = [0.58, 0.15, 0.04, 0.12, 0.01, 0.01, 0.03]


def _isic2019(w: Writer) -> None:
    short = "isic2019"
    rng = w.rng(short, 0)
    c = w.counts[short]["train"]
    folder = "ISIC_2019_Training_Input"
    k18, k17 = n_dups("isic2019_from_isic2018", w.scale), n_dups("isic2019_from_isic2017_test", w.scale)
    half_mel = c["melanoma"] // 2
    half_ben = (c["n"] - c["melanoma"]) // 2
    d18 = pick_records(rng, [r for r in w.recs["isic2018"] if r.split == "train"], k18, half_mel, half_ben)
    d17 = pick_records(rng, [r for r in w.recs["isic2017"] if r.split == "test"], k17,
                       max(0, half_mel - sum(r.label for r in d18)), half_ben)
    recs: list[Rec] = []
    for r in d18:
        recs.append(Rec(r.image_id, r.label, "train", f"{folder}/{r.image_id}.jpg",
                        meta={"dx": {"AKIEC": "AK"}.get(r.meta["dx"], r.meta["dx"]),
                              "lesion_id": r.meta["lesion_id"], "src": ("isic2018", r.path)}))
    for r in d17:
        recs.append(Rec(r.image_id, r.label, "train", f"{folder}/{r.image_id}.jpg",
                        meta={"dx": "MEL" if r.label else ("BKL" if r.meta["sk"] else "NV"),
                              "lesion_id": "", "src": ("isic2017", r.path)}))
    n = c["n"] - len(recs)
    mel = c["melanoma"] - sum(r.label for r in recs)
    ids = w.isic_ids(n, 53000, 73300)
    labels = shuffled_labels(rng, n, mel)
    groups = lesion_groups(rng, labels, 1.5)
    bcn = w.rng(short, 4).choice(np.arange(0, 70000), size=int(groups.max()) + 1, replace=False)
    new = [Rec(iid, int(lab), "train", f"{folder}/{iid}.jpg", int(g),
               meta={"lesion_id": f"BCN_{int(bcn[g]):07d}"}) for iid, lab, g in zip(ids, labels, groups)]
    w.render(short, new)
    for r in new:
        r.meta["dx"] = "MEL" if r.label else choice(w.rng(short, 5, r.group), _DX2019_NONMEL, _DX2019_P)
    for r in recs:
        src_short = r.meta["src"][0]
        w.copy(r.meta["src"], short, r.path)
        w.planted((src_short, r.image_id), (short, r.image_id))
    recs += new
    recs.sort(key=lambda r: r.image_id)
    _isic_txt(w.out / short / folder)
    write_csv(w.out / short / "ISIC_2019_Training_GroundTruth.csv", ["image"] + _DX2019,
              ([r.image_id] + [one_decimal(r.meta["dx"] == d) for d in _DX2019] for r in recs))
    rows = []
    for r in recs:
        rs = w.rng(short, 6, int(r.image_id[5:]))
        rows.append([r.image_id, _age(rs, 0.02), "" if rs.random() < 0.08 else choice(rs, _SITES_2019),
                     r.meta["lesion_id"], "" if rs.random() < 0.02 else choice(rs, SEX)])
    write_csv(w.out / short / "ISIC_2019_Training_Metadata.csv",
              ["image", "age_approx", "anatom_site_general", "lesion_id", "sex"], rows)
    w.finish(short, recs)


_DX2020 = ["unknown", "nevus", "seborrheic keratosis", "lentigo NOS", "lichenoid keratosis",
           "solar lentigo", "cafe-au-lait macule", "atypical melanocytic proliferation"]
_DX2020_P = [0.82, 0.16, 0.006, 0.006, 0.0056, 0.0014, 0.0003, 0.0002]


def _isic2020(w: Writer) -> None:
    short = "isic2020"
    rng = w.rng(short, 0)
    recs: list[Rec] = []
    n_pairs = n_dups("isic2020_pairs", w.scale)
    n_all = sum(c["n"] for c in w.counts[short].values())
    patient_ids = w.rng(short, 4).choice(10_000_000, size=n_all, replace=False)
    lesion_ids = w.rng(short, 7).choice(10_000_000, size=n_all, replace=False)
    offset = {"train": 0, "test": 1_000_000}
    n_pat = 0
    pairs: list[tuple[Rec, Rec]] = []
    for split in ("train", "test"):
        c = w.counts[short][split]
        k = n_pairs if split == "train" else 0
        k_mel = min(int(rng.binomial(k, c["melanoma"] / c["n"])), c["melanoma"] - 1)
        n, mel = c["n"] - k, c["melanoma"] - k_mel
        ids = w.isic_ids(n, 100000, 10_000_000)
        labels = shuffled_labels(rng, n, mel)
        split_recs = [Rec(iid, int(lab), split, f"{split}/{iid}.jpg", offset[split] + i)
                      for i, (iid, lab) in enumerate(zip(ids, labels))]
        # patients: several images (lesions) each, any mix of labels
        patient, n_patients = owners(rng, len(split_recs), 3.0)
        for r, o in zip(split_recs, patient):
            r.meta["patient"] = f"IP_{int(patient_ids[n_pat + o]):07d}"
        n_pat += n_patients
        w.render(short, split_recs, key_offset=offset[split])
        if split == "train":  # duplicate pairs: another name, the same file
            srcs = pick_records(rng, split_recs, n_pairs, k_mel, n_pairs - k_mel)
            new_ids = w.isic_ids(n_pairs, 100000, 10_000_000)
            for src, iid in zip(srcs, new_ids):
                dup = Rec(iid, src.label, split, f"train/{iid}.jpg", src.group, meta=dict(src.meta))
                w.copy((short, src.path), short, dup.path)
                w.planted((short, src.image_id), (short, iid))
                pairs.append((src, dup))
                split_recs.append(dup)
        recs += split_recs
    recs.sort(key=lambda r: (r.split, r.image_id))
    lesion_index = {g: i for i, g in enumerate(sorted({r.group for r in recs}))}
    patient_meta: dict[str, dict[str, str]] = {}
    for r in recs:
        p = r.meta["patient"]
        if p not in patient_meta:
            rs = w.rng(short, 5, int(p[3:]))
            patient_meta[p] = {"sex": "" if rs.random() < 0.002 else choice(rs, SEX),
                               "age": _age(rs, 0.002)}
        rs = w.rng(short, 6, r.group)
        r.meta.update(patient_meta[p])
        r.meta["site"] = "" if rs.random() < 0.015 else choice(rs, _SITES_2020, [50, 26, 15, 6, 1, 0.5])
        r.meta["lesion_id"] = f"IL_{int(lesion_ids[lesion_index[r.group]]):07d}"
        r.meta["dx"] = "melanoma" if r.label else choice(rs, _DX2020, _DX2020_P)
    train = [r for r in recs if r.split == "train"]
    test = [r for r in recs if r.split == "test"]
    write_csv(w.out / short / "ISIC_2020_Training_GroundTruth.csv",
              ["image_name", "patient_id", "lesion_id", "sex", "age_approx",
               "anatom_site_general_challenge", "diagnosis", "benign_malignant", "target"],
              ([r.image_id, r.meta["patient"], r.meta["lesion_id"], r.meta["sex"], r.meta["age"],
                r.meta["site"], r.meta["dx"], "malignant" if r.label else "benign", r.label]
               for r in train))
    write_csv(w.out / short / "ISIC_2020_Training_Duplicates.csv", ["image_name_1", "image_name_2"],
              sorted([a.image_id, b.image_id] for a, b in pairs))
    write_csv(w.out / short / "ISIC_2020_Test_Metadata.csv",
              ["image", "patient", "sex", "age_approx", "anatom_site_general"],
              ([r.image_id, r.meta["patient"], r.meta["sex"], r.meta["age"], r.meta["site"]] for r in test))
    write_csv(w.out / short / "ISIC_2020_Test_GroundTruth_SYNTHETIC.csv", ["image_name", "target"],
              ([r.image_id, r.label] for r in test))
    w.finish(short, recs, hidden_labels=["test"])


ISIC_WRITERS: dict[str, Callable[[Writer], None]] = {
    "isic2016": _isic2016, "isic2017": _isic2017, "isic2018": _isic2018, "isic2019": _isic2019,
    "isic2020": _isic2020,
}

"""Writers of the derm7pt, PH2, MED-NODE, PAD-UFES-20, Kaggle and HAM10000 replicas in their
official layouts; :data:`OTHER_WRITERS` maps each release to its writer."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from melanoma.data.synthetic.draw import STYLES, full_frame
from melanoma.data.synthetic.plan import (lesion_groups, n_dups, owners, pick_records, round_half_up,
                                          shuffled_labels)
from melanoma.data.synthetic.writer import SEX, Rec, Writer, choice, one_decimal, save_image, write_csv

_MEL7 = ["melanoma", "melanoma (in situ)", "melanoma (less than 0.76 mm)",
         "melanoma (0.76 to 1.5 mm)", "melanoma (more than 1.5 mm)", "melanoma metastasis"]
_NONMEL7 = ["clark nevus", "seborrheic keratosis", "blue nevus", "reed or spitz nevus",
            "dermal nevus", "basal cell carcinoma", "congenital nevus", "vascular lesion",
            "dermatofibroma", "lentigo", "combined nevus", "recurrent nevus", "miscellaneous"]
_NONMEL7_P = [40, 5, 3, 8, 3, 4, 2, 3, 2, 2, 1, 1, 1]
_DERM_FOLDERS = ["Aal", "Abl", "Acl", "Bdl", "Fbl", "Gal", "NEL", "NHL", "NML", "FEL", "FCL"]
_DERM7_COLUMNS = ["case_num", "diagnosis", "seven_point_score", "pigment_network", "streaks",
                  "pigmentation", "regression_structures", "dots_and_globules", "blue_whitish_veil",
                  "vascular_structures", "level_of_diagnostic_difficulty", "elevation", "location",
                  "sex", "management", "clinic", "derm", "case_id", "notes"]


def _derm7pt(w: Writer) -> None:
    short = "derm7pt"
    rng = w.rng(short, 0)
    cases: list[tuple[str, int]] = []
    for split in ("train", "val", "test"):
        c = w.counts[short][split]
        cases += [(split, int(lab)) for lab in shuffled_labels(rng, c["n"], c["melanoma"])]
    order = rng.permutation(len(cases))  # meta.csv interleaves the splits
    cases = [cases[int(i)] for i in order]
    n_mel = sum(lab for _, lab in cases)
    n_melanosis = max(1, round_half_up(3 * w.scale))
    mel_dx = [_MEL7[i % len(_MEL7)] for i in range(n_mel)]
    rng.shuffle(mel_dx)
    nonmel_slots = [i for i, (_, lab) in enumerate(cases) if lab == 0]
    melanosis = set(int(i) for i in rng.choice(nonmel_slots, n_melanosis, replace=False))
    counters = {f: int(rng.integers(1, 60)) for f in _DERM_FOLDERS}
    recs: list[Rec] = []
    clinic: list[Rec] = []
    rows = []
    for i, (split, lab) in enumerate(cases):
        rs = w.rng(short, 5, i)
        folder = _DERM_FOLDERS[int(rs.integers(len(_DERM_FOLDERS)))]
        prefix = folder[0] + folder[1:].lower()
        n0 = counters[folder]
        counters[folder] += 2 + int(rs.integers(0, 2))
        clin, derm = f"{folder}/{prefix}{n0:03d}.jpg", f"{folder}/{prefix}{n0 + 1:03d}.jpg"
        dx = mel_dx.pop() if lab else ("melanosis" if i in melanosis else choice(rs, _NONMEL7, _NONMEL7_P))
        m = lab
        crit = {
            "pigment_network": choice(rs, ["absent", "typical", "atypical"], [3, 5 - 3 * m, 1 + 4 * m]),
            "streaks": choice(rs, ["absent", "regular", "irregular"], [6, 2, 1 + 4 * m]),
            "pigmentation": choice(rs, ["absent", "diffuse regular", "localized regular",
                                        "diffuse irregular", "localized irregular"],
                                   [4, 2, 1, 1 + 3 * m, 1 + 3 * m]),
            "regression_structures": choice(rs, ["absent", "blue areas", "white areas",
                                                 "combinations"], [8 - 5 * m, 1, 1, 1 + 2 * m]),
            "dots_and_globules": choice(rs, ["absent", "regular", "irregular"], [3, 3, 1 + 4 * m]),
            "blue_whitish_veil": choice(rs, ["absent", "present"], [6, 1 + 4 * m]),
            "vascular_structures": choice(rs, ["absent", "arborizing", "comma", "hairpin",
                                               "within regression", "wreath", "dotted",
                                               "linear irregular"], [30, 1, 1, 1, 1, 1, 1, 1 + 2 * m]),
        }
        score = (2 * (crit["pigment_network"] == "atypical") + 2 * (crit["blue_whitish_veil"] == "present")
                 + 2 * (crit["vascular_structures"] in ("dotted", "linear irregular"))
                 + (crit["streaks"] == "irregular") + (crit["pigmentation"].endswith("irregular"))
                 + (crit["dots_and_globules"] == "irregular") + (crit["regression_structures"] != "absent"))
        rows.append([i + 1, dx, score, *crit.values(),
                     choice(rs, ["low", "medium", "high"], [4, 4, 2]),
                     choice(rs, ["flat", "palpable", "nodular"], [5, 4, 1]),
                     choice(rs, ["back", "lower limbs", "upper limbs", "abdomen", "chest",
                                 "head neck", "acral", "buttocks", "genital areas"]),
                     choice(rs, SEX), choice(rs, ["excision", "clinical follow up",
                                                  "no further examination"], [4 + 6 * m, 3, 2]),
                     clin, derm, "", "" if rs.random() < 0.95 else "synthetic case note"])
        stem = Path(derm).stem
        recs.append(Rec(stem, lab, split, f"release_v0/images/{derm}", group=i))
        clinic.append(Rec(Path(clin).stem, lab, split, f"release_v0/images/{clin}", group=i))
    w.render(short, recs)
    w.render(short, clinic, style=STYLES["derm7pt_clinic"], key_offset=100_000)
    meta = w.out / short / "release_v0" / "meta"
    write_csv(meta / "meta.csv", _DERM7_COLUMNS, rows)
    for split, name in (("train", "train"), ("val", "valid"), ("test", "test")):
        write_csv(meta / f"{name}_indexes.csv", ["indexes"],
                  ([i] for i, (s, _) in enumerate(cases) if s == split))
    w.finish(short, recs)


_PH2_HEADER = ["Image Name", "Histological Diagnosis", "Common Nevus", "Atypical Nevus", "Melanoma",
               "Asymmetry\n(0/1/2)", "Pigment Network\n(AT/T)", "Dots/Globules\n(A/AT/T)",
               "Streaks\n(A/P)", "Regression Areas\n(A/P)", "Blue-Whitish Veil\n(A/P)",
               "White", "Red", "Light-Brown", "Dark-Brown", "Blue-Gray", "Black"]
_PH2_LEGEND = [
    ["PH² Dermoscopic Image Database (SYNTHETIC replica)"],
    [None],
    ["Legend:"],
    ["Clinical Diagnosis:", "Common Nevus; Atypical Nevus; Melanoma (an X marks the class)"],
    ["Asymmetry:", "0 - Fully Symmetric", "1 - Symmetric in 1 axe", "2 - Fully Asymmetric"],
    ["Pigment Network:", "AT - Atypical", "T - Typical"],
    ["Dots/Globules:", "A - Absent", "AT - Atypical", "T - Typical"],
    ["Streaks, Regression Areas, Blue-Whitish Veil:", "A - Absent", "P - Present"],
    ["Colors:", "an X marks each colour present"],
    [None],
    ["Histological Diagnosis: only for some lesions"],
    [None],
]
_PH2_COLOURS = ["White", "Red", "Light-Brown", "Dark-Brown", "Blue-Gray", "Black"]


def _normalise_xlsx(data: bytes) -> bytes:
    """Pin the timestamps in an ``.xlsx`` (zip entry dates and core properties)."""
    src = zipfile.ZipFile(io.BytesIO(data))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as dst:
        for name in sorted(src.namelist(), key=lambda n: (n != "[Content_Types].xml", n)):
            content = src.read(name)
            if name == "docProps/core.xml":
                content = re.sub(rb"(<dcterms:(created|modified)[^>]*>)[^<]*",
                                 rb"\g<1>2008-01-01T00:00:00Z", content)
            info = zipfile.ZipInfo(name, date_time=(2008, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            dst.writestr(info, content)
    return buf.getvalue()


def _ph2(w: Writer) -> None:
    short = "ph2"
    rng = w.rng(short, 0)
    c = w.counts[short]["train"]
    nums = np.sort(rng.choice(np.arange(2, 438), size=c["n"], replace=False))
    labels = shuffled_labels(rng, c["n"], c["melanoma"])
    recs = []
    for num, lab in zip(nums, labels):
        iid = f"IMD{int(num):03d}"
        recs.append(Rec(iid, int(lab), "train",
                        f"PH2 Dataset images/{iid}/{iid}_Dermoscopic_Image/{iid}.bmp"))
    views = w.render(short, recs, keep_views=True)
    rows, txt_rows = [], []
    for i, r in enumerate(recs):
        les, placement, (h, wd) = views[r.path]
        iid = r.image_id
        base = w.out / short / "PH2 Dataset images" / iid
        inside = full_frame(les.texture.getchannel("A"), placement, h, wd) > 127
        Image.fromarray(np.where(inside, 255, 0).astype(np.uint8)).save(
            _mk(base / f"{iid}_lesion" / f"{iid}_lesion.bmp"), "BMP")
        reg = full_frame(les.regions, placement, h, wd, Image.Resampling.NEAREST)
        present = [int(v) for v in np.unique(reg[inside])]
        for j, v in enumerate(present[:3]):
            Image.fromarray(np.where((reg == v) & inside, 255, 0).astype(np.uint8)).save(
                _mk(base / f"{iid}_roi" / f"{iid}_R{j + 1}_Label{v + 1}.bmp"), "BMP")
        rs = w.rng(short, 5, i)
        cls = 2 if r.label else int(rs.random() < 0.5)
        m = r.label
        colours = {"Light-Brown": rs.random() < 0.7, "Dark-Brown": rs.random() < 0.5 + 0.4 * m,
                   "Black": rs.random() < 0.1 + 0.5 * m, "Blue-Gray": rs.random() < 0.05 + 0.6 * m,
                   "Red": rs.random() < 0.05 + 0.3 * m, "White": rs.random() < 0.02 + 0.3 * m}
        if not any(colours.values()):
            colours["Light-Brown"] = True
        asym = int(rs.choice(3, p=[0.1, 0.2, 0.7] if m else [0.7, 0.2, 0.1]))
        crit = [choice(rs, ["AT", "T"], [1 + 4 * m, 4]), choice(rs, ["A", "AT", "T"], [3, 1 + 3 * m, 2]),
                choice(rs, ["A", "P"], [6, 1 + 3 * m]), choice(rs, ["A", "P"], [6, 1 + 3 * m]),
                choice(rs, ["A", "P"], [8, 1 + 4 * m])]
        histo = ("Melanoma" if m else choice(rs, ["", "Dermatofibroma", "Spitz nevus"], [18, 1, 1])
                 ) if rs.random() < 0.25 else ""
        rows.append([iid, histo or None, "X" if cls == 0 else None, "X" if cls == 1 else None,
                     "X" if cls == 2 else None, asym, *crit,
                     *["X" if colours[k] else None for k in _PH2_COLOURS]])
        txt_rows.append([iid, histo, str(cls), str(asym), *crit,
                         " ".join(str(_PH2_COLOURS.index(k) + 1) for k in _PH2_COLOURS if colours[k])])
    # PH2_dataset.xlsx: legend rows 0-11, header on row 12 (0-based), then the data
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = "Sheet1"
    for row in _PH2_LEGEND + [_PH2_HEADER] + rows:
        ws.append(row)
    wb.properties.creator = "SYNTHETIC"
    buf = io.BytesIO()
    wb.save(buf)
    (w.out / short / "PH2_dataset.xlsx").write_bytes(_normalise_xlsx(buf.getvalue()))
    # PH2_dataset.txt: pipe-delimited, '||' framing, fixed-width padded columns
    head = ["Name", "Histological Diagnosis", "Clinical Diagnosis", "Asymmetry", "Pigment Network",
            "Dots/Globules", "Streaks", "Regression Areas", "Blue-Whitish Veil", "Colors"]
    widths = [max(len(head[j]), *(len(t[j]) for t in txt_rows)) + 2 for j in range(len(head))]

    def line(cells: list[str]) -> str:
        return "||" + "|".join(f" {c:^{widths[j] - 2}} " for j, c in enumerate(cells)) + "||"

    text = [line(head)] + [line(t) for t in txt_rows] + [
        "", "Legend:", "Clinical Diagnosis: 0 - Common Nevus; 1 - Atypical Nevus; 2 - Melanoma",
        "Colors: 1 - White; 2 - Red; 3 - Light-Brown; 4 - Dark-Brown; 5 - Blue-Gray; 6 - Black",
        "(SYNTHETIC replica)"]
    (w.out / short / "PH2_dataset.txt").write_text("\n".join(text) + "\n", encoding="utf-8")
    w.finish(short, recs)


def _mk(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _mednode(w: Writer) -> None:
    short = "mednode"
    rng = w.rng(short, 0)
    c = w.counts[short]["train"]
    stems = np.sort(rng.choice(np.arange(100_000, 1_200_000), size=c["n"], replace=False))
    labels = shuffled_labels(rng, c["n"], c["melanoma"])
    recs = []
    for stem, lab in zip(stems, labels):
        cls = "melanoma" if lab else "naevus"
        recs.append(Rec(f"{cls}_{int(stem)}", int(lab), "train",
                        f"complete_mednode_dataset/{cls}/{int(stem)}.jpg"))
    w.render(short, recs)
    w.finish(short, recs)


_PAD_DX = ["BCC", "ACK", "NEV", "SEK", "SCC"]
_PAD_DX_P = [0.37, 0.32, 0.11, 0.10, 0.08]
_PAD_REGIONS = ["FACE", "FOREARM", "CHEST", "BACK", "NOSE", "ARM", "HAND", "NECK", "THIGH", "EAR",
                "LIP", "SCALP", "ABDOMEN", "FOOT"]
_PAD_COLUMNS = ["patient_id", "lesion_id", "smoke", "drink", "background_father", "background_mother",
                "age", "pesticide", "gender", "skin_cancer_history", "cancer_history",
                "has_piped_water", "has_sewage_system", "fitspatrick", "region", "diameter_1",
                "diameter_2", "diagnostic", "itch", "grew", "hurt", "changed", "bleed", "elevation",
                "img_id", "biopsed"]


def _pad_ufes_20(w: Writer) -> None:
    short = "pad_ufes_20"
    rng = w.rng(short, 0)
    c = w.counts[short]["train"]
    # one image is a MED-NODE naevus with identical pixels under a PAD name
    donor = sorted((r for r in w.recs["mednode"] if r.label == 0), key=lambda r: r.image_id)
    donor = donor[int(rng.integers(len(donor)))]
    recs, donor_rec = _pad_records(w, short, rng, c["n"] - 1, c["melanoma"])
    rendered = [r for r in recs if r is not donor_rec]
    w.render(short, rendered)
    with Image.open(w.out / "mednode" / donor.path) as im:
        save_image(w.out / short / donor_rec.path, im.convert("RGB"))
    w.planted(("mednode", donor.image_id), (short, donor_rec.image_id))
    rows = _pad_metadata_rows(w, short, recs, donor_rec)
    rows.sort(key=lambda row: (int(row[0][4:]), int(row[1]), row[24]))
    write_csv(w.out / short / "metadata.csv", _PAD_COLUMNS, rows)
    w.finish(short, recs)


def _pad_records(w: Writer, short: str, rng: np.random.Generator, n: int,
                 n_mel: int) -> tuple[list[Rec], Rec]:
    """Records of ``n`` drawn images (``n_mel`` melanomas) and of the MED-NODE donor (returned
    second), sorted by image number and spread over the three ``imgs_part_*`` folders.

    Images are named ``PAT_<patient>_<lesion>_<image>``; lesions are label-pure, patients own
    one or more lesions of any labels, and the donor image is one more lesion.
    """
    labels = shuffled_labels(rng, n, n_mel)
    lesions = lesion_groups(rng, labels, 1.4)
    n_les = int(lesions.max()) + 1
    les_patient, p = owners(rng, n_les + 1, 0.6)
    pat_nums = 1 + w.rng(short, 4).choice(max(2000, 4 * p), size=p, replace=False)
    les_nums = 1 + w.rng(short, 7).choice(max(3500, 4 * n_les), size=n_les + 1, replace=False)
    img_nums = 1 + w.rng(short, 8).choice(max(5000, 4 * n), size=n + 1, replace=False)
    labels = np.append(labels, 0)
    lesions = np.append(lesions, n_les)
    recs = []
    for j in range(n + 1):
        g = int(lesions[j])
        stem = f"PAT_{int(pat_nums[les_patient[g]])}_{int(les_nums[g])}_{int(img_nums[j])}"
        recs.append(Rec(stem, int(labels[j]), "train", "", g))
    donor_rec = recs[-1]
    recs.sort(key=lambda r: (int(r.image_id.split("_")[3])))
    parts = np.array_split(np.arange(len(recs)), 3)
    for k, part in enumerate(parts):
        for j in part:
            recs[int(j)].path = f"images/imgs_part_{k + 1}/{recs[int(j)].image_id}.png"
    return recs, donor_rec


def _pad_metadata_rows(w: Writer, short: str, recs: list, donor_rec) -> list[list]:
    """metadata.csv rows: patient-level fields, lesion-level diagnosis, image-level id."""
    rows = []
    les_info: dict[int, dict[str, Any]] = {}
    pat_info: dict[str, dict[str, str]] = {}
    for r in recs:
        pid = "_".join(r.image_id.split("_")[:2])
        if r.group not in les_info:  # lesion-level fields (all images of a lesion agree)
            rs = w.rng(short, 5, r.group)
            dx = choice(rs, _PAD_DX, _PAD_DX_P)
            dx = "MEL" if r.label else ("NEV" if r is donor_rec else dx)
            les_info[r.group] = {
                "dx": dx, "biopsed": dx in ("MEL", "BCC", "SCC") or rs.random() < 0.4,
                "region": choice(rs, _PAD_REGIONS),
                "d1": one_decimal(rs.uniform(3, 25)), "d2": one_decimal(rs.uniform(3, 20)),
                "symptoms": [choice(rs, ["True", "False", "UNK"], [3, 5, 1]) for _ in range(6)]}
        li = les_info[r.group]
        dx, biopsed = li["dx"], li["biopsed"]
        if pid not in pat_info:
            rp = w.rng(short, 6, int(pid[4:]))
            tf = lambda q: choice(rp, ["True", "False"], [q, 1 - q])  # noqa: E731
            pat_info[pid] = {
                "smoke": tf(0.15), "drink": tf(0.3),
                "background_father": choice(rp, ["POMERANIA", "GERMANY", "BRAZIL", "ITALY", "PORTUGAL",
                                                 "UNK"]),
                "background_mother": choice(rp, ["POMERANIA", "GERMANY", "BRAZIL", "ITALY", "PORTUGAL",
                                                 "UNK"]),
                "age": str(int(rp.integers(18, 95))), "pesticide": tf(0.4),
                "gender": choice(rp, ["MALE", "FEMALE"]), "skin_cancer_history": tf(0.45),
                "cancer_history": tf(0.5), "has_piped_water": tf(0.8), "has_sewage_system": tf(0.6),
                "fitspatrick": choice(rp, ["1.0", "2.0", "3.0", "4.0", "5.0", "6.0"], [12, 50, 25, 8, 3, 2]),
            }
        pi = pat_info[pid]
        full = biopsed  # non-biopsied rows leave most clinical fields empty (as in the release)
        rows.append([pid, r.image_id.split("_")[2],
                     *(pi[k] if full else "" for k in ("smoke", "drink", "background_father",
                                                       "background_mother")),
                     pi["age"],
                     *(pi[k] if full else "" for k in ("pesticide", "gender", "skin_cancer_history",
                                                       "cancer_history", "has_piped_water",
                                                       "has_sewage_system", "fitspatrick")),
                     li["region"], li["d1"] if full else "", li["d2"] if full else "",
                     dx, *li["symptoms"],
                     f"{r.image_id}.png", "True" if biopsed else "False"])
    return rows


def _kaggle(w: Writer) -> None:
    short = "kaggle"
    rng = w.rng(short, 0)
    style = STYLES[short]
    recs: list[Rec] = []
    new: list[Rec] = []
    for split in ("train", "test"):
        c = w.counts[short][split]
        n_mal, n_ben = c["melanoma"], c["n"] - c["melanoma"]
        dups: list[tuple[str, Rec]] = []
        if split == "train":
            for src, key in (("isic2017", "kaggle_from_isic2017_test"),
                             ("isic2018", "kaggle_from_isic2018_test")):
                pool = [r for r in w.recs[src] if r.split == "test"]
                taken = {d.image_id for _, d in dups}
                pool = [r for r in pool if r.image_id not in taken]
                dups += [(src, r) for r in pick_records(rng, pool, n_dups(key, w.scale),
                                                        n_mal // 4, n_ben // 4)]
        hi = int(1.6 * max(n_mal, n_ben)) + 10
        ben_nums = np.sort(rng.choice(np.arange(1, hi), size=n_ben, replace=False))
        mal_nums = np.sort(rng.choice(np.arange(1, hi), size=n_mal, replace=False))
        if not set(ben_nums) & set(mal_nums):  # the same names must occur in both folders
            mal_nums[0] = ben_nums[0]
            mal_nums = np.sort(mal_nums)
        slots = {"benign": list(ben_nums), "malignant": list(mal_nums)}
        for cls in ("benign", "malignant"):
            order = rng.permutation(len(slots[cls]))
            slots[cls] = [int(slots[cls][int(i)]) for i in order]
        for src, r in dups:
            cls = "malignant" if r.label else "benign"
            num = slots[cls].pop()
            rec = Rec(f"{split}_{cls}_{num}", r.label, split, f"{split}/{cls}/{num}.jpg")
            with Image.open(w.out / src / r.path) as im:
                small = im.convert("RGB").resize((224, 224), Image.Resampling.LANCZOS)
            q = int(w.rng(short, 3, int(r.image_id[5:])).integers(*style.quality))
            save_image(w.out / short / rec.path, small, q)
            w.planted((src, r.image_id), (short, rec.image_id), resized=True)
            recs.append(rec)
        for cls, lab in (("benign", 0), ("malignant", 1)):
            for num in sorted(slots[cls]):
                rec = Rec(f"{split}_{cls}_{num}", lab, split, f"{split}/{cls}/{num}.jpg")
                recs.append(rec)
                new.append(rec)
    w.render(short, new, size=(224, 224))
    w.finish(short, recs)


def _ham10000(w: Writer) -> None:
    short = "ham10000"
    train = sorted((r for r in w.recs["isic2018"] if r.split == "train"), key=lambda r: r.image_id)
    half = (len(train) + 1) // 2
    recs = []
    for i, r in enumerate(train):
        part = 1 if i < half else 2
        rec = Rec(r.image_id, r.label, "train", f"HAM10000_images_part_{part}/{r.image_id}.jpg",
                  meta=r.meta)
        w.copy(("isic2018", r.path), short, rec.path)
        w.planted(("isic2018", r.image_id), (short, r.image_id))
        recs.append(rec)
    rows = sorted(([r.meta["lesion_id"], r.image_id, r.meta["dx"].lower(), r.meta["dx_type"],
                    r.meta["age"], r.meta["sex"], r.meta["localization"]] for r in recs),
                  key=lambda row: (row[0], row[1]))
    write_csv(w.out / short / "HAM10000_metadata.csv",
              ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"], rows)
    w.finish(short, recs)


OTHER_WRITERS: dict[str, Callable[[Writer], None]] = {
    "derm7pt": _derm7pt, "ph2": _ph2, "mednode": _mednode, "pad_ufes_20": _pad_ufes_20,
    "kaggle": _kaggle, "ham10000": _ham10000,
}

"""melanoma.data.manifest: label files read with clear errors, files confined to the release,
deterministic grouped validation splits, and the manifest's own helpers."""

from __future__ import annotations

import pandas as pd
import pytest

from melanoma.data.manifest import (MANIFEST_COLUMNS, RECORD_COLUMNS, LabelFileError, ParseResult, attach_files,
                                    check_unique, class_folder_files, confined, connected_groups, index_files,
                                    make_val_split, parse_binary, read_manifest, read_table, records_frame,
                                    require_file, summarize, walk_files)

# ----------------------------------------------------------------------------- label files


def test_read_table_reads_strings_stripped_with_a_bom(tmp_path):
    f = tmp_path / "labels.csv"
    f.write_bytes("\ufeff image_id , melanoma\nISIC_1 , 0.0\n007,  1 \n".encode("utf-8"))
    df = read_table(f, ["image_id", "melanoma"], dataset="isic2017")
    assert list(df.columns) == ["image_id", "melanoma"]
    assert df.to_dict("list") == {"image_id": ["ISIC_1", "007"], "melanoma": ["0.0", "1"]}  # "007" stays text


def test_read_table_names_the_file_and_the_missing_column(tmp_path):
    f = tmp_path / "gt.csv"
    f.write_text("image_id,melanoma\na,1\n")
    with pytest.raises(LabelFileError, match=r"gt\.csv: missing column\(s\) \['seborrheic_keratosis'\]; "
                                             r"found \['image_id', 'melanoma'\]$"):
        read_table(f, ["image_id", "seborrheic_keratosis"], dataset="isic2017")


def test_read_table_suspects_another_delimiter(tmp_path):
    f = tmp_path / "gt.csv"
    f.write_text("image_id;melanoma\na;1\n")
    with pytest.raises(LabelFileError, match="seems to use another delimiter than ','"):
        read_table(f, ["image_id", "melanoma"], dataset="isic2017")


def test_read_table_empty_and_absent_files(tmp_path):
    (tmp_path / "empty.csv").write_text("\n\n")
    with pytest.raises(LabelFileError, match=r"empty\.csv: the label file is empty .*download the release again"):
        read_table(tmp_path / "empty.csv", ["a"], dataset="isic2017")
    with pytest.raises(FileNotFoundError, match=r"isic2017: label file not found at .*nope\.csv\. Is --root"):
        read_table(tmp_path / "nope.csv", ["a"], dataset="isic2017")
    with pytest.raises(FileNotFoundError, match="ph2: the workbook not found"):
        require_file(tmp_path / "x.xlsx", "the workbook", "ph2")


def test_parse_binary_maps_known_values_and_lists_unknown_ones(tmp_path):
    m = {"0": 0, "0.0": 0, "benign": 0, "1": 1, "1.0": 1, "malignant": 1}
    got = parse_binary(pd.Series([" Benign", "MALIGNANT", "1.0", "0"]), m, path=tmp_path / "f.csv", column="c")
    assert got.tolist() == [0, 1, 1, 0] and got.dtype == int
    with pytest.raises(LabelFileError, match=r"f\.csv: column 'c' has unknown label value\(s\) \['2', 'maybe'\]; "
                                             r"expected one of \['0', '0\.0', '1', '1\.0', 'benign', 'malignant'\]"):
        parse_binary(pd.Series(["1", "maybe", "2", "maybe"]), m, path=tmp_path / "f.csv", column="c")


def test_check_unique_names_the_duplicates(tmp_path):
    check_unique(pd.DataFrame({"image_id": ["a", "b"]}), "image_id", tmp_path / "f.csv")
    with pytest.raises(LabelFileError, match=r"duplicate image_id value\(s\) \['a', 'c'\] \(2 in all\); "
                                             "each image must be listed once"):
        check_unique(pd.DataFrame({"image_id": ["a", "b", "a", "c", "c", "a"]}), "image_id", tmp_path / "f.csv")


def test_records_frame_has_the_record_columns_sorted_by_id():
    df = records_frame([{"image_id": "b", "label": "1", "path": "b.jpg", "patient_id": "P1", "extra": 3},
                        {"image_id": "a", "label": 0, "patient_id": None}])
    assert list(df.columns) == RECORD_COLUMNS
    assert df["image_id"].tolist() == ["a", "b"] and df["label"].tolist() == [0, 1]
    assert df.loc[0, "patient_id"] == "" and df.loc[0, "path"] == "" and df.loc[1, "diagnosis"] == ""
    assert records_frame([]).empty and list(records_frame([]).columns) == RECORD_COLUMNS


def test_attach_files_reports_missing_and_unlisted():
    rows = pd.DataFrame({"image_id": ["a", "b", "c"], "label": [0, 1, 0]})
    files = {"a": "imgs/a.jpg", "c": "imgs/c.png", "z": "imgs/z.jpg"}
    present, missing, unlisted = attach_files(rows, files, expected="imgs/{id}.jpg")
    assert present[["image_id", "path"]].values.tolist() == [["a", "imgs/a.jpg"], ["c", "imgs/c.png"]]
    assert missing == [{"image_id": "b", "label": 1, "expected": "imgs/b.jpg",
                        "reason": "listed in labels, file missing"}]
    assert unlisted == [{"path": "imgs/z.jpg", "reason": "image file not listed in any label file"}]


# ----------------------------------------------------------------------------- files inside the release


def _touch(p, data=b"x"):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def test_walk_files_stays_inside_the_release(tmp_path):
    root = tmp_path / "release"
    _touch(root / "imgs" / "a.jpg")
    _touch(root / "imgs" / "sub" / "b.jpg")
    _touch(root / "imgs" / ".hidden.jpg")
    _touch(tmp_path / "secret" / "s.jpg")
    (root / "imgs" / "out.jpg").symlink_to(tmp_path / "secret" / "s.jpg")
    (root / "imgs" / "outdir").symlink_to(tmp_path / "secret", target_is_directory=True)
    (root / "imgs" / "in.jpg").symlink_to(root / "imgs" / "a.jpg")   # a link inside: fine
    (root / "imgs" / "dangling.jpg").symlink_to(root / "nowhere.jpg")
    (root / "imgs" / "again").symlink_to(root / "imgs" / "sub", target_is_directory=True)
    res = ParseResult()
    found = walk_files(root / "imgs", root, res)
    rel = sorted(p.relative_to(root).as_posix() for p in found)
    # sorted walk: the link "again" reaches imgs/sub first, so "sub" itself is not walked again
    assert rel == ["imgs/a.jpg", "imgs/again/b.jpg", "imgs/in.jpg"]
    assert sorted(o["path"] for o in res.outside) == ["imgs/out.jpg", "imgs/outdir"]
    assert all(o["reason"] == "outside-root" and "copy the file into the release folder" in o["detail"]
               for o in res.outside)
    assert res.unlisted == [{"path": "imgs/dangling.jpg", "reason": "not a regular file (dangling link?)"}]
    assert res.ignored == {"folders reached twice through links": 1}
    assert confined(root, root / "imgs" / "out.jpg") is None
    assert confined(root, root / "imgs" / "in.jpg") == (root / "imgs" / "a.jpg").resolve()
    assert walk_files(root / "absent", root, ParseResult()) == []


def test_a_release_folder_that_is_a_link_is_fine(tmp_path):
    real = tmp_path / "real"
    _touch(real / "imgs" / "a.jpg")
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    res = ParseResult()
    assert [p.name for p in walk_files(tmp_path / "link" / "imgs", tmp_path / "link", res)] == ["a.jpg"]
    assert res.outside == []


def test_index_files_prefers_the_first_suffix_and_reports_the_others(tmp_path):
    root = tmp_path
    for name in ("x.jpeg", "x.jpg", "y.png", "y_superpixels.png", "notes.txt"):
        _touch(root / "imgs" / name)
    res = ParseResult()
    found, n_excl = index_files(root / "imgs", root, (".jpg", ".jpeg", ".png"), exclude=("superpixels",), into=res)
    assert found == {"x": "imgs/x.jpg", "y": "imgs/y.png"} and n_excl == 1
    assert [(d["image_id"], d["path"], d["reason"]) for d in res.duplicates] == [("x", "imgs/x.jpeg", "duplicate-id")]
    assert "imgs/x.jpg is used" in res.duplicates[0]["detail"]


def test_class_folder_files_reports_sub_folders_and_other_files(tmp_path):
    folder = tmp_path / "melanoma"
    _touch(folder / "m1.jpg")
    _touch(folder / "m2.JPG")
    _touch(folder / "readme.txt")
    _touch(folder / "nested" / "m3.jpg")
    res = ParseResult()
    found = class_folder_files(folder, tmp_path, (".jpg",), res)
    assert found == {"m1": "melanoma/m1.jpg", "m2": "melanoma/m2.JPG"}
    assert sorted((u["path"], u["reason"]) for u in res.unlisted) == [
        ("melanoma/nested/m3.jpg", "in a sub-folder of a class folder"), ("melanoma/readme.txt", "not an image")]


# ----------------------------------------------------------------------------- splits


def _split_frame(n_groups=30, per_group=3, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        lab = int(g % 4 == 0)
        for k in range(per_group):
            rows.append({"image_id": f"img{g:03d}_{k}", "patient_id": f"P{g}" if k < 2 else "",
                         "lesion_id": f"L{g}" if k >= 1 else "", "label": lab, "split": "train"})
    rows += [{"image_id": f"test{k}", "patient_id": "", "lesion_id": "", "label": k % 2, "split": "test"}
             for k in range(5)]
    df = pd.DataFrame(rows)
    return df.iloc[rng.permutation(len(df))].reset_index(drop=True)


def test_connected_groups_are_transitive_and_named_by_their_smallest_id():
    df = pd.DataFrame({"image_id": ["d", "b", "c", "a", "e"], "patient_id": ["P1", "P1", "", "", ""],
                       "lesion_id": ["", "L1", "L1", "", ""], "pixel_hash": ["", "", "", "h", "h"]})
    assert connected_groups(df).tolist() == ["G:b", "G:b", "G:b", "G:a", "G:a"]
    assert connected_groups(df, pairs=[("c", "e"), ("x", "a")]).tolist() == ["G:a"] * 5  # unknown ids ignored
    assert connected_groups(df.drop(columns=["pixel_hash"])).tolist() == ["G:b", "G:b", "G:b", "G:a", "G:e"]


def test_make_val_split_is_grouped_stratified_and_independent_of_row_order():
    df = _split_frame()
    split = make_val_split(df, seed=0)
    groups = df["image_id"].str.slice(0, 6)
    # a patient/lesion never straddles train and val
    assert (pd.DataFrame({"g": groups, "s": split}).groupby("g")["s"].nunique() == 1).all()
    assert set(split[df["split"] == "test"]) == {"test"}             # other splits untouched
    val_groups = set(groups[split == "val"])
    mel_groups = {g for g, lab in zip(groups, df["label"]) if lab == 1}
    assert len(val_groups & mel_groups) == round(0.2 * len(mel_groups))          # 8 melanoma groups → 2
    assert len(val_groups - mel_groups) == round(0.2 * (30 - len(mel_groups)))   # 22 others → 4
    shuffled = _split_frame(seed=1)
    again = make_val_split(shuffled, seed=0)
    assert dict(zip(shuffled["image_id"], again)) == dict(zip(df["image_id"], split))
    other = make_val_split(df, seed=1)
    assert set(groups[other == "val"]) != val_groups


def test_make_val_split_keeps_both_sides_of_a_tiny_stratum_and_checks_the_fraction():
    df = pd.DataFrame({"image_id": ["a", "b", "c"], "label": [1, 1, 0], "split": "train",
                       "patient_id": "", "lesion_id": ""})
    split = make_val_split(df, val_fraction=0.01)
    assert (split[df["label"] == 1] == "val").sum() == 1            # at least one of two, never both
    assert split[df["label"] == 0].tolist() == ["train"]             # a single group cannot be split
    for bad in (0, 1, 1.5):
        with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 1\)"):
            make_val_split(df, val_fraction=bad)
    assert make_val_split(df.assign(split="test")).tolist() == ["test"] * 3


def test_summarize_counts_images_melanomas_and_unlabelled():
    m = pd.DataFrame({"split": ["train", "train", "val", "test", "test", "test"], "label": [1, 0, 0, 1, -1, -1]})
    assert summarize(m).to_dict("records") == [
        {"split": "train", "images": 2, "melanoma": 1, "unlabelled": 0},
        {"split": "val", "images": 1, "melanoma": 0, "unlabelled": 0},
        {"split": "test", "images": 3, "melanoma": 1, "unlabelled": 2}]


def test_read_manifest_by_any_name_or_says_how_to_make_it(tmp_path):
    (tmp_path / "isic2017").mkdir()
    m = pd.DataFrame({c: ["x"] for c in MANIFEST_COLUMNS})
    m.to_parquet(tmp_path / "isic2017" / "manifest.parquet")
    for name in ("B", "ISIC2017", "isic2017"):
        pd.testing.assert_frame_equal(read_manifest(tmp_path, name), m)
    with pytest.raises(FileNotFoundError, match=r"no manifest for ph2 at .*; run `melanoma ingest ph2 --root "
                                                r"<data>/ph2 --out .*` first"):
        read_manifest(tmp_path, "G")

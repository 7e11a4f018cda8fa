"""melanoma.data.dedup: planted copies are found with their kind, the leakage table counts them,
the pool is cleaned of them, and external evaluation sets are scored whole."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from melanoma.data.dedup import (DEFAULT_MAX_DHASH, DEFAULT_MAX_DISTANCE, clean_pool, eval_frame, find_duplicates,
                                 is_external, leakage)
from melanoma.data.images import difference_hash, perceptual_hash

from tests.tinywork import blob, near_copy, release, row, write_release


def _bits(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def _pairs(df: pd.DataFrame) -> set:
    return set(zip(df["image_id_a"], df["image_id_b"], df["kind"], df["distance"]))


@pytest.fixture(scope="module")
def planted():
    """Evaluation images e0–e3 (ISIC 2017 test) and a pool (ISIC 2016 train, MED-NODE) holding an
    id copy of e0 (other pixels), a pixel copy of e1 (renamed), a resized JPEG copy of e2, a MED-NODE
    image named like e3 (no shared id space) and an unrelated image."""
    ev_imgs = [blob(k) for k in range(4)]
    ev = pd.DataFrame([row("isic2017", f"ISIC_001700{k}", "test", k % 2, im) for k, im in enumerate(ev_imgs)])
    near = near_copy(ev_imgs[2])
    assert _bits(perceptual_hash(near), perceptual_hash(ev_imgs[2])) <= DEFAULT_MAX_DISTANCE  # precondition
    assert _bits(difference_hash(near), difference_hash(ev_imgs[2])) <= DEFAULT_MAX_DHASH
    pool = pd.DataFrame([
        row("isic2016", "ISIC_0017000", "train", 0, blob(50)),       # id of e0
        row("isic2016", "ISIC_0016001", "train", 1, ev_imgs[1]),     # pixels of e1
        row("isic2016", "ISIC_0016002", "train", 0, near),           # near e2
        row("mednode", "ISIC_0017003", "train", 0, blob(51)),        # e3's name, not an ISIC release
        row("isic2016", "ISIC_0016004", "train", 1, blob(52)),       # unrelated
    ])
    return pool, ev, perceptual_hash(near), perceptual_hash(ev_imgs[2])


def test_planted_copies_are_found_with_their_kind(planted):
    pool, ev, ph_near, ph_e2 = planted
    d = find_duplicates(pool, ev)
    assert list(d.columns) == ["dataset_a", "image_id_a", "split_a", "dataset_b", "image_id_b", "split_b",
                               "kind", "distance"]
    assert _pairs(d) == {("ISIC_0017000", "ISIC_0017000", "id", 0),
                         ("ISIC_0016001", "ISIC_0017001", "pixels", 0),
                         ("ISIC_0016002", "ISIC_0017002", "near", _bits(ph_near, ph_e2))}
    assert set(d["dataset_a"]) == {"isic2016"} and set(d["split_b"]) == {"test"}


def test_the_search_is_the_same_in_chunks(planted):
    pool, ev, *_ = planted
    pd.testing.assert_frame_equal(find_duplicates(pool, ev, chunk=1), find_duplicates(pool, ev))
    pd.testing.assert_frame_equal(find_duplicates(pool, ev, chunk=2), find_duplicates(pool, ev))


def _hashed(dataset, image_id, phash, dhash, pixel="p", split="train"):
    return {"dataset": dataset, "image_id": image_id, "split": split, "pixel_hash": f"{pixel}-{image_id}",
            "phash": f"{phash:016x}", "dhash": f"{dhash:016x}"}


def test_near_needs_both_hashes_within_their_distances():
    base_p, base_d = 0x0123456789ABCDEF, 0xFEDCBA9876543210
    ev = pd.DataFrame([_hashed("isic2017", "e", base_p, base_d, split="test")])
    flip = lambda x, n: x ^ ((1 << n) - 1)  # noqa: E731  flip the n lowest bits
    pool = pd.DataFrame([
        _hashed("kaggle", "p4d6", flip(base_p, 4), flip(base_d, 6)),   # both at the limit: near
        _hashed("kaggle", "p4d7", flip(base_p, 4), flip(base_d, 7)),   # dHash one bit too far
        _hashed("kaggle", "p5d0", flip(base_p, 5), base_d),            # pHash one bit too far
        _hashed("kaggle", "p0d0", base_p, base_d),                     # same hashes, other pixels
    ])
    assert _pairs(find_duplicates(pool, ev)) == {("p4d6", "e", "near", 4), ("p0d0", "e", "near", 0)}
    assert _pairs(find_duplicates(pool, ev, max_distance=5)) == {
        ("p4d6", "e", "near", 4), ("p5d0", "e", "near", 5), ("p0d0", "e", "near", 0)}
    assert _pairs(find_duplicates(pool, ev, max_distance=0, max_dhash=0)) == {("p0d0", "e", "near", 0)}


def test_the_strongest_kind_is_reported():
    ev = pd.DataFrame([_hashed("isic2017", "ISIC_0000001", 1, 1, pixel="same", split="test")])
    same_id_and_pixels = dict(_hashed("isic2016", "ISIC_0000001", 1, 1), pixel_hash="same-ISIC_0000001")
    pixels_and_hashes = dict(_hashed("kaggle", "renamed", 1, 1), pixel_hash="same-ISIC_0000001")
    d = find_duplicates(pd.DataFrame([same_id_and_pixels, pixels_and_hashes]), ev)
    assert _pairs(d) == {("ISIC_0000001", "ISIC_0000001", "id", 0), ("renamed", "ISIC_0000001", "pixels", 0)}


def test_no_rows_no_pairs(planted):
    pool, ev, *_ = planted
    for a, b in ((pool.iloc[:0], ev), (pool, ev.iloc[:0])):
        d = find_duplicates(a, b)
        assert d.empty and "kind" in d.columns


def test_leakage_table_counts_images_not_pairs(planted):
    pool, ev, *_ = planted
    val = pd.DataFrame([row("isic2017", "ISIC_0017100", "val", 0, blob(60))])
    # a second pool image duplicating e1: two pool images, one leaked evaluation image
    pool2 = pd.concat([pool, pd.DataFrame([row("kaggle", "k_copy", "train", 1, blob(1))])], ignore_index=True)
    pairs, table = leakage(pool2, pd.concat([ev, val], ignore_index=True))
    assert len(pairs) == 4
    t = table.set_index("eval_split")
    assert list(table["eval_set"]) == ["ISIC2017", "ISIC2017"]
    assert t.loc["test", "n_eval"] == 4 and t.loc["val", "n_eval"] == 1
    assert t.loc["test", "n_eval_leaked"] == 3 and t.loc["test", "n_train_dups"] == 4
    assert (t.loc["test", "by_id"], t.loc["test", "by_pixels"], t.loc["test", "by_near"]) == (1, 2, 1)
    assert t.loc["val", "n_eval_leaked"] == 0 and t.loc["val", "n_train_dups"] == 0


def test_clean_pool_drops_exactly_the_duplicates(planted):
    pool, ev, *_ = planted
    pairs = find_duplicates(pool, ev)
    kept = clean_pool(pool, pairs, "drop")
    assert list(kept["image_id"]) == ["ISIC_0017003", "ISIC_0016004"]
    assert clean_pool(pool, pairs, "keep") is pool
    assert clean_pool(pool, pairs.iloc[:0], "drop") is pool
    # matched by (dataset, image id): the same id in another dataset is another image
    other = pd.concat([pool, pool.iloc[[1]].assign(dataset="kaggle")], ignore_index=True)
    assert "kaggle" in set(clean_pool(other, pairs)["dataset"])
    with pytest.raises(ValueError, match=r"unknown leakage policy 'remove'; valid: \('drop', 'keep'\)"):
        clean_pool(pool, pairs, "remove")


def test_is_external_only_outside_the_combination_and_without_a_test_split():
    ph2 = pd.DataFrame({"split": ["train", "val"]})
    isic2020 = pd.DataFrame({"split": ["train", "val", "test"]})  # its test split is unlabelled: still kept
    assert is_external(ph2, "ph2", ["isic2017"]) is True
    assert is_external(ph2, "ph2", ["isic2017", "ph2"]) is False
    assert is_external(isic2020, "isic2020", ["isic2017"]) is False


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    w = tmp_path_factory.mktemp("dedup_work")
    release(w, "isic2017", {"train": (4, 2), "val": (3, 1), "test": (3, 1)}, seed=0, ids="ISIC_{:07d}")
    m = release(w, "ph2", {"train": (5, 2), "val": (2, 1)}, seed=20, ids="IMD{:03d}")
    return w, m


def test_eval_frame_takes_val_and_test_and_scores_an_external_set_whole(work):
    w, ph2 = work
    ev = eval_frame(w, ["isic2017", "ph2"])
    assert ev.groupby(["eval_set", "split"]).size().to_dict() == {
        ("isic2017", "test"): 3, ("isic2017", "val"): 3, ("ph2", "val"): 2}
    whole = eval_frame(w, ["isic2017", "ph2"], train_datasets=["isic2017"])
    p = whole[whole["eval_set"] == "ph2"]
    assert len(p) == len(ph2) == 7 and set(p["split"]) == {"test"}
    assert list(p.sort_values("image_id")["release_split"]) == list(ph2.sort_values("image_id")["release_split"])
    assert whole[whole["eval_set"] == "isic2017"]["split"].value_counts().to_dict() == {"val": 3, "test": 3}
    inside = eval_frame(w, ["ph2"], train_datasets=["ph2"])   # a member of the combination: its own val only
    assert set(inside["split"]) == {"val"} and len(inside) == 2
    assert eval_frame(w, []).empty


def test_eval_frame_leaves_unlabelled_rows_of_an_external_set_out(tmp_path):
    imgs = [blob(k) for k in range(3)]
    rows = [row("ph2", f"IMD{k}", "train", lab, im, release_split="")
            for k, (lab, im) in enumerate(zip([0, 1, -1], imgs))]
    write_release(tmp_path, rows, imgs)
    ev = eval_frame(tmp_path, ["ph2"], train_datasets=["isic2017"])
    assert sorted(ev["image_id"]) == ["IMD0", "IMD1"] and np.all(ev["label"] >= 0)

"""melanoma.data.combine: a training combination's train/val rows never hold an evaluation image,
nor an exact or perceptual copy of one; what was removed is counted and reported."""

from __future__ import annotations

import pandas as pd
import pytest

from melanoma.data.combine import combine, leakage_report
from melanoma.data.dedup import DEFAULT_MAX_DHASH, DEFAULT_MAX_DISTANCE

from tests.tinywork import blob, near_copy, release, row

#: The planted rows that must go: the id copy is named like B's first test image.
PLANTED_TRAIN = {"ISIC_0000010", "ISIC_0016090", "ISIC_0016091", "ISIC_0016092"}
PLANTED_VAL = {"ISIC_0016093"}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """ISIC 2017 (B, an evaluation set), PH2 (G, external: no test split) and ISIC 2016 (A, the
    training member) holding planted copies of evaluation images:

    train: the ISIC id of B's first test image (other pixels), B's second test image renamed, a
    resized JPEG of B's first validation image, PH2's first image renamed, and an unlabelled image;
    val: B's third test image renamed, and B's second validation image renamed (kept: the
    combination's validation rows are checked against the evaluation *test* rows only)."""
    w = tmp_path_factory.mktemp("combine_work")
    b = release(w, "isic2017", {"train": (6, 2), "val": (4, 2), "test": (4, 2)}, seed=0, ids="ISIC_{:07d}")
    g = release(w, "ph2", {"train": (5, 2), "val": (2, 1)}, seed=30, ids="IMD{:03d}")
    # images by their seed: release() gave blob(seed + k) to its k-th row, train first
    b_test = [blob(10 + k) for k in range(4)]
    b_val = [blob(6 + k) for k in range(4)]
    g_first = blob(30)
    assert b.loc[b["split"] == "test", "image_id"].tolist() == [f"ISIC_{10 + k:07d}" for k in range(4)]
    planted = [
        (row("isic2016", "ISIC_0000010", "train", 0, blob(90)), blob(90)),      # B test id, other pixels
        (row("isic2016", "ISIC_0016090", "train", 1, b_test[1]), b_test[1]),   # B test pixels
        (row("isic2016", "ISIC_0016091", "train", 0, near_copy(b_val[0])), near_copy(b_val[0])),  # near B val
        (row("isic2016", "ISIC_0016092", "train", 1, g_first), g_first),       # PH2 (external) pixels
        (row("isic2016", "ISIC_0016094", "train", -1, blob(94)), blob(94)),     # unlabelled
        (row("isic2016", "ISIC_0016093", "val", 0, b_test[2]), b_test[2]),     # B test pixels, in val
        (row("isic2016", "ISIC_0016095", "val", 1, b_val[1]), b_val[1]),       # B val pixels, in val: kept
    ]
    a = release(w, "isic2016", {"train": (8, 3), "val": (4, 2), "test": (3, 1)}, seed=100, ids="ISIC_{:07d}",
                extra=planted)
    return w, a, b, g


def _near(a: str, b: str, limit: int) -> bool:
    return bin(int(a, 16) ^ int(b, 16)).count("1") <= limit


def _copies(rows: pd.DataFrame, ev: pd.DataFrame) -> list[tuple[str, str]]:
    """(row, evaluation image) pairs that are the same image, by the rules of dedup.py, checked
    here pair by pair."""
    out = []
    for r in rows.itertuples():
        for e in ev.itertuples():
            same_id = r.image_id == e.image_id and r.image_id.startswith("ISIC_")
            if (same_id or r.pixel_hash == e.pixel_hash
                    or (_near(r.phash, e.phash, DEFAULT_MAX_DISTANCE) and _near(r.dhash, e.dhash, DEFAULT_MAX_DHASH))):
                out.append((r.image_id, e.image_id))
    return out


def test_no_evaluation_image_or_copy_of_one_is_left_for_training(work):
    w, a, b, g = work
    c = combine(w, "A", ["isic2017", "ph2"])
    ev_all = pd.concat([b[b["split"].isin(["val", "test"])], g])        # PH2 is scored whole
    assert _copies(c.train, ev_all) == []
    assert _copies(c.val, pd.concat([b[b["split"] == "test"], g])) == []
    # ...and exactly the planted ones went
    labelled_train = a[(a["split"] == "train") & (a["label"] >= 0)]
    assert set(labelled_train["image_id"]) - set(c.train["image_id"]) == PLANTED_TRAIN
    assert set(a[a["split"] == "val"]["image_id"]) - set(c.val["image_id"]) == PLANTED_VAL
    assert "ISIC_0016095" in set(c.val["image_id"])           # a copy of a *validation* image, in val: kept
    assert c.removed == {"train": len(PLANTED_TRAIN), "val": len(PLANTED_VAL)}
    assert (c.train["split"] == "train").all() and (c.val["split"] == "val").all()
    assert (c.train["label"] >= 0).all() and "ISIC_0016094" not in set(c.train["image_id"])
    assert c.datasets == ["isic2016"] and c.label == "A"
    pairs = c.pairs.groupby("pool").size().to_dict()
    assert pairs == {"train": 4, "val": 1}
    assert set(c.pairs[c.pairs["pool"] == "train"]["kind"]) == {"id", "pixels", "near"}


def test_the_leakage_table_is_before_cleaning(work):
    w, a, *_ = work
    c = combine(w, "A", ["isic2017", "ph2"])
    t = c.leakage.set_index(["eval_set", "eval_split"])
    assert t.loc[("ISIC2017", "test"), "n_train_dups"] == 2 and t.loc[("ISIC2017", "val"), "n_train_dups"] == 1
    assert t.loc[("PH2", "test"), "n_eval"] == 7 and t.loc[("PH2", "test"), "n_train_dups"] == 1
    n_train = int(((a["split"] == "train") & (a["label"] >= 0)).sum())
    assert set(c.leakage["n_train"]) == {n_train} and set(c.leakage["n_train_after"]) == {n_train - 4}
    assert set(c.leakage["policy"]) == {"drop"}


def test_policy_keep_reports_and_keeps(work):
    w, a, *_ = work
    c = combine(w, "A", ["isic2017", "ph2"], policy="keep")
    assert set(PLANTED_TRAIN) <= set(c.train["image_id"]) and set(PLANTED_VAL) <= set(c.val["image_id"])
    assert c.removed == {"train": 0, "val": 0}
    assert c.leakage["n_train_dups"].sum() == 4 and set(c.leakage["policy"]) == {"keep"}
    with pytest.raises(ValueError, match="unknown leakage policy"):
        combine(w, "A", ["isic2017"], policy="ignore")


def test_without_evaluation_sets_nothing_is_removed(work):
    w, a, *_ = work
    c = combine(w, "A")
    assert len(c.train) == int(((a["split"] == "train") & (a["label"] >= 0)).sum())
    assert len(c.val) == int((a["split"] == "val").sum())
    assert c.leakage.empty and c.pairs.empty and c.removed == {"train": 0, "val": 0}


def test_several_members_and_every_spelling(work):
    w, a, b, g = work
    c = combine(w, "A,B", ["isic2017"])
    assert c.datasets == ["isic2016", "isic2017"]
    assert set(c.train["dataset"]) == {"isic2016", "isic2017"}
    # B's own training rows stay (they duplicate none of its val/test rows); A's planted ones go
    assert set(b[b["split"] == "train"]["image_id"]) <= set(c.train["image_id"])
    assert not (PLANTED_TRAIN - {"ISIC_0016092"}) & set(c.train["image_id"])  # PH2 is no evaluation set here
    assert "ISIC_0016092" in set(c.train["image_id"])
    same = combine(w, ["ISIC2016", "isic2017"], ["B"])
    pd.testing.assert_frame_equal(same.train, c.train)
    pd.testing.assert_frame_equal(same.val, c.val)


def test_nothing_left_to_train_on_is_an_error(tmp_path):
    release(tmp_path, "isic2017", {"train": (2, 1), "val": (2, 1), "test": (2, 1)}, seed=0, ids="ISIC_{:07d}")
    copies = [(row("kaggle", f"k{k}", "train", k % 2, blob(4 + k)), blob(4 + k)) for k in range(2)]  # B's test
    release(tmp_path, "kaggle", {"val": (2, 1)}, seed=50, ids="k_val{}", extra=copies)
    with pytest.raises(ValueError, match=r"combination 'J' has no training images left \(before cleaning: 2\)"):
        combine(tmp_path, "J", ["isic2017"])
    assert len(combine(tmp_path, "J", ["isic2017"], policy="keep").train) == 2
    release(tmp_path, "mednode", {"train": (3, 1)}, seed=60, ids="m{}")
    with pytest.raises(ValueError, match="combination 'I' has no validation images"):
        combine(tmp_path, "I")
    with pytest.raises(FileNotFoundError, match="no manifest for ph2"):
        combine(tmp_path, "G")


def test_leakage_report_names_the_combination(work):
    w, *_ = work
    t = leakage_report(w, "A", ["isic2017", "ph2"])
    assert list(t.columns[:3]) == ["train", "eval_set", "eval_split"]
    assert set(t["train"]) == {"A"} and len(t) == 3
    pd.testing.assert_frame_equal(t.drop(columns="train"), combine(w, "A", ["isic2017", "ph2"]).leakage)

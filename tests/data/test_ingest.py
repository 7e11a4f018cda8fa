"""Every parser on the SYNTHETIC replicas: counts and labels exactly as generated; determinism;
splits independent of file order; the planted duplicates found."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from melanoma.data.dedup import find_duplicates
from melanoma.data.ingest import ingest_dataset
from melanoma.data.manifest import MANIFEST_COLUMNS, make_val_split, read_manifest
from melanoma.data.registry import SHORT_NAMES


@pytest.mark.parametrize("short", SHORT_NAMES)
def test_parser_matches_generated_truth(synth_data, synth_work, short):
    truth = pd.read_csv(synth_data / short / "SYNTHETIC_truth.csv", dtype={"image_id": str})
    m = read_manifest(synth_work, short)
    rep = json.loads((synth_work / short / "report.json").read_text())
    assert list(m.columns) == MANIFEST_COLUMNS
    assert m["synthetic"].all() and rep["synthetic"]
    assert rep["n_missing"] == rep["n_bad"] == rep["n_unlisted"] == 0
    assert m["image_id"].is_unique
    got = m.set_index("image_id")
    want = truth.set_index("image_id")
    assert sorted(got.index) == sorted(want.index)
    assert (got.loc[want.index, "label"] == want["label"]).all()
    assert (got.loc[want.index, "path"] == want["path"]).all()
    # released splits are kept; val made only from train where the release has none
    rel = want["split"]
    assert (got.loc[rel.index[rel == "test"], "split"] == "test").all()
    if (rel == "val").any():
        assert (got.loc[want.index, "split"] == rel).all()
    else:
        made = got.loc[rel.index[rel == "train"], "split"]
        assert set(made) == {"train", "val"}
        assert 0.1 < (made == "val").mean() < 0.3


def test_groups_never_straddle_train_and_val(synth_work):
    for short in ("pad_ufes_20", "isic2020", "ham10000"):
        m = read_manifest(synth_work, short)
        key = m["patient_id"].where(m["patient_id"] != "", m["lesion_id"])
        key = key[key != ""]
        per_group = m.loc[key.index].groupby(key)["split"].nunique()
        assert (per_group == 1).all(), short


def test_split_is_independent_of_row_order():
    rows = pd.DataFrame({"image_id": [f"i{i:03d}" for i in range(200)],
                         "label": [1 if i % 5 == 0 else 0 for i in range(200)],
                         "split": "train", "patient_id": [f"p{i // 2}" for i in range(200)], "lesion_id": ""})
    a = make_val_split(rows, seed=3)
    shuffled = rows.sample(frac=1, random_state=1)
    b = make_val_split(shuffled, seed=3).loc[rows.index]
    assert (a == b).all()
    assert not (make_val_split(rows, seed=4) == a).all()
    # stratified: both classes present in val in about the right proportion
    val = rows[a == "val"]
    assert 0.15 < len(val) / len(rows) < 0.25 and 0.1 < val["label"].mean() < 0.3


def test_two_ingests_are_identical(synth_data, tmp_path):
    src = synth_data / "mednode"
    a, _ = ingest_dataset("mednode", src, tmp_path / "w1", progress=False)
    copy = tmp_path / "copy"
    shutil.copytree(src, copy)
    b, _ = ingest_dataset("I", copy, tmp_path / "w2", progress=False)
    pd.testing.assert_frame_equal(a, b)


def test_planted_duplicates_are_found(synth_data, synth_work):
    planted = pd.read_csv(synth_data / "PLANTED_DUPLICATES.csv", dtype=str)
    allm = pd.concat([read_manifest(synth_work, s) for s in SHORT_NAMES], ignore_index=True)
    pairs = find_duplicates(allm, allm)
    found = set(zip(pairs["dataset_a"], pairs["image_id_a"], pairs["dataset_b"], pairs["image_id_b"]))
    missed = [r for r in planted.itertuples()
              if (r.dataset_a, r.image_id_a, r.dataset_b, r.image_id_b) not in found]
    assert not missed, missed[:5]
    kinds = dict(zip(zip(pairs["dataset_a"], pairs["image_id_a"], pairs["dataset_b"], pairs["image_id_b"]),
                     pairs["kind"]))
    resized = planted[planted["kind"] == "resized"]
    assert len(resized) and all(kinds[(r.dataset_a, r.image_id_a, r.dataset_b, r.image_id_b)] == "near"
                                for r in resized.itertuples())
    # few false pairs among ~2M distinct-image pairs
    planted_set = {(r.dataset_a, r.image_id_a, r.dataset_b, r.image_id_b) for r in planted.itertuples()}
    planted_set |= {(c, d, a, b) for a, b, c, d in planted_set}
    extra = {p for p in found if p not in planted_set and p[:2] != p[2:]}
    assert len(extra) <= 10, sorted(extra)[:10]


def test_leakage_dropped_from_training(synth_work):
    from melanoma.data.combine import combine

    c = combine(synth_work, "A-E,J", ["isic2017", "isic2018"])
    assert c.removed["train"] > 0
    kept = set(zip(c.train["dataset"], c.train["image_id"]))
    leaked = set(zip(c.pairs["dataset_a"], c.pairs["image_id_a"]))
    assert not (kept & leaked)
    keep = combine(synth_work, "A-E,J", ["isic2017", "isic2018"], policy="keep")
    assert len(keep.train) == len(c.train) + c.removed["train"]
    t = c.leakage.set_index(["eval_set", "eval_split"])
    assert t.loc[("ISIC2017", "test"), "n_eval_leaked"] > 0  # 2016 test ⊂ 2017 train analogue, 2019 ⊃ 2017 test


def test_cli_ingest_and_leakage(synth_data, tmp_path, capsys):
    from melanoma.cli import main

    assert main(["ingest", "isic2016", "--root", str(synth_data / "isic2016"), "--out", str(tmp_path), "--quiet"]) == 0
    assert main(["ingest", "B", "--root", str(synth_data / "isic2017"), "--out", str(tmp_path), "--quiet"]) == 0
    assert main(["leakage", "--work", str(tmp_path), "--train", "B", "--eval", "A"]) == 0
    out = capsys.readouterr().out
    assert "ISIC2016" in out and "n_eval_leaked" in out
    assert main(["ingest", "isic2016", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2

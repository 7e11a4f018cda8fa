"""melanoma.train.features: one backbone pass per image, cached per (model, weights, size, dataset),
reused on the second call, redone when the dataset's images change; seeded augmented views."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from torch import nn

from melanoma.data.cache import ImageCache
from melanoma.data.manifest import read_manifest
from melanoma.train import features as F
from melanoma.train.transforms import eval_transform

from tests.tinywork import CACHE, standard_work

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
SIZE, RESIZE = 24, 28


def _backbone():
    """Mean colour of the input: a 'backbone' whose features can be computed by hand."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())


def _ensure(work, ds, manifest=None, **kw):
    kw = {"model": "toy", "weights": "none", "size": SIZE, "resize": RESIZE, "mean": MEAN, "std": STD,
          "cache_size": CACHE, "progress": False, **kw}
    return F.ensure_features(work, ds, read_manifest(work, ds) if manifest is None else manifest, _backbone(), **kw)


@pytest.fixture()
def work(tmp_path):
    return standard_work(tmp_path / "work")


def test_view0_holds_each_images_features_in_key_order(work):
    facts = _ensure(work, "isic2017")
    m = read_manifest(work, "isic2017")
    d = F.feature_dir(work, "toy", "none", SIZE) / "isic2017"
    keys = json.loads((d / "keys.json").read_text())
    assert keys == sorted(set(m["content_hash"])) and facts["images_encoded"] == len(keys) == 32
    arr = np.load(d / "view0.npy")
    assert arr.dtype == np.float16 and arr.shape == (32, 3)
    cache, tf = ImageCache(work / "cache", CACHE), eval_transform(SIZE, RESIZE, mean=MEAN, std=STD)
    want = np.stack([tf(cache.get(k)).mean((1, 2)).numpy() for k in keys])
    np.testing.assert_allclose(arr.astype(np.float32), want, atol=2e-3)
    index, arr2 = F.load_features(work, "isic2017", model="toy", weights="none", size=SIZE)
    assert index == {k: i for i, k in enumerate(keys)} and np.array_equal(arr, arr2)


def test_the_second_call_reuses_the_cache(work):
    _ensure(work, "isic2017")
    f = F.feature_dir(work, "toy", "none", SIZE) / "isic2017" / "view0.npy"
    mtime = f.stat().st_mtime_ns
    again = _ensure(work, "isic2017")
    assert again["images_encoded"] == 0 and again["img_per_s"] is None
    assert f.stat().st_mtime_ns == mtime
    more = _ensure(work, "isic2017", views=1)   # only what is missing is made: the augmented view
    assert more["images_encoded"] == 16 and f.stat().st_mtime_ns == mtime


def test_keyed_by_model_weights_and_size(work):
    _ensure(work, "isic2017")
    dirs = {F.feature_dir(work, m, w, s) for m, w, s in
            [("toy", "none", SIZE), ("toy", "imagenet", SIZE), ("toy", "none", 32), ("other", "none", SIZE)]}
    assert len(dirs) == 4
    for kw in (dict(model="toy", weights="none", size=32), dict(model="toy", weights="imagenet", size=SIZE),
               dict(model="other", weights="none", size=SIZE)):
        with pytest.raises(FileNotFoundError, match=r"features .*view0\.npy missing; they are made by the fast path"):
            F.load_features(work, "isic2017", **kw)
    assert _ensure(work, "isic2017", size=32, resize=36)["images_encoded"] == 32  # another size: encoded anew


def test_a_reingested_dataset_starts_over(work):
    _ensure(work, "isic2017", views=1)
    d = F.feature_dir(work, "toy", "none", SIZE) / "isic2017"
    m = read_manifest(work, "isic2017")
    fewer = m[~m["image_id"].isin(m[m["split"] == "train"]["image_id"].iloc[:3])]  # three training images gone
    facts = _ensure(work, "isic2017", manifest=fewer, views=1)
    assert facts["images_encoded"] == 29 + 13
    assert json.loads((d / "keys.json").read_text()) == sorted(fewer["content_hash"])
    assert np.load(d / "view0.npy").shape == (29, 3) and np.load(d / "aug-seed0-v0.npy").shape == (13, 3)
    assert json.loads((d / "aug-keys.json").read_text()) == sorted(fewer[fewer["split"] == "train"]["content_hash"])


def test_augmented_views_of_another_scheme_are_made_again(work):
    _ensure(work, "isic2017", views=1)
    d = F.feature_dir(work, "toy", "none", SIZE) / "isic2017"
    aug = d / "aug-seed0-v0.npy"
    assert json.loads((d / "aug-scheme.json").read_text()) == {"scheme": F.AUG_SCHEME}
    good = np.load(aug)
    np.save(aug, np.zeros_like(good))                 # views an older scheme drew, as an older
    (d / "aug-scheme.json").unlink()                  # version left them (no scheme recorded)
    with pytest.raises(FileNotFoundError, match="older augmentation scheme"):
        F.load_features(work, "isic2017", model="toy", weights="none", size=SIZE, view="aug-seed0-v0")
    F.load_features(work, "isic2017", model="toy", weights="none", size=SIZE)  # view0 is unaffected
    again = _ensure(work, "isic2017", views=1)
    assert again["images_encoded"] == 16 and np.array_equal(np.load(aug), good)
    (d / "aug-scheme.json").write_text(json.dumps({"scheme": F.AUG_SCHEME - 1}))
    assert _ensure(work, "isic2017", views=1)["images_encoded"] == 16
    assert _ensure(work, "isic2017", views=1)["images_encoded"] == 0  # and then it is current


def test_gather_follows_the_rows_across_datasets(work):
    for ds in ("isic2017", "isic2016"):
        _ensure(work, ds)
    rows = pd.concat([read_manifest(work, "isic2017"), read_manifest(work, "isic2016")]).sample(frac=1, random_state=0)
    X = F.gather(work, rows, model="toy", weights="none", size=SIZE)
    assert X.dtype == np.float32 and X.shape == (len(rows), 3)
    for x, (ds, h) in zip(X, zip(rows["dataset"], rows["content_hash"])):
        index, arr = F.load_features(work, ds, model="toy", weights="none", size=SIZE)
        np.testing.assert_array_equal(x, arr[index[h]].astype(np.float32))
    assert F.gather(work, rows.iloc[:0], model="toy", weights="none", size=SIZE).shape == (0, 0)


def test_augmented_views_are_seeded_and_differ_by_view(tmp_path):
    a, b = standard_work(tmp_path / "a"), standard_work(tmp_path / "b")
    _ensure(a, "isic2017", views=2, seed=3)
    _ensure(b, "isic2017", views=1, seed=3)
    _ensure(b, "isic2017", views=1, seed=4)
    fa, fb = (F.feature_dir(w, "toy", "none", SIZE) / "isic2017" for w in (a, b))
    v0 = np.load(fa / "aug-seed3-v0.npy")
    assert np.array_equal(v0, np.load(fb / "aug-seed3-v0.npy"))      # the same seed: the same draws
    assert not np.array_equal(v0, np.load(fa / "aug-seed3-v1.npy"))  # another view
    assert not np.array_equal(v0, np.load(fb / "aug-seed4-v0.npy"))  # another seed
    index, view0 = F.load_features(a, "isic2017", model="toy", weights="none", size=SIZE)
    aug_keys = json.loads((fa / "aug-keys.json").read_text())
    eval_rows = view0[[index[k] for k in aug_keys]]                   # the same images, eval transform
    assert v0.shape == eval_rows.shape == (16, 3)
    assert np.abs(v0.astype(np.float32) - eval_rows.astype(np.float32)).max() > 0.05  # augmented


def test_extract_of_nothing(work):
    out = F.extract(_backbone(), [], ImageCache(work / "cache", CACHE), eval_transform(SIZE, RESIZE), progress=False)
    assert out.shape == (0, 0)


def test_features_for_dataset_builds_the_backbone_and_writes_done_json(work):
    kw = dict(model="meshnet", weights="none", size=32, cache_size=CACHE, device="cpu", progress=False)
    facts = F.features_for_dataset(work, "G", **kw)                     # PH2 by its letter
    d = F.feature_dir(work, "meshnet", "none", 32) / "ph2"
    assert json.loads((d / "done.json").read_text()) == facts
    assert facts["dataset"] == "ph2" and facts["images_encoded"] == 14 and facts["device"] == "cpu"
    assert np.load(d / "view0.npy").shape == (14, 21)                   # MeshNet's 21 pooled channels
    assert F.features_for_dataset(work, "ph2", **kw)["images_encoded"] == 0

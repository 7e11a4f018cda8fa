"""Duplicates across datasets, and the leakage they cause when datasets are combined.

Three kinds of match, strongest first:

``id``
    the same ISIC id (``ISIC_0000000``) in two ISIC-family releases (A–E, HAM10000), which
    share one id space — e.g. ISIC 2016 test images reappear in ISIC 2017 training;
``pixels``
    identical decoded pixels under different names (re-saved, renamed);
``near``
    perceptual hash (64-bit DCT pHash) within ``max_distance`` bits *and* difference hash (64-bit
    dHash) within ``max_dhash`` bits: resized or re-encoded copies, e.g. the Kaggle set's renamed
    ISIC images (squashed to 224×224: both hashes work on a fixed-size thumbnail, so they ignore
    the aspect ratio, as they must here). pHash alone is not enough for dermoscopy:
    centred dark blobs look alike at low frequencies, and on 400 real ISIC 2017 images distinct
    lesions came as close as 4 bits in pHash — but those pairs were ≥ 18 bits apart in dHash (a pair
    at 6 + 8 bits looked like two different lesions on inspection), while
    a resize to 224 px + JPEG q60 moved both hashes by ≤ 4 bits.

A training combination is then cleaned against the evaluation sets: by default (``policy="drop"``)
every training or validation image that matches any evaluation image is removed, and both numbers
(before/after) are reported.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.data.manifest import read_manifest
from melanoma.data.registry import get

ISIC_ID = re.compile(r"^ISIC_\d{7}$")
ISIC_FAMILY = {"isic2016", "isic2017", "isic2018", "isic2019", "isic2020", "ham10000"}
#: Default distances for a near-duplicate (bits out of 64), from the measurement in the docstring.
DEFAULT_MAX_DISTANCE = 4
DEFAULT_MAX_DHASH = 6
POLICIES = ("drop", "keep")


def _hash_ints(hexes: pd.Series) -> np.ndarray:
    return np.array([int(h, 16) for h in hexes], dtype=np.uint64)


def _popcount(x: np.ndarray) -> np.ndarray:
    # bit count of uint64 via byte view and a lookup table
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
    return table[x.view(np.uint8).reshape(*x.shape, 8)].sum(axis=-1)


def find_duplicates(a: pd.DataFrame, b: pd.DataFrame, *, max_distance: int = DEFAULT_MAX_DISTANCE,
                    max_dhash: int = DEFAULT_MAX_DHASH, chunk: int = 2048) -> pd.DataFrame:
    """Pairs (row of ``a``, row of ``b``) that are the same image, with the strongest ``kind``.

    Returns columns ``dataset_a, image_id_a, split_a, dataset_b, image_id_b, split_b, kind,
    distance`` (``distance`` = pHash bits; 0 for id/pixel matches).
    """
    cols = ["dataset_a", "image_id_a", "split_a", "dataset_b", "image_id_b", "split_b", "kind", "distance"]
    if a.empty or b.empty:
        return pd.DataFrame(columns=cols)
    found: dict[tuple[int, int], tuple[str, int]] = {}
    # id matches (ISIC family only)
    ai = a.reset_index(drop=True)
    bi = b.reset_index(drop=True)
    a_isic = ai["dataset"].isin(ISIC_FAMILY) & ai["image_id"].str.match(ISIC_ID)
    b_isic = bi["dataset"].isin(ISIC_FAMILY) & bi["image_id"].str.match(ISIC_ID)
    if a_isic.any() and b_isic.any():
        m = ai[a_isic].reset_index().merge(bi[b_isic].reset_index(), on="image_id")
        for i, j in zip(m["index_x"], m["index_y"]):
            found[(i, j)] = ("id", 0)
    # identical pixels
    m = ai.reset_index().merge(bi.reset_index(), on="pixel_hash")
    for i, j in zip(m["index_x"], m["index_y"]):
        found.setdefault((i, j), ("pixels", 0))
    # near duplicates by pHash (vectorised, chunked)
    ha, hb = _hash_ints(ai["phash"]), _hash_ints(bi["phash"])
    da, db = _hash_ints(ai["dhash"]), _hash_ints(bi["dhash"])
    for s in range(0, len(ha), chunk):
        d = _popcount(ha[s:s + chunk, None] ^ hb[None, :])
        ii, jj = np.nonzero(d <= max_distance)
        keep = _popcount(da[ii + s] ^ db[jj]) <= max_dhash
        ii, jj = ii[keep], jj[keep]
        for i, j in zip(ii + s, jj):
            found.setdefault((int(i), int(j)), ("near", int(d[i - s, j])))
    rows = [(ai.at[i, "dataset"], ai.at[i, "image_id"], ai.at[i, "split"],
             bi.at[j, "dataset"], bi.at[j, "image_id"], bi.at[j, "split"], k, dist)
            for (i, j), (k, dist) in sorted(found.items())]
    return pd.DataFrame(rows, columns=cols)


def is_external(manifest: pd.DataFrame, dataset: str, train_datasets) -> bool:
    """True when ``dataset`` is scored *whole* as an external test set for this combination: it is
    not a member of the training combination and its release has no test split at all (PH2,
    MED-NODE, PAD-UFES-20, HAM10000; their 80:20 train/val split is ours, not the release's). A
    release with an official test split, even an unlabelled one (ISIC 2020's, scored on Kaggle),
    keeps it."""
    if dataset in set(train_datasets):
        return False
    return not bool((manifest["split"] == "test").any())


def eval_frame(work: str | Path, eval_sets: list[str], splits=("val", "test"),
               train_datasets=None) -> pd.DataFrame:
    """The evaluation images: the val and test splits of each named evaluation set.

    With ``train_datasets`` (the training combination's members), an evaluation set that
    :func:`is_external` is scored whole: every labelled row becomes a ``test`` row (``release_split``
    keeps the release's own split, ``split`` says how it is used); it then has no validation rows
    of its own. The column ``eval_set`` names the evaluation set of each row.
    """
    frames = []
    for e in eval_sets:
        m = read_manifest(work, e)
        if train_datasets is not None and is_external(m, e, train_datasets):
            m = m[m["label"] >= 0].assign(split="test")
        frames.append(m[m["split"].isin(splits)].assign(eval_set=e))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def leakage(train: pd.DataFrame, evalset: pd.DataFrame, *,
            max_distance: int = DEFAULT_MAX_DISTANCE) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Duplicate pairs between a training pool and the evaluation images, and a summary table.

    The summary has one row per evaluation set × split: ``n_eval`` images, ``n_eval_leaked``
    (evaluation images with a copy in the pool), ``n_train_dups`` (pool images that duplicate one of
    them), and counts by kind.
    """
    pairs = find_duplicates(train, evalset, max_distance=max_distance)
    rows = []
    for (ds, split), g in evalset.groupby(["dataset", "split"], sort=True):
        p = pairs[(pairs["dataset_b"] == ds) & (pairs["split_b"] == split)]
        rows.append({"eval_set": get(ds).name, "eval_split": split, "n_eval": len(g),
                     "n_eval_leaked": p["image_id_b"].nunique(),
                     "n_train_dups": p[["dataset_a", "image_id_a"]].drop_duplicates().shape[0],
                     **{f"by_{k}": int((p.drop_duplicates(["dataset_a", "image_id_a"])["kind"] == k).sum())
                        for k in ("id", "pixels", "near")}})
    return pairs, pd.DataFrame(rows)


def clean_pool(pool: pd.DataFrame, pairs: pd.DataFrame, policy: str = "drop") -> pd.DataFrame:
    """Remove (``drop``) or keep (``keep``) the pool rows that duplicate evaluation images."""
    if policy not in POLICIES:
        raise ValueError(f"unknown leakage policy {policy!r}; valid: {POLICIES}")
    if policy == "keep" or pairs.empty:
        return pool
    bad = set(zip(pairs["dataset_a"], pairs["image_id_a"]))
    mask = [(d, i) not in bad for d, i in zip(pool["dataset"], pool["image_id"])]
    return pool[np.array(mask, dtype=bool)]

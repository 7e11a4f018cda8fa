"""Merge the manifests of a training combination into train/val sets, cleaned of leakage.

``combine(work, "A–D,I,J", ["isic2017", "isic2018"])`` returns the combination's training rows
(each member's ``train`` split) and validation rows (each member's ``val`` split), after removing
every image that duplicates an evaluation image (``policy="drop"``, the default), together with the
leakage table before/after. Training rows are checked against the evaluation sets' val *and* test
splits (the rejection threshold is tuned on val, so val must be unseen too) — against every image
of an external set scored whole (:func:`melanoma.data.dedup.is_external`); the combination's
own validation rows are checked against the evaluation test splits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from melanoma.data.dedup import DEFAULT_MAX_DISTANCE, clean_pool, eval_frame, find_duplicates, leakage
from melanoma.data.manifest import read_manifest
from melanoma.data.registry import combo_label, get, parse_combo


@dataclass
class Combined:
    datasets: list[str]
    train: pd.DataFrame
    val: pd.DataFrame
    leakage: pd.DataFrame                  # per eval set × split, before cleaning
    pairs: pd.DataFrame                    # every duplicate pair found
    removed: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return combo_label(self.datasets)


def combine(work: str | Path, combo: str | list[str], eval_sets: list[str] | None = None, *,
            policy: str = "drop", max_distance: int = DEFAULT_MAX_DISTANCE) -> Combined:
    names = parse_combo(combo) if isinstance(combo, str) else parse_combo("+".join(combo))
    eval_names = [get(e).short for e in (eval_sets or [])]
    ms = [read_manifest(work, n) for n in names]
    allrows = pd.concat(ms, ignore_index=True)
    train = allrows[(allrows["split"] == "train") & (allrows["label"] >= 0)].reset_index(drop=True)
    val = allrows[(allrows["split"] == "val") & (allrows["label"] >= 0)].reset_index(drop=True)
    if eval_names:
        ev = eval_frame(work, eval_names, train_datasets=names)  # external sets: every image
        pairs, table = leakage(train, ev, max_distance=max_distance)
        test = ev[ev["split"] == "test"]
        vpairs = find_duplicates(val, test, max_distance=max_distance)
        vpairs = vpairs[~((vpairs["dataset_a"] == vpairs["dataset_b"])
                          & (vpairs["image_id_a"] == vpairs["image_id_b"]))]
        train_c = clean_pool(train, pairs, policy)
        val_c = clean_pool(val, vpairs, policy)
        table["n_train"] = len(train)
        table["n_train_after"] = len(train_c)
        table["policy"] = policy
        all_pairs = pd.concat([pairs.assign(pool="train"), vpairs.assign(pool="val")], ignore_index=True)
    else:
        train_c, val_c = train, val
        table = pd.DataFrame()
        all_pairs = pd.DataFrame()
    if train_c.empty:
        raise ValueError(f"combination {combo!r} has no training images left "
                         f"(before cleaning: {len(train)}); check the manifests in {work}")
    if val_c.empty:
        raise ValueError(f"combination {combo!r} has no validation images")
    return Combined(names, train_c.reset_index(drop=True), val_c.reset_index(drop=True), table,
                    all_pairs, {"train": len(train) - len(train_c), "val": len(val) - len(val_c)})


def leakage_report(work: str | Path, combo: str, eval_sets: list[str], *, policy: str = "drop",
                   max_distance: int = DEFAULT_MAX_DISTANCE) -> pd.DataFrame:
    """The leakage table for one combination (what ``melanoma leakage`` prints)."""
    c = combine(work, combo, eval_sets, policy=policy, max_distance=max_distance)
    t = c.leakage.copy()
    t.insert(0, "train", c.label)
    return t

"""A hand-made run directory (predictions + run.json) for the evaluation tests and notebooks 03/04."""

from __future__ import annotations

import numpy as np
import pandas as pd

from melanoma.io import write_json

from .conftest import logit_scores, prediction_rows


def make_run(path, seed=0, synthetic=True):
    """A run directory with four evaluation sets:

    isic2017  val 80 / test 120 (+7 unlabelled test rows), both classes
    isic2018  val 60 / test 90, both classes
    ph2       val one-class (all non-melanoma), test both classes   -> reported skip in rejection
    isic2020  no val rows, test rows unlabelled only                 -> reported skip everywhere
    """
    rng = np.random.default_rng(seed)
    parts = []
    for es, n_val, n_test in (("isic2017", 80, 120), ("isic2018", 60, 90)):
        for split, n in (("val", n_val), ("test", n_test)):
            y = (rng.random(n) < 0.3).astype(int)
            parts.append(prediction_rows(es, split, y, logit_scores(rng, y)))
    parts.append(prediction_rows("isic2017", "test", -np.ones(7, int), rng.normal(0, 2, 7)))
    parts.append(prediction_rows("ph2", "val", np.zeros(20, int), rng.normal(-3, 2, 20)))
    y = (rng.random(40) < 0.4).astype(int)
    parts.append(prediction_rows("ph2", "test", y, logit_scores(rng, y)))
    parts.append(prediction_rows("isic2020", "test", -np.ones(30, int), rng.normal(0, 2, 30)))
    pred = pd.concat(parts, ignore_index=True)
    path.mkdir(parents=True, exist_ok=True)
    pred.to_parquet(path / "predictions.parquet", index=False)
    write_json(path / "run.json", {"run_id": "handmade", "model": "toy", "train": "B", "synthetic": synthetic,
                                   "eval_sets": ["isic2017", "isic2018", "ph2", "isic2020"]})
    (path / "params.yaml").write_text("model: toy\n")
    return path

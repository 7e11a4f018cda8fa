"""A hand-made grid with finished, failed and missing runs (no training: tests/runs.py's
predictions, calibrated and rejected), for the summary and the book's pages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.io import read_json, write_json

from .runs import make_run

GRID = """name: g
data: synthetic
work: {root}/work
results: {root}/results
models: [meshnet, resnet18]
combinations: [B, A-B]
eval_sets: [ISIC2017, ISIC2018, PH2]
submission: ISIC2020
"""
#: Held-out labels of the (synthetic) ISIC 2020 test split: make_run's 30 unlabelled rows.
ISIC2020_IDS = [f"isic2020_test_{i}" for i in range(30)]


def write_grid(root: Path) -> Path:
    """``root/g.yaml`` and its runs under ``root/results/runs``:

    * ``meshnet__B``, ``meshnet__AB``: finished (predictions of make_run seeds 0 and 1, calibrated
      and rejected with B = 20, statuses ok);
    * ``resnet18__B``: failed in training (status with its error and notebook);
    * ``resnet18__AB``: never ran.

    and the synthetic ISIC 2020 replica's held-out labels under ``root/work/synthetic``."""
    from melanoma.evaluate.calibrate import calibrate_run
    from melanoma.evaluate.reject import reject_run

    root.mkdir(parents=True, exist_ok=True)
    g = root / "g.yaml"
    g.write_text(GRID.format(root=root))
    runs = root / "results" / "runs"
    for rid, seed, train in (("meshnet__B", 0, "B"), ("meshnet__AB", 1, "isic2016+isic2017")):
        d = make_run(runs / rid, seed=seed)
        run = read_json(d / "run.json")
        write_json(d / "run.json", {**run, "run_id": rid, "model": "meshnet", "train": train})
        calibrate_run(d, B=20)
        reject_run(d, B=20)
        for s in ("train", "calibrate", "reject"):
            write_json(d / f"status-{s}.json", {"status": "ok", "seconds": 1.5})
    bad = runs / "resnet18__B"
    bad.mkdir(parents=True)
    write_json(bad / "status-train.json", {"status": "failed", "error": "RuntimeError: out of memory",
                                           "notebook": str(bad / "02_train.ipynb"), "seconds": 3.0})
    truth = root / "work" / "synthetic" / "isic2020"
    truth.mkdir(parents=True)
    y = (np.random.default_rng(5).random(len(ISIC2020_IDS)) < 0.3).astype(int)
    pd.DataFrame({"image_name": ISIC2020_IDS, "target": y}).to_csv(
        truth / "ISIC_2020_Test_GroundTruth_SYNTHETIC.csv", index=False)
    return g

"""The embedded default, end to end: synthetic replicas → ingest → leakage summary.

``make demo`` / ``melanoma demo`` call :func:`run_demo`.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

#: The paper's evaluation sets (their val splits tune thresholds, their test splits are scored).
EVAL_SETS = ["isic2017", "isic2018", "derm7pt", "kaggle"]


def _show(title: str, df: pd.DataFrame) -> None:
    print(f"\n== {title}")
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        print(df.to_string(index=False))


def run_demo(work: Path, scale: float = 1.0, seed: int = 0) -> dict:
    from .datasets import SHORT_NAMES
    from .datasets.combine import leakage_report
    from .datasets.ingest import counts_table, ingest_all
    from .datasets.synthetic import write_replicas

    timings = {}
    data = work / "synthetic"
    t = time.perf_counter()
    if not all((data / s / "SYNTHETIC.json").is_file() for s in SHORT_NAMES):
        write_replicas(data, scale=scale, seed=seed)
    timings["synth"] = time.perf_counter() - t
    t = time.perf_counter()
    reports = ingest_all(data, work, seed=seed)
    timings["ingest"] = time.perf_counter() - t
    _show("datasets (SYNTHETIC replicas): images per split (melanoma)", counts_table(reports))
    t = time.perf_counter()
    leak = leakage_report(work, "ISIC2016+ISIC2017+ISIC2018+ISIC2019+ISIC2020"
                          "+_7_point_criteria+PH2+PAD_UFES_20+MEDNODE+KaggleMB+HAM10000", EVAL_SETS)
    timings["leakage"] = time.perf_counter() - t
    _show("leakage: all 11 releases as training pool vs evaluation sets (SYNTHETIC)", leak)
    _show("timings (s)", pd.DataFrame([{k: round(v, 1) for k, v in timings.items()}]))
    return {"reports": reports, "leakage": leak, "timings": timings}

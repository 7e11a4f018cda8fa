"""A finished run directory as the evaluation reads it: ``run.json`` and its predictions.

A run directory (see :mod:`melanoma.train.recipe`) holds ``run.json`` and ``predictions.parquet`` with
one row per scored image: ``run_id, eval_set, split (val | test), image_id, label (1 melanoma,
0 not, -1 unlabelled, e.g. the ISIC 2020 test set), p_melanoma, logit_0, logit_1``. Unlabelled
rows are dropped (and counted, ``n_unlabelled``) before anything is computed
(:func:`labelled_arrays`, :func:`split_counts`).

Read by :func:`melanoma.evaluate.calibrate.calibrate_run` and
:func:`melanoma.evaluate.reject.reject_run`, and by notebook 04 for its entropy histograms.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from melanoma.io import read_json

__all__ = [
    "SPLITS",
    "load_run",
    "load_predictions",
    "labelled_arrays",
    "eval_groups",
    "run_header",
    "split_counts",
]

#: The splits of an evaluation set, each counted and reported on its own.
SPLITS = ("test", "val")

_REQUIRED = ("eval_set", "split", "label", "p_melanoma")
_LOGITS = ("logit_0", "logit_1")


def load_run(run_dir) -> tuple[dict, pd.DataFrame]:
    """``(run.json as a dict, predictions.parquet as a DataFrame)`` of a finished run.

    Raises :class:`FileNotFoundError` naming the missing file, and :class:`ValueError` when the
    predictions lack a required column or hold labels other than 1/0/-1 or splits other than
    val/test.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    pred_path, run_path = run_dir / "predictions.parquet", run_dir / "run.json"
    if not pred_path.is_file():
        raise FileNotFoundError(f"{pred_path} not found: is {run_dir} a run made by `melanoma train`?")
    if not run_path.is_file():
        raise FileNotFoundError(f"{run_path} not found: the run has not finished (run.json is written last)")
    run = read_json(run_path)
    pred = pd.read_parquet(pred_path)
    missing = [c for c in _REQUIRED if c not in pred.columns]
    if missing:
        raise ValueError(f"{pred_path} lacks column(s) {missing}; has {list(pred.columns)}")
    bad = sorted(set(pred["label"].unique().tolist()) - {0, 1, -1})
    if bad:
        raise ValueError(f"{pred_path}: labels must be 1, 0 or -1 (unlabelled), found {bad}")
    bad = sorted(set(pred["split"].astype(str).unique().tolist()) - {"val", "test"})
    if bad:
        raise ValueError(f"{pred_path}: splits must be 'val' or 'test', found {bad}")
    return run, pred


def load_predictions(run_dir, eval_set: str | None = None, split: str | None = None,
                     labelled: bool = True) -> pd.DataFrame:
    """The run's predictions, optionally one evaluation set / split, labelled rows only by default."""
    _, pred = load_run(run_dir)
    if eval_set is not None:
        pred = pred[pred["eval_set"] == eval_set]
    if split is not None:
        pred = pred[pred["split"] == split]
    if labelled:
        pred = pred[pred["label"] >= 0]
    return pred.reset_index(drop=True)


def labelled_arrays(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(y, p, logits or None)`` of the labelled rows of ``rows``."""
    rows = rows[rows["label"] >= 0]
    y = rows["label"].to_numpy(np.int64)
    p = rows["p_melanoma"].to_numpy(np.float64)
    logits = rows[list(_LOGITS)].to_numpy(np.float64) if all(c in rows for c in _LOGITS) else None
    return y, p, logits


def eval_groups(run: dict, pred: pd.DataFrame) -> Iterable[tuple[str, pd.DataFrame]]:
    """``(evaluation set, its rows)`` of ``pred``, in the run's order (``run.json``'s ``eval_sets``),
    then any other set present in the predictions."""
    present = list(pd.unique(pred["eval_set"]))
    order = [e for e in (run.get("eval_sets") or []) if e in present]
    order += [e for e in present if e not in order]
    for es in order:
        yield str(es), pred[pred["eval_set"] == es]


def run_header(run: dict, run_dir: Path) -> dict:
    """The fields metrics.json and rejection.json open with: ``run_id, model, train, synthetic``."""
    return {
        "run_id": run.get("run_id", run_dir.name),
        "model": run.get("model"),
        "train": run.get("train"),
        "synthetic": bool(run.get("synthetic", False)),
    }


def split_counts(g: pd.DataFrame) -> tuple[dict, dict]:
    """``({split: labelled rows}, {split: unlabelled rows})`` of one evaluation set's rows, for
    both :data:`SPLITS`."""
    n = {s: int(((g["split"] == s) & (g["label"] >= 0)).sum()) for s in SPLITS}
    n_unl = {s: int(((g["split"] == s) & (g["label"] < 0)).sum()) for s in SPLITS}
    return n, n_unl


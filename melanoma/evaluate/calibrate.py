"""Calibrate one run: classification and calibration metrics with bootstrap CIs → ``metrics.json``.

The package function behind notebook 03 and ``melanoma calibrate``. The run directory is read by
:mod:`melanoma.evaluate.rundir`; :func:`calibrate_run` writes ``RUN_DIR/metrics.json``::

    {"run_id", "model", "train", "synthetic", "n_bins", "B", "alpha", "seed", "decision_threshold",
     "eval_sets": {eval_set: {
        "n": {"val", "test"}, "n_unlabelled": {"val", "test"},
        "test":   classification_report(ci=True) + "reliability" + "warnings",
        "val":    the same on the validation split,
        "before": the test block (identical to "test"),
        "after":  the same metrics on the test split after temperature scaling,
        "temperature": {"T", "fitted_on": "val", "n_fit", "test": {ece/brier/nll before/after},
                        "val": {...}}}}}

*Choice documented here*: the issue's contract wants ``before`` and ``after`` blocks in both JSON
files. For calibration the natural "after" is **temperature scaling** (Guo et al. 2017): ``T`` is
fitted by NLL on the evaluation set's *validation* split and applied unchanged to its test split.
For two classes temperature scaling changes no prediction at the 0.5 threshold and no ranking, so
precision/sensitivity/specificity/F1/accuracy/AUC are equal before and after, and only ECE, MCE,
Brier and NLL move; the ``temperature`` block repeats those before/after side by side. Where ``T``
cannot be fitted (no labelled validation rows, one class only, no logits) ``after`` and
``temperature`` are ``{"skipped": reason}``.

The file is written atomically (:func:`melanoma.io.write_json`); ``NaN`` marks undefined values.
The settings check, the warning capture and the before/after calibration numbers are shared with
:mod:`melanoma.evaluate.reject` (:func:`check_report_settings`, :func:`with_metric_warnings`,
:func:`why_no_fit`, :func:`calibration_pair`).
"""

from __future__ import annotations

import math
import warnings
from functools import partial
from pathlib import Path

import numpy as np

from melanoma.evaluate.metrics import (
    MetricUndefinedWarning,
    brier,
    classification_report,
    ece,
    nll,
    reliability_curve,
)
from melanoma.evaluate.rundir import SPLITS, eval_groups, labelled_arrays, load_run, run_header, split_counts
from melanoma.evaluate.uncertainty import apply_temperature, fit_temperature
from melanoma.io import write_json

__all__ = [
    "calibrate_run",
    "check_report_settings",
    "why_no_fit",
    "with_metric_warnings",
    "calibration_pair",
]


def check_report_settings(B, alpha, n_bins, seed) -> None:
    """The settings every report of :func:`calibrate_run` and
    :func:`melanoma.evaluate.reject.reject_run` shares, checked: a :class:`ValueError` naming the
    first bad one."""
    if isinstance(B, bool) or not isinstance(B, (int, np.integer)) or B < 1:
        raise ValueError(f"B (bootstrap resamples) must be a positive integer, got {B!r}")
    if not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")


def why_no_fit(y: np.ndarray, split: str = "validation") -> str | None:
    """Reason the split's labels ``y`` cannot be used to fit or choose anything (a temperature, a
    threshold): no rows or one class only; ``None`` when they can."""
    if y.size == 0:
        return f"no labelled {split} rows"
    if np.unique(y).size < 2:
        what = "melanoma" if y[0] == 1 else "non-melanoma"
        return f"the {split} split has one class only ({y.size} {what}); need both classes"
    return None


def with_metric_warnings(fn, *args, **kw):
    """Call ``fn``; return ``(result, [messages of MetricUndefinedWarning raised])``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MetricUndefinedWarning)
        out = fn(*args, **kw)
    msgs = []
    for w in caught:
        if issubclass(w.category, MetricUndefinedWarning):
            if str(w.message) not in msgs:
                msgs.append(str(w.message))
        else:  # pragma: no cover - re-emit anything else
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return out, msgs


def _report_block(y, p, n_bins, B, alpha, seed) -> dict:
    rep, msgs = with_metric_warnings(classification_report, y, p, n_bins=n_bins, ci=True, B=B, alpha=alpha, seed=seed)
    rep["reliability"] = reliability_curve(y, p, n_bins=n_bins, strategy="uniform", confidence="top-label")
    rep["warnings"] = msgs
    return rep


def calibration_pair(y, p0, p1, n_bins) -> dict:
    """ECE (``n_bins`` bins), Brier and NLL of labels ``y`` under probabilities ``p0`` and ``p1``:
    ``{"ece_before", "ece_after", "brier_before", ...}`` (NaN when ``y`` is empty)."""
    out = {}
    for name, fn in (("ece", partial(ece, n_bins=n_bins)), ("brier", brier), ("nll", nll)):
        out[f"{name}_before"] = fn(y, p0) if y.size else math.nan
        out[f"{name}_after"] = fn(y, p1) if y.size else math.nan
    return out


# --------------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------------


def calibrate_run(run_dir, n_bins: int = 10, B: int = 1000, alpha: float = 0.05, seed: int = 0) -> dict:
    """Classification and calibration metrics with bootstrap CIs for every evaluation set of a run.

    Per evaluation set, on its labelled rows (label -1 rows are skipped and counted):

    * ``test`` and ``val``: :func:`melanoma.evaluate.metrics.classification_report` with percentile
      bootstrap CIs (``B`` resamples, level ``1 - alpha``, seeded) plus the reliability-diagram
      data (``n_bins`` equal-width bins, top-label confidence), and ``warnings`` (e.g. why AUC is
      NaN on a one-class split);
    * ``before``: the test block; ``after``: the test block after temperature scaling with ``T``
      fitted on the validation split (see the module docstring for why), and ``temperature``
      with ``T`` and ECE/Brier/NLL before and after on both splits.

    A split without labelled rows is ``{"skipped": reason}``; when the test split is skipped the
    whole entry also carries ``skipped``. Writes ``RUN_DIR/metrics.json`` atomically.

    Parameters
    ----------
    run_dir : str or Path
        A finished run directory (``run.json`` + ``predictions.parquet``).
    n_bins : int, default=10
        Equal-width bins of ECE / MCE / the reliability diagram.
    B : int, default=1000
        Bootstrap resamples.
    alpha : float, default=0.05
        One minus the confidence level of the intervals.
    seed : int, default=0
        Bootstrap seed (the same resamples for every metric of a block).

    Returns
    -------
    dict
        What was written to ``metrics.json`` (arrays as numpy arrays).
    """
    check_report_settings(B, alpha, n_bins, seed)
    run_dir = Path(run_dir)
    run, pred = load_run(run_dir)
    out = {**run_header(run, run_dir), "n_bins": int(n_bins), "B": int(B), "alpha": float(alpha),
           "seed": int(seed), "decision_threshold": 0.5, "confidence": "top-label", "strategy": "uniform",
           "eval_sets": {}}
    for es, g in eval_groups(run, pred):
        n, n_unl = split_counts(g)
        entry: dict = {"n": n, "n_unlabelled": n_unl}
        arrays = {s: labelled_arrays(g[g["split"] == s]) for s in SPLITS}
        for s in SPLITS:
            y, p, _ = arrays[s]
            if y.size == 0:
                entry[s] = {"skipped": f"no labelled {'validation' if s == 'val' else s} rows"
                                       + (f" ({n_unl[s]} unlabelled)" if n_unl[s] else "")}
            else:
                entry[s] = _report_block(y, p, n_bins, B, alpha, seed)
        yt, pt, Lt = arrays["test"]
        yv, pv, Lv = arrays["val"]
        if "skipped" in entry["test"]:
            entry["skipped"] = entry["test"]["skipped"]
            entry["before"] = entry["after"] = entry["temperature"] = {"skipped": entry["skipped"]}
        else:
            entry["before"] = entry["test"]
            why = why_no_fit(yv)
            if why is None and (Lv is None or Lt is None):
                why = "predictions.parquet has no logit_0/logit_1 columns"
            if why is not None:
                why = f"temperature scaling not fitted: {why}"
                entry["after"] = entry["temperature"] = {"skipped": why}
            else:
                T = fit_temperature(yv, Lv)
                pt_T, pv_T = apply_temperature(Lt, T), apply_temperature(Lv, T)
                entry["after"] = _report_block(yt, pt_T, n_bins, B, alpha, seed)
                entry["temperature"] = {"T": T, "fitted_on": "val", "n_fit": int(yv.size),
                                        "test": calibration_pair(yt, pt, pt_T, n_bins),
                                        "val": calibration_pair(yv, pv, pv_T, n_bins)}
        out["eval_sets"][es] = entry
    write_json(run_dir / "metrics.json", out)
    return out

"""Calibrate and reject one run: the package functions behind notebooks 03/04 and the CLI.

A run directory (see :mod:`melanoma.train.recipe`) holds ``run.json`` and ``predictions.parquet`` with
one row per scored image: ``run_id, eval_set, split (val | test), image_id, label (1 melanoma,
0 not, -1 unlabelled, e.g. the ISIC 2020 test set), p_melanoma, logit_0, logit_1``. Unlabelled
rows are dropped (and counted, ``n_unlabelled``) before anything is computed.

:func:`calibrate_run` → ``RUN_DIR/metrics.json``::

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

:func:`reject_run` → ``RUN_DIR/rejection.json``::

    {"run_id", "model", "train", "synthetic", "mode", "base", "grid", "min_coverage",
     "temperature", "primary" (raw | temperature), "low_test_coverage", "n_bins", "B", "alpha",
     "seed", "decision_threshold", "coverages",
     "eval_sets": {eval_set: {
        "threshold" (entropy, bits; the fraction in coverage mode), "fraction" (relative mode: r),
        "threshold_unit", "coverage" (test), "val_coverage", "n", "n_retained", "n_rejected",
        "n_unlabelled", "before", "after" (classification_report with CIs, all test rows /
        retained test rows), "fp", "fn" (before, among all), "fp_before", "fn_before", "fp_after",
        "fn_after", "fp_prevented", "fn_prevented", "tp_rejected", "tn_rejected",
        "misdiagnoses_prevented", "fp_reduction_pct", "fn_reduction_pct",
        "referral": {n_melanoma, melanoma_caught, melanoma_missed, melanoma_referred, n_benign,
                     benign_cleared, benign_false_alarm, benign_referred, sensitivity_retained,
                     specificity_retained, ...}   # melanoma.evaluate.uncertainty.referral_counts
        "flags": [{"code": floor-relaxed | low-coverage | one-class-retained, "text"}],
        "val_source", "test_source",      # e.g. "the training combination's validation split"
        "val_search": {"threshold", "fraction", "objective", "coverage", "n_retained", "n", "mode",
                       "min_coverage", "min_coverage_met", "note", "table": {...per candidate}},
        "min_coverage",
        "curves": {"accuracy_rejection": {..., "split": "val"},   # validation, 0..1 bit
                   "risk_coverage": {..., "split": "test"}},      # test
        "aurc": bootstrap CI dict, "eaurc": bootstrap CI dict,
        "selective_risk": {"coverage", "achieved_coverage", "n_retained", "risk"},
        "variants": {"raw": {...}, "temperature": {...}},   # the same rule on raw and on
            # temperature-scaled probabilities, side by side: threshold, fraction, val_coverage,
            # coverage, before/after metrics, referral, flags
        "temperature": {"T", "fitted_on": "val", "n_fit", "val": {...}, "test": {...}}
     } | {"skipped": reason, "flags": [...], "n": {...}, "n_unlabelled": {...}}}}

The rejection threshold is searched on the evaluation set's **validation** split only (test labels
are never read before the threshold is fixed) and applied unchanged to the test split.

Both files are written atomically (:func:`melanoma.io.write_json`); ``NaN`` marks undefined values.
"""

from __future__ import annotations

import math
import warnings
from functools import partial
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd

from melanoma.evaluate.conformal import compare_methods, conformal_decisions, fit_conformal
from melanoma.io import read_json, write_json
from melanoma.evaluate.metrics import (
    MetricUndefinedWarning,
    bootstrap_ci,
    brier,
    classification_report,
    ece,
    nll,
    reliability_curve,
)
from melanoma.evaluate.uncertainty import (
    DEFAULT_GRID,
    RELATIVE_GRID,
    accuracy_rejection_curve,
    apply_temperature,
    aurc,
    eaurc,
    fit_temperature,
    entropy,
    referral_counts,
    report_for_mask,
    retained_mask,
    risk_coverage_curve,
    search_threshold,
    selective_risk_at,
)

__all__ = [
    "MODES",
    "METHODS",
    "DEFAULT_MODE",
    "LOW_TEST_COVERAGE",
    "default_thresholds",
    "rejection_flags",
    "flag_text",
    "methods_table",
    "DEFAULT_MIN_COVERAGE",
    "DEFAULT_COVERAGES",
    "parse_thresholds",
    "load_run",
    "load_predictions",
    "labelled_arrays",
    "calibrate_run",
    "reject_run",
    "calibrate_table",
    "reject_table",
    "metrics_table",
]

MODES = ("relative", "absolute", "coverage")

#: Rejection methods compared side by side (:mod:`melanoma.evaluate.conformal`); ``method`` picks the primary.
METHODS = ("entropy", "conformal", "sgr")

#: The default rejection rule: the seed code's relative threshold (see :func:`reject_run`).
DEFAULT_MODE = "relative"

#: A rejection that keeps less than this fraction of a test split is flagged ``low-coverage``.
LOW_TEST_COVERAGE = 0.7

#: Default floor on the validation coverage of a candidate threshold (see :func:`reject_run`).
DEFAULT_MIN_COVERAGE = 0.8

#: Coverages at which the selective risk on test is reported.
DEFAULT_COVERAGES = (0.8, 0.9, 1.0)

_REQUIRED = ("eval_set", "split", "label", "p_melanoma")
_LOGITS = ("logit_0", "logit_1")
_SPLITS = ("test", "val")
_MAX_THRESHOLDS = 100_000


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------


def parse_thresholds(text: str) -> np.ndarray:
    """Parse ``START:STOP:STEP`` into candidate thresholds, STOP included.

    ``"0:0.2:0.01"`` gives 0, 0.01, …, 0.20 (21 values, the paper's grid). Values are rounded to
    10 decimals so that ``0.1 + 0.2`` style errors never add or drop the last candidate.

    Parameters
    ----------
    text : str
        ``START:STOP:STEP`` with ``0 <= START <= STOP`` and ``STEP > 0``.

    Returns
    -------
    ndarray of float

    Raises
    ------
    ValueError
        With a message naming what is wrong (form, a non-number, a negative start, STOP < START,
        STEP <= 0, too many values).

    Examples
    --------
    >>> parse_thresholds("0:0.2:0.05").tolist()
    [0.0, 0.05, 0.1, 0.15, 0.2]
    >>> parse_thresholds("0.1:0.1:1").tolist()
    [0.1]
    """
    if not isinstance(text, str):
        raise ValueError(f"thresholds must be a string START:STOP:STEP, got {text!r}")
    parts = text.strip().split(":")
    if len(parts) != 3:
        raise ValueError(f"thresholds must look like START:STOP:STEP (e.g. 0:0.2:0.01), got {text!r}")
    vals = []
    for name, s in zip(("START", "STOP", "STEP"), parts):
        try:
            v = float(s)
        except ValueError:
            raise ValueError(f"thresholds {text!r}: {name} {s.strip()!r} is not a number") from None
        if not math.isfinite(v):
            raise ValueError(f"thresholds {text!r}: {name} must be finite, got {s.strip()!r}")
        vals.append(v)
    start, stop, step = vals
    if start < 0:
        raise ValueError(f"thresholds {text!r}: START must be >= 0, got {start:g}")
    if stop < start:
        raise ValueError(f"thresholds {text!r}: STOP ({stop:g}) is smaller than START ({start:g})")
    if step <= 0:
        raise ValueError(f"thresholds {text!r}: STEP must be > 0, got {step:g}")
    n = int(math.floor((stop - start) / step + 1e-9)) + 1
    if n > _MAX_THRESHOLDS:
        raise ValueError(f"thresholds {text!r}: {n} values is too many (at most {_MAX_THRESHOLDS}); use a larger STEP")
    return np.round(start + step * np.arange(n), 10)


def default_thresholds(mode: str) -> np.ndarray:
    """The candidates of a rule: fractions 0.05 … 0.20 (relative, coverage) or 0 … 0.2 bits (absolute)."""
    return (DEFAULT_GRID if mode == "absolute" else RELATIVE_GRID).copy()


def _resolve_thresholds(thresholds, mode: str, base: float = 2) -> np.ndarray:
    if thresholds is None or (isinstance(thresholds, str) and thresholds.strip().lower() in ("", "auto")):
        g = default_thresholds(mode)
    elif isinstance(thresholds, str):
        g = parse_thresholds(thresholds)
    else:
        g = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    if g.ndim != 1 or g.size == 0 or not np.all(np.isfinite(g)) or g.min() < 0:
        raise ValueError(f"thresholds must be a non-empty list of finite numbers >= 0, got {thresholds!r}")
    if mode == "coverage" and g.max() > 1:
        raise ValueError(f"with mode='coverage' the thresholds are fractions to reject, in [0, 1]; got max {g.max():g}")
    if mode == "relative" and g.max() >= 1:
        raise ValueError(f"with mode='relative' the thresholds are fractions of the validation split to reject, "
                         f"in [0, 1); got max {g.max():g}")
    h_max = math.log(2, base)  # the entropy of two classes never exceeds log(2)
    if mode == "absolute" and g.max() > h_max + 1e-9:
        raise ValueError(f"entropy thresholds above {h_max:g} (the two-class maximum in base {base:g}) "
                         f"retain everything; got max {g.max():g} from thresholds {thresholds!r}")
    return g


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


def _eval_groups(run: dict, pred: pd.DataFrame) -> Iterable[tuple[str, pd.DataFrame]]:
    present = list(pd.unique(pred["eval_set"]))
    order = [e for e in (run.get("eval_sets") or []) if e in present]
    order += [e for e in present if e not in order]
    for es in order:
        yield str(es), pred[pred["eval_set"] == es]


def _header(run: dict, run_dir: Path) -> dict:
    return {
        "run_id": run.get("run_id", run_dir.name),
        "model": run.get("model"),
        "train": run.get("train"),
        "synthetic": bool(run.get("synthetic", False)),
    }


def _counts(g: pd.DataFrame) -> tuple[dict, dict]:
    n = {s: int(((g["split"] == s) & (g["label"] >= 0)).sum()) for s in _SPLITS}
    n_unl = {s: int(((g["split"] == s) & (g["label"] < 0)).sum()) for s in _SPLITS}
    return n, n_unl


def _check_common(B, alpha, n_bins, seed) -> None:
    if isinstance(B, bool) or not isinstance(B, (int, np.integer)) or B < 1:
        raise ValueError(f"B (bootstrap resamples) must be a positive integer, got {B!r}")
    if not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")


def _why_no_fit(y: np.ndarray, split: str = "validation") -> str | None:
    """Reason the split cannot be used to fit/choose anything, or None."""
    if y.size == 0:
        return f"no labelled {split} rows"
    if np.unique(y).size < 2:
        what = "melanoma" if y[0] == 1 else "non-melanoma"
        return f"the {split} split has one class only ({y.size} {what}); need both classes"
    return None


def _with_warnings(fn, *args, **kw):
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
    rep, msgs = _with_warnings(classification_report, y, p, n_bins=n_bins, ci=True, B=B, alpha=alpha, seed=seed)
    rep["reliability"] = reliability_curve(y, p, n_bins=n_bins, strategy="uniform", confidence="top-label")
    rep["warnings"] = msgs
    return rep


def _calib_pair(y, p0, p1, n_bins) -> dict:
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
    _check_common(B, alpha, n_bins, seed)
    run_dir = Path(run_dir)
    run, pred = load_run(run_dir)
    out = {**_header(run, run_dir), "n_bins": int(n_bins), "B": int(B), "alpha": float(alpha),
           "seed": int(seed), "decision_threshold": 0.5, "confidence": "top-label", "strategy": "uniform",
           "eval_sets": {}}
    for es, g in _eval_groups(run, pred):
        n, n_unl = _counts(g)
        entry: dict = {"n": n, "n_unlabelled": n_unl}
        arrays = {s: labelled_arrays(g[g["split"] == s]) for s in _SPLITS}
        for s in _SPLITS:
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
            why = _why_no_fit(yv)
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
                                        "test": _calib_pair(yt, pt, pt_T, n_bins),
                                        "val": _calib_pair(yv, pv, pv_T, n_bins)}
        out["eval_sets"][es] = entry
    write_json(run_dir / "metrics.json", out)
    return out


# --------------------------------------------------------------------------------------------
# rejection
# --------------------------------------------------------------------------------------------


def _search(yv, pv, grid, mode, n_bins, base, min_coverage) -> dict:
    """search_threshold with the coverage floor; if no candidate meets the floor, relax it to the
    largest coverage any candidate reaches (flagged ``min_coverage_met: False``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricUndefinedWarning)
        s = search_threshold(yv, pv, grid, mode=mode, n_bins=n_bins, base=base, min_coverage=min_coverage)
        s["min_coverage"] = float(min_coverage)
        s["min_coverage_met"] = bool(np.isfinite(s["threshold"]))
        s["note"] = ""
        if s["min_coverage_met"]:
            return s
        cov = np.asarray(s["table"]["coverage"], dtype=float)
        cov = cov[np.asarray(s["table"]["n_retained"]) > 0]
        if cov.size == 0:
            s["note"] = "no candidate threshold retains any validation sample"
            return s
        best = float(cov.max())
        s2 = search_threshold(yv, pv, grid, mode=mode, n_bins=n_bins, base=base, min_coverage=best)
    s2["min_coverage"] = float(min_coverage)
    s2["min_coverage_met"] = False
    s2["note"] = (f"no candidate reaches validation coverage {min_coverage:g}; the floor was relaxed to the "
                  f"largest coverage in the grid, {best:.3f} (widen the grid or lower min_coverage)")
    return s2


def rejection_flags(val_search: dict, coverage: float, referral: dict) -> list[dict]:
    """Why a rejection result must not be read at face value: a list of ``{"code", "text"}``.

    * ``floor-relaxed``: no candidate reached the validation coverage floor, so the floor was
      relaxed (the threshold is the least-bad one in the grid, not one the rule accepts);
    * ``low-coverage``: the threshold kept less than :data:`LOW_TEST_COVERAGE` of the test split
      (metrics "after" describe a small, easy subset);
    * ``one-class-retained``: the retained test images lack melanomas or benign lesions, so
      sensitivity or specificity among the retained is undefined.

    An empty list means the result can be ranked and compared.
    """
    flags = []
    if not val_search.get("min_coverage_met", True):
        flags.append({"code": "floor-relaxed",
                      "text": f"no candidate kept {val_search.get('min_coverage', math.nan):g} of validation; "
                              f"floor relaxed to {val_search.get('coverage', math.nan):.2f}"})
    if not (coverage >= LOW_TEST_COVERAGE):
        flags.append({"code": "low-coverage",
                      "text": f"test coverage {coverage:.2f} below {LOW_TEST_COVERAGE:g}"})
    n_mel_kept = referral["melanoma_caught"] + referral["melanoma_missed"]
    n_ben_kept = referral["benign_cleared"] + referral["benign_false_alarm"]
    if referral["n_melanoma"] and referral["n_benign"] and (n_mel_kept == 0 or n_ben_kept == 0):
        gone = "melanoma" if n_mel_kept == 0 else "benign lesion"
        flags.append({"code": "one-class-retained", "text": f"no {gone} retained on test"})
    return flags


def _variant(yv, pv, yt, pt, g_arr, mode, n_bins, base, min_coverage) -> dict:
    """One rejection rule applied to one pair of (validation, test) probabilities."""
    search = _search(yv, pv, g_arr, mode, n_bins, base, min_coverage)
    if not np.isfinite(search["threshold"]):
        return {"skipped": search["note"], "val_search": search,
                "flags": [{"code": "skipped", "text": search["note"]}]}
    thr = float(search["threshold"])
    # a relative threshold is an entropy value: applied to test as an absolute threshold
    apply_mode = "absolute" if mode == "relative" else mode
    keep = retained_mask(pt, thr, mode=apply_mode, base=base)
    ref = referral_counts(yt, pt, keep)
    return {"threshold": thr, "fraction": search.get("fraction", math.nan), "apply_mode": apply_mode,
            "val_coverage": search["coverage"], "coverage": ref["coverage"], "referral": ref,
            "flags": rejection_flags(search, ref["coverage"], ref), "val_search": search}


def _compact(v: dict, yt, pt, base: float) -> dict:
    """The side-by-side summary of a variant (rejection.json ``variants``)."""
    if "skipped" in v:
        return {"skipped": v["skipped"], "flags": v["flags"]}
    keep = retained_mask(pt, v["threshold"], mode=v["apply_mode"], base=base)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricUndefinedWarning)
        before = classification_report(yt, pt)
        after = classification_report(yt[keep], pt[keep])
    keys = ("accuracy", "sensitivity", "specificity", "auc", "ece", "brier")
    return {"threshold": v["threshold"], "fraction": v["fraction"], "val_coverage": v["val_coverage"],
            "coverage": v["coverage"], "n_retained": int(keep.sum()), "n_test": int(yt.size),
            "before": {k: before[k] for k in keys}, "after": {k: after[k] for k in keys},
            "referral": v["referral"], "flags": v["flags"]}


def reject_run(
    run_dir,
    mode: str = DEFAULT_MODE,
    thresholds=None,
    min_coverage: float = DEFAULT_MIN_COVERAGE,
    temperature: bool = False,
    base: float = 2,
    B: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    n_bins: int = 10,
    coverages=DEFAULT_COVERAGES,
    method: str = "entropy",
    conformal_alpha: float = 0.1,
    risk_target: float = 0.2,
    risk_delta: float = 0.05,
    grid=None,
) -> dict:
    """Entropy rejection for every evaluation set of a run: threshold on validation, report on test.

    Per evaluation set (labelled rows only; label -1 rows are skipped and counted):

    1. fit a temperature ``T`` on the validation logits (when there are logits and both classes);
    2. choose the threshold on the **validation split only** with
       :func:`melanoma.evaluate.uncertainty.search_threshold` — minimise ½(ECE + Brier) of the retained
       validation samples over the candidate ``thresholds``, among candidates keeping at least ``min_coverage`` of
       them — so the test labels cannot influence it; this is done twice, on the raw
       probabilities and on the temperature-scaled ones (``variants``), and ``temperature``
       says which of the two is the primary result;
    3. apply it unchanged to the test split: :func:`melanoma.evaluate.uncertainty.rejection_report` (metrics
       with bootstrap CIs before/after, coverage, FP/FN before, after and prevented, the
       melanoma referral accounting), AURC and E-AURC with bootstrap CIs, selective risk at
       ``coverages``, the risk–coverage curve; and the accuracy–rejection curve (Fig. 3) on
       validation;
    4. flag what must not be read at face value (:func:`rejection_flags`): a relaxed floor,
       test coverage below :data:`LOW_TEST_COVERAGE`, a retained set with one class;
    5. beside the entropy rule, the two rules that promise something (:mod:`melanoma.evaluate.conformal`),
       fitted on the same validation arrays: class-conditional conformal sets at
       ``conformal_alpha`` (a prediction is confident when its set is a single class) and
       selective guaranteed risk (error among the retained ≤ ``risk_target`` with probability
       1 - ``risk_delta``); each with its promise, whether test kept it, coverage, accuracy,
       melanoma miss rate and referrals with bootstrap CIs, and miss rate vs coverage curves
       (``methods``). ``method`` picks which of the three fills the entry's main fields
       (``coverage``, ``after``, ``referral``, ``flags``).

    The default rule, ``mode="relative"``, is the seed code's: each candidate r in 0.05, 0.06, …,
    0.20 rejects the fraction r of the **validation** split with the highest entropy; its
    threshold is the entropy at that quantile (:func:`melanoma.evaluate.uncertainty.relative_threshold`);
    r is chosen by ½(ECE + Brier) of the retained validation samples; and the chosen **entropy
    value** is applied to test, where the achieved coverage is measured and reported. The
    paper's text reads the thresholds 0–0.2 as entropies in bits (``mode="absolute"``); on real
    data a model is far less confident than that presumes — measured on ISIC 2017 with an
    EfficientNet-Lite0 probe, no candidate in 0–0.2 bits kept 80 % of validation and test
    coverage fell to 1–23 % — so absolute mode is an option, with the ``min_coverage`` floor
    (relaxed and flagged when unreachable). ``mode="coverage"`` rejects a fraction of whatever
    split is scored (test included: transductive, no threshold carried over).

    Where the evaluation set has no validation split of its own (an external set scored whole,
    see :func:`melanoma.data.dedup.eval_frame`), its validation rows are the training
    combination's validation split; ``val_source`` / ``test_source`` state what was used.

    Evaluation sets whose validation split is missing or has one class, or whose test split has
    no labelled rows, are reported as ``{"skipped": reason, ...}`` (never an exception); so is
    one where no candidate retains any validation sample.

    Parameters
    ----------
    run_dir : str or Path
        A finished run directory.
    mode : {"relative", "absolute", "coverage"}, default="relative"
        See above.
    thresholds : None, str or sequence of float
        Candidates; ``None`` = the mode's default (relative/coverage: fractions 0.05 … 0.20;
        absolute: 0, 0.01, …, 0.20 bits); a string ``START:STOP:STEP`` (see :func:`parse_thresholds`).
    min_coverage : float, default=0.8
        Smallest validation coverage a candidate must keep (relative mode with the default grid
        always keeps ≥ 0.8).
    temperature : bool, default=False
        Make the temperature-scaled variant the primary result.
    base : float, default=2
        Entropy base (2: bits).
    B : int, default=1000
        Bootstrap resamples for every CI.
    alpha : float, default=0.05
        One minus the confidence level.
    seed : int, default=0
        Bootstrap seed.
    n_bins : int, default=10
        ECE bins (search objective and reports).
    coverages : sequence of float, default=(0.8, 0.9, 1.0)
        Coverages at which the selective risk on test is reported.
    method : {"entropy", "conformal", "sgr"}, default="entropy"
        The rule whose retained set is the primary result.
    conformal_alpha : float, default=0.1
        Conformal miscoverage per class.
    risk_target, risk_delta : float, default 0.2 and 0.05
        SGR's bound on the selective error and its failure probability.
    grid : None, str or sequence of float
        The old name of ``thresholds`` (notebook ``04_reject``'s parameter and a grid file's
        ``reject: {grid: ...}`` still use it); give one of the two.

    Returns
    -------
    dict
        What was written to ``RUN_DIR/rejection.json`` (layout in the module docstring).
    """
    if grid is not None:  # the old name (notebook 04's parameter, a grid file's `reject: {grid: ...}`)
        if thresholds is not None:
            raise ValueError("give the candidates once: thresholds (grid is its old name)")
        thresholds = grid
    st = _RejectSettings(mode=mode, min_coverage=min_coverage, temperature=temperature, base=base, B=B,
                         alpha=alpha, seed=seed, n_bins=n_bins, coverages=coverages, method=method,
                         conformal_alpha=conformal_alpha, risk_target=risk_target, risk_delta=risk_delta,
                         candidates=None)
    st.check(thresholds)
    run_dir = Path(run_dir)
    run, pred = load_run(run_dir)
    out = {**_header(run, run_dir), "mode": mode, "base": float(base), "grid": st.candidates,
           "min_coverage": float(min_coverage), "temperature": bool(temperature), "primary": st.primary,
           "low_test_coverage": LOW_TEST_COVERAGE, "n_bins": int(n_bins), "method": method,
           "conformal_alpha": float(conformal_alpha), "risk_target": float(risk_target),
           "risk_delta": float(risk_delta),
           "B": int(B), "alpha": float(alpha), "seed": int(seed), "decision_threshold": 0.5,
           "coverages": st.coverages, "eval_sets": {}}
    sources = run.get("eval_sources") or {}
    for es, g in _eval_groups(run, pred):
        src = sources.get(es) or {"val": "own validation split", "test": "official test split"}
        out["eval_sets"][es] = _reject_set(g, src, st)
    write_json(run_dir / "rejection.json", out)
    return out


@dataclass
class _RejectSettings:
    """:func:`reject_run`'s settings, checked once (:meth:`check`)."""
    mode: str
    min_coverage: float
    temperature: bool
    base: float
    B: int
    alpha: float
    seed: int
    n_bins: int
    coverages: Any
    method: str
    conformal_alpha: float
    risk_target: float
    risk_delta: float
    candidates: Any  # the resolved candidate thresholds (check)

    @property
    def primary(self) -> str:
        return "temperature" if self.temperature else "raw"

    def check(self, thresholds) -> None:
        _check_common(self.B, self.alpha, self.n_bins, self.seed)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        for name in ("conformal_alpha", "risk_target", "risk_delta"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
                raise ValueError(f"{name} must be in (0, 1), got {v!r}")
        self.candidates = _resolve_thresholds(thresholds, self.mode, self.base)
        mc = self.min_coverage
        if isinstance(mc, bool) or not isinstance(mc, (int, float)) or not 0 <= mc <= 1:
            raise ValueError(f"min_coverage must be in [0, 1], got {mc!r}")
        self.coverages = [float(c) for c in np.atleast_1d(self.coverages)]


def _reject_set(g: pd.DataFrame, src: dict, st: _RejectSettings) -> dict:
    """:func:`reject_run` for one evaluation set's rows ``g``: its entry of rejection.json."""
    n, n_unl = _counts(g)
    # validation first: nothing below reads a test label until the thresholds are fixed
    yv, pv, Lv = labelled_arrays(g[g["split"] == "val"])
    why = _why_no_fit(yv)
    if why is None and n["test"] == 0:
        why = "no labelled test rows" + (f" ({n_unl['test']} unlabelled)" if n_unl["test"] else "")
    if why is None and st.temperature and (Lv is None):
        why = "temperature=True but predictions.parquet has no logit_0/logit_1 columns"
    if why is not None:
        return {"skipped": why, "n": n, "n_unlabelled": n_unl, "val_source": src["val"],
                "test_source": src["test"], "flags": [{"code": "skipped", "text": why}]}
    T = fit_temperature(yv, Lv) if Lv is not None else None
    # ---- the test split; thresholds are searched on validation arrays only
    yt, pt_raw, Lt = labelled_arrays(g[g["split"] == "test"])
    probs = {"raw": (pv, pt_raw)}
    if T is not None:
        probs["temperature"] = (apply_temperature(Lv, T), apply_temperature(Lt, T))
    variants = {k: _variant(yv, a, yt, b, st.candidates, st.mode, st.n_bins, st.base, st.min_coverage)
                for k, (a, b) in probs.items()}
    v = variants[st.primary]
    pv, pt = probs[st.primary]
    compact = {k: _compact(variants[k], yt, probs[k][1], st.base) for k in variants}
    if "temperature" not in compact:
        compact["temperature"] = {"skipped": "predictions.parquet has no logits", "flags": []}
    if "skipped" in v:
        return {"skipped": v["skipped"], "n": n, "n_unlabelled": n_unl,
                "val_search": v["val_search"], "flags": v["flags"], "variants": compact,
                "val_source": src["val"], "test_source": src["test"]}
    methods, thr, keep, flags = _primary_rule(yv, pv, yt, pt, v, src, st)
    rep, msgs = _with_warnings(report_for_mask, yt, pt, keep, n_bins=st.n_bins, ci=True, B=st.B,
                               alpha=st.alpha, seed=st.seed)
    if st.method != "entropy":
        flags = _method_flags(rep, methods, st)
    entry = _entry(n, n_unl, yv, pv, yt, pt, v, thr, rep, msgs, flags, methods, compact, src, st)
    if T is not None:
        tv = probs.get("temperature", probs["raw"])
        entry["temperature"] = {"T": T, "fitted_on": "val", "n_fit": int(yv.size),
                                "val": _calib_pair(yv, probs["raw"][0], tv[0], st.n_bins),
                                "test": _calib_pair(yt, pt_raw, tv[1], st.n_bins)}
    return entry


def _primary_rule(yv, pv, yt, pt, v: dict, src: dict, st: _RejectSettings):
    """The three rules side by side (``methods``), and the primary one's threshold, retained test
    mask and flags."""
    thr = v["threshold"]
    entropy_keep = retained_mask(pt, thr, mode=v["apply_mode"], base=st.base)
    methods = compare_methods(yv, pv, yt, pt, entropy_keep=entropy_keep,
                              entropy_threshold=thr if v["apply_mode"] == "absolute" else math.nan,
                              alpha=st.conformal_alpha, risk_target=st.risk_target, risk_delta=st.risk_delta,
                              B=st.B, ci_alpha=st.alpha, seed=st.seed)
    # the conformal / SGR promises assume test exchangeable with the calibration split: not so
    # when an external set borrows the training combination's validation split
    own = src["val"] == "own validation split"
    for name in ("conformal", "sgr"):
        methods[name].update(calibrated_on=src["val"], exchangeable=own)
    if st.method == "entropy":
        keep = entropy_keep
    elif st.method == "conformal":
        _, keep, _ = conformal_decisions(fit_conformal(yv, pv, st.conformal_alpha), pt)
        thr = math.nan
    else:
        sg = methods["sgr"]
        thr = sg["threshold"]
        keep = entropy(pt) <= thr if sg["met"] else np.zeros(yt.size, bool)
    return methods, thr, keep, v["flags"]


def _method_flags(rep: dict, methods: dict, st: _RejectSettings) -> list:
    """Flags of a conformal or SGR primary result."""
    flags = rejection_flags({}, rep["coverage"], rep["referral"])
    if st.method == "conformal" and methods["conformal"]["n_set_label_differs"]:
        flags.append({"code": "set-label-differs",
                      "text": f"{methods['conformal']['n_set_label_differs']} singleton set(s) disagree "
                              "with p > 0.5; 'after' counts them by p"})
    if st.method == "sgr" and not methods["sgr"]["met"]:
        flags.append({"code": "sgr-not-met", "text": f"no threshold bounds the error at {st.risk_target:g} "
                                                     f"with probability {1 - st.risk_delta:g}"})
    return flags


def _entry(n, n_unl, yv, pv, yt, pt, v, thr, rep, msgs, flags, methods, compact, src, st) -> dict:
    base, B, alpha, seed = st.base, st.B, st.alpha, st.seed
    return {
        "method": st.method,
        "threshold": thr, "fraction": v["fraction"] if st.method == "entropy" else math.nan,
        "threshold_unit": _unit(st.mode, base),
        "coverage": rep["coverage"], "val_coverage": v["val_coverage"], "n": n, "n_unlabelled": n_unl,
        "n_test": rep["n"], "n_retained": rep["n_retained"], "n_rejected": rep["n_rejected"],
        "before": rep["before"], "after": rep["after"],
        "fp": rep["fp_before"], "fn": rep["fn_before"],
        **{k: rep[k] for k in ("fp_before", "fn_before", "fp_after", "fn_after", "fp_prevented",
                               "fn_prevented", "tp_rejected", "tn_rejected", "misdiagnoses_prevented",
                               "correct_rejected", "fp_reduction_pct", "fn_reduction_pct", "referral")},
        "flags": flags,
        "methods": methods,
        "val_search": v["val_search"],
        "val_source": src["val"], "test_source": src["test"],
        "min_coverage": float(st.min_coverage),
        "curves": {
            "accuracy_rejection": {**accuracy_rejection_curve(
                yv, pv, np.round(np.linspace(0, math.log(2) / math.log(base), 101), 10), base=base),
                "split": "val"},
            "risk_coverage": {**risk_coverage_curve(yt, pt, base=base), "split": "test"},
        },
        "aurc": bootstrap_ci(partial(aurc, base=base), yt, pt, B=B, alpha=alpha, seed=seed),
        "eaurc": bootstrap_ci(partial(eaurc, base=base), yt, pt, B=B, alpha=alpha, seed=seed),
        "selective_risk": selective_risk_at(yt, pt, st.coverages, base=base),
        "variants": compact,
        "warnings": msgs,
    }


def _unit(mode: str, base: float) -> str:
    if mode == "coverage":
        return "fraction rejected"
    return "bits" if base == 2 else f"entropy, base {base:g}"


def flag_text(flags) -> str:
    """Flags as one short line (``""`` when there are none), for tables and captions."""
    return "; ".join(f["text"] for f in (flags or []))


# --------------------------------------------------------------------------------------------
# tables (for the CLI and the notebooks)
# --------------------------------------------------------------------------------------------


def _f(x, fmt=".3f") -> str:
    return "nan" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


def _ci(block: dict, k: str) -> str:
    ci = block.get("ci", {}).get(k)
    s = _f(block.get(k))
    return f"{s} [{_f(ci['low'])}, {_f(ci['high'])}]" if ci else s


def reject_table(result: dict) -> pd.DataFrame:
    """One row per evaluation set: threshold, coverage (validation / test), accuracy and the
    sensitivity among the retained before → after, where the melanomas went, and the flags."""
    rows = []
    for es, e in result["eval_sets"].items():
        if "skipped" in e:
            rows.append({"eval set": es, "threshold": "", "coverage val / test": "", "accuracy before → after": "",
                         "sensitivity before → after": "", "melanomas caught / missed / referred": "",
                         "benign referred": "", "flags": f"skipped: {e['skipped']}"})
            continue
        r = e["referral"]
        frac = f" (r = {e['fraction']:.2f})" if math.isfinite(e.get("fraction", math.nan)) else ""
        rows.append({
            "eval set": es, "threshold": f"{_f(e['threshold'])}{frac}",
            "coverage val / test": f"{_f(e['val_coverage'], '.2f')} / {_f(e['coverage'], '.2f')} "
                                   f"({e['n_retained']}/{e['n_test']})",
            "accuracy before → after": f"{_f(e['before']['accuracy'])} → {_f(e['after']['accuracy'])}",
            "sensitivity before → after": f"{_f(e['before']['sensitivity'])} → {_f(r['sensitivity_retained'])}",
            "melanomas caught / missed / referred": f"{r['melanoma_caught']} / {r['melanoma_missed']} / "
                                                    f"{r['melanoma_referred']} of {r['n_melanoma']}",
            "benign referred": f"{r['benign_referred']} of {r['n_benign']}",
            "flags": flag_text(e["flags"]),
        })
    return pd.DataFrame(rows)


def methods_table(result: dict) -> pd.DataFrame:
    """Entropy rule vs conformal sets vs SGR per evaluation set: coverage, accuracy, melanomas
    given a confident benign label (miss rate), melanomas referred, and whether test kept the
    method's promise (entropy promises nothing)."""
    rows = []
    for es, e in result["eval_sets"].items():
        for name, m in (e.get("methods") or {}).items():
            if name == "curves":
                continue
            kept = {True: "yes", False: "NO", None: "no promise"}[m.get("kept")]
            if name == "sgr" and not m.get("met"):
                kept = "no threshold meets the target on validation"
            elif name == "conformal" and not m.get("exchangeable", True):
                kept += " (no guarantee: calibrated on another split)"
            rows.append({"eval set": es, "method": name,
                         "coverage": f"{_f(m['coverage'], '.2f')} ({m['n_retained']}/{m['n']})",
                         "accuracy": _f(m["accuracy"]),
                         "melanomas missed (confident benign)": f"{m['melanoma_missed']} of {m['n_melanoma']} "
                                                                f"({_f(m['miss_rate'], '.3f')})",
                         "melanomas referred": m["melanoma_referred"], "promise kept on test": kept})
    return pd.DataFrame(rows)


def calibrate_table(result: dict) -> pd.DataFrame:
    """One row per evaluation set: n, accuracy and AUC with CIs, ECE and Brier before → after, T."""
    rows = []
    for es, e in result["eval_sets"].items():
        if "skipped" in e:
            rows.append({"eval set": es, "n test": 0, "accuracy": "", "AUC": "", "ECE before → after": "",
                         "Brier before → after": "", "T": "", "note": f"skipped: {e['skipped']}"})
            continue
        b, a, t = e["before"], e["after"], e["temperature"]
        fitted = "skipped" not in a
        rows.append({
            "eval set": es, "n test": b["n"], "accuracy": _ci(b, "accuracy"), "AUC": _ci(b, "auc"),
            "ECE before → after": f"{_f(b['ece'])} → {_f(a['ece'])}" if fitted else _f(b["ece"]),
            "Brier before → after": f"{_f(b['brier'])} → {_f(a['brier'])}" if fitted else _f(b["brier"]),
            "T": _f(t["T"]) if fitted else "", "note": "" if fitted else a["skipped"],
        })
    return pd.DataFrame(rows)


def metrics_table(blocks: dict, metrics=("precision", "sensitivity", "specificity", "f1", "accuracy",
                                         "auc", "ece", "brier")) -> pd.DataFrame:
    """``{label: report block}`` → a table of "value [low, high]" strings, one row per label."""
    rows = []
    for label, b in blocks.items():
        if "skipped" in b:
            rows.append({"": label, **{m: "" for m in metrics}, "n": "", "note": b["skipped"]})
        else:
            rows.append({"": label, **{m: _ci(b, m) for m in metrics}, "n": b["n"], "note": ""})
    return pd.DataFrame(rows).set_index("")


def temperature_table(result: dict) -> pd.DataFrame:
    """Temperature scaling per evaluation set (a ``calibrate_run`` result): ``T`` and ECE, Brier
    and NLL before → after on the validation split it was fitted on and on the test split."""
    rows = []
    for es, e in result["eval_sets"].items():
        t = e.get("temperature", {"skipped": e.get("skipped", "")})
        if "skipped" in t:
            rows.append({"eval set": es, "T": None, "note": t["skipped"]})
            continue
        for split in ("val", "test"):
            rows.append({"eval set": es, "split": split, "T": t["T"],
                         **{k: t[split][k] for k in ("ece_before", "ece_after", "brier_before", "brier_after",
                                                     "nll_before", "nll_after")}})
    return pd.DataFrame(rows).round(4)


def _done(result: dict) -> dict:
    return {es: e for es, e in result["eval_sets"].items() if "skipped" not in e}


def thresholds_table(result: dict) -> pd.DataFrame:
    """The thresholds a ``reject_run`` chose on validation: value, fraction r, coverage on
    validation and test, the objective, ``T`` and the flags, one row per evaluation set."""
    return pd.DataFrame([
        {"eval set": es, f"threshold ({e['threshold_unit']})": e["threshold"], "r": e["fraction"],
         "val coverage": e["val_coverage"], "val n": e["val_search"]["n"], "val from": e["val_source"],
         "objective ½(ECE+Brier)": e["val_search"]["objective"], "test coverage": e["coverage"],
         "T": e.get("temperature", {}).get("T"), "flags": flag_text(e["flags"])}
        for es, e in _done(result).items()])


def rejection_counts_table(result: dict) -> pd.DataFrame:
    """False positives / negatives before and after rejection, AURC (with CI), E-AURC and the
    selective risk at fixed coverages, one row per evaluation set of a ``reject_run`` result."""
    return pd.DataFrame([
        {"eval set": es, "FP before": e["fp"], "FP after": e["fp_after"], "FP prevented": e["fp_prevented"],
         "FN before": e["fn"], "FN after": e["fn_after"], "FN prevented": e["fn_prevented"],
         "FN reduction %": e["fn_reduction_pct"], "correct rejected": e["correct_rejected"],
         "AURC": e["aurc"]["estimate"], "AURC CI": f"[{e['aurc']['low']:.3f}, {e['aurc']['high']:.3f}]",
         "E-AURC": e["eaurc"]["estimate"],
         **{f"risk @ {c:g}": r for c, r in zip(e["selective_risk"]["coverage"], e["selective_risk"]["risk"])}}
        for es, e in _done(result).items()]).round(4)


def variants_table(result: dict) -> pd.DataFrame:
    """The rejection rule on raw and on temperature-scaled probabilities, side by side: threshold,
    fraction, coverage (validation / test), accuracy after and flags, per evaluation set."""
    return pd.DataFrame([
        {"eval set": es, "probabilities": k,
         **{c: v.get(c) for c in ("threshold", "fraction", "val_coverage", "coverage")},
         "accuracy after": v.get("after", {}).get("accuracy"), "flags": flag_text(v.get("flags"))}
        for es, e in _done(result).items() for k, v in e["variants"].items()])


def confusion_table(predictions: pd.DataFrame, split: str = "val", threshold: float = 0.5) -> pd.DataFrame:
    """Truth × prediction counts at ``threshold`` on ``split`` of prediction rows (one or several
    runs: ``predictions.parquet``), per run and evaluation set; unlabelled rows are left out."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    rows = predictions[(predictions["split"] == split) & (predictions["label"] >= 0)]
    names = {1: "melanoma", 0: "non-melanoma"}
    return pd.crosstab([rows["run_id"], rows["eval_set"], rows["label"].map(names).rename("truth")],
                       (rows["p_melanoma"] > threshold).map({True: "melanoma", False: "non-melanoma"})
                       .rename("predicted"))

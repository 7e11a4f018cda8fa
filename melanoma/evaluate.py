"""Calibrate and reject one run: the package functions behind notebooks 03/04 and the CLI.

A run directory (see :mod:`melanoma.train`) holds ``run.json`` and ``predictions.parquet`` with
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
     "temperature", "n_bins", "B", "alpha", "seed", "decision_threshold", "coverages",
     "eval_sets": {eval_set: {
        "threshold", "coverage" (test), "n", "n_retained", "n_rejected", "n_unlabelled",
        "before", "after" (classification_report with CIs, all test rows / retained test rows),
        "fp", "fn" (before, among all), "fp_before", "fn_before", "fp_after", "fn_after",
        "fp_prevented", "fn_prevented", "tp_rejected", "tn_rejected", "misdiagnoses_prevented",
        "fp_reduction_pct", "fn_reduction_pct",
        "val_search": {"threshold", "objective", "coverage", "n_retained", "n", "mode",
                       "min_coverage", "min_coverage_met", "note", "table": {...per candidate}},
        "min_coverage",
        "curves": {"accuracy_rejection": {..., "split": "val"},   # Fig. 3, validation, 0..1 bit
                   "risk_coverage": {..., "split": "test"}},      # test
        "aurc": bootstrap CI dict, "eaurc": bootstrap CI dict,
        "selective_risk": {"coverage", "achieved_coverage", "n_retained", "risk"},
        "temperature": {...}   # only with temperature=True
     } | {"skipped": reason, "n": {...}, "n_unlabelled": {...}}}}

The rejection threshold is searched on the evaluation set's **validation** split only (test labels
are never read before the threshold is fixed) and applied unchanged to the test split.

Both files are written atomically (:func:`melanoma.io.write_json`); ``NaN`` marks undefined values.
"""

from __future__ import annotations

import math
import warnings
from functools import partial
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from .io import read_json, write_json
from .metrics import (
    MetricUndefinedWarning,
    bootstrap_ci,
    brier,
    classification_report,
    ece,
    nll,
    reliability_curve,
)
from .uncertainty import (
    DEFAULT_GRID,
    accuracy_rejection_curve,
    apply_temperature,
    aurc,
    eaurc,
    fit_temperature,
    rejection_report,
    risk_coverage_curve,
    search_threshold,
    selective_risk_at,
)

__all__ = [
    "MODES",
    "DEFAULT_MIN_COVERAGE",
    "DEFAULT_COVERAGES",
    "parse_grid",
    "load_run",
    "load_predictions",
    "labelled_arrays",
    "calibrate_run",
    "reject_run",
    "calibrate_table",
    "reject_table",
    "metrics_table",
]

MODES = ("absolute", "coverage")

#: Default floor on the validation coverage of a candidate threshold (see :func:`reject_run`).
DEFAULT_MIN_COVERAGE = 0.8

#: Coverages at which the selective risk on test is reported.
DEFAULT_COVERAGES = (0.8, 0.9, 1.0)

_REQUIRED = ("eval_set", "split", "label", "p_melanoma")
_LOGITS = ("logit_0", "logit_1")
_SPLITS = ("test", "val")
_MAX_GRID = 100_000


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------


def parse_grid(text: str) -> np.ndarray:
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
    >>> parse_grid("0:0.2:0.05").tolist()
    [0.0, 0.05, 0.1, 0.15, 0.2]
    >>> parse_grid("0.1:0.1:1").tolist()
    [0.1]
    """
    if not isinstance(text, str):
        raise ValueError(f"grid must be a string START:STOP:STEP, got {text!r}")
    parts = text.strip().split(":")
    if len(parts) != 3:
        raise ValueError(f"grid must look like START:STOP:STEP (e.g. 0:0.2:0.01), got {text!r}")
    vals = []
    for name, s in zip(("START", "STOP", "STEP"), parts):
        try:
            v = float(s)
        except ValueError:
            raise ValueError(f"grid {text!r}: {name} {s.strip()!r} is not a number") from None
        if not math.isfinite(v):
            raise ValueError(f"grid {text!r}: {name} must be finite, got {s.strip()!r}")
        vals.append(v)
    start, stop, step = vals
    if start < 0:
        raise ValueError(f"grid {text!r}: START must be >= 0, got {start:g}")
    if stop < start:
        raise ValueError(f"grid {text!r}: STOP ({stop:g}) is smaller than START ({start:g})")
    if step <= 0:
        raise ValueError(f"grid {text!r}: STEP must be > 0, got {step:g}")
    n = int(math.floor((stop - start) / step + 1e-9)) + 1
    if n > _MAX_GRID:
        raise ValueError(f"grid {text!r}: {n} values is too many (at most {_MAX_GRID}); use a larger STEP")
    return np.round(start + step * np.arange(n), 10)


def _resolve_grid(grid, mode: str, base: float = 2) -> np.ndarray:
    if grid is None:
        g = DEFAULT_GRID.copy()
    elif isinstance(grid, str):
        g = parse_grid(grid)
    else:
        g = np.atleast_1d(np.asarray(grid, dtype=np.float64))
    if g.ndim != 1 or g.size == 0 or not np.all(np.isfinite(g)) or g.min() < 0:
        raise ValueError(f"grid must be a non-empty list of finite numbers >= 0, got {grid!r}")
    if mode == "coverage" and g.max() > 1:
        raise ValueError(f"with mode='coverage' the grid holds fractions to reject, in [0, 1]; got max {g.max():g}")
    h_max = math.log(2, base)  # the entropy of two classes never exceeds log(2)
    if mode == "absolute" and g.max() > h_max + 1e-9:
        raise ValueError(f"entropy thresholds above {h_max:g} (the two-class maximum in base {base:g}) "
                         f"retain everything; got max {g.max():g} from grid {grid!r}")
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

    * ``test`` and ``val``: :func:`melanoma.metrics.classification_report` with percentile
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


def reject_run(
    run_dir,
    mode: str = "absolute",
    grid=None,
    min_coverage: float = DEFAULT_MIN_COVERAGE,
    temperature: bool = False,
    base: float = 2,
    B: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    n_bins: int = 10,
    coverages=DEFAULT_COVERAGES,
) -> dict:
    """Entropy rejection for every evaluation set of a run: threshold on validation, report on test.

    Per evaluation set (labelled rows only; label -1 rows are skipped and counted):

    1. with ``temperature=True``, fit ``T`` on the validation logits and use the temperature-scaled
       probabilities for everything below (the ``temperature`` block records ``T`` and ECE/Brier
       before/after);
    2. choose the threshold on the **validation split only** with
       :func:`melanoma.uncertainty.search_threshold` — minimise ½(ECE + Brier) of the retained
       validation samples over ``grid``, among candidates keeping at least ``min_coverage`` of
       them — so the test labels cannot influence it;
    3. apply it unchanged to the test split: :func:`melanoma.uncertainty.rejection_report` (metrics
       with bootstrap CIs before/after, coverage, FP/FN before, after and prevented), AURC and
       E-AURC with bootstrap CIs, selective risk at ``coverages``, the risk–coverage curve; and
       the accuracy–rejection curve (Fig. 3) on validation.

    Why ``min_coverage`` defaults to 0.8: the paper reports "rejecting up to 20 % of
    low-confidence predictions in validation sets", i.e. its thresholds kept at least 80 % of the
    validation images. The bare rule (minimise ECE + Brier of the retained) has no such bound,
    and ECE and Brier of a few very confident predictions are ≈ 0, so with a less confident
    model it degenerates to the smallest threshold that keeps anything. Measured on the
    synthetic example run (EfficientNet-Lite0 linear probe trained on ISIC 2017, 30 validation
    images per evaluation set, two builds): without the floor the search picked τ = 0.01 bit
    keeping 12 of 30 validation images (40 %) for ISIC 2017, and τ = 0.01–0.03 keeping 17–19 of 30
    for ISIC 2018; applied to test that retained only 40–55 % of the test images.
    The floor states the paper's bound explicitly. If no candidate in the grid reaches it (an
    under-confident model in absolute mode), the floor is relaxed to the largest coverage any
    candidate reaches, and ``val_search`` says so (``min_coverage_met: false`` and a ``note``);
    ``min_coverage=0`` gives the paper's rule as stated. In coverage mode the default grid
    (reject 0–20 %) always satisfies the floor.

    Evaluation sets whose validation split is missing or has one class, or whose test split has
    no labelled rows, are reported as ``{"skipped": reason, ...}`` (never an exception); so is
    one where no candidate retains any validation sample.

    Parameters
    ----------
    run_dir : str or Path
        A finished run directory.
    mode : {"absolute", "coverage"}, default="absolute"
        ``absolute``: reject where entropy > threshold (the paper's definition; the grid holds
        entropies in units of ``base``). ``coverage``: reject the most uncertain fraction
        (the seed code; the grid holds fractions in [0, 1]).
    grid : None, str or sequence of float
        Candidates; ``None`` = 0, 0.01, …, 0.20; a string ``START:STOP:STEP`` (see
        :func:`parse_grid`).
    min_coverage : float, default=0.8
        Smallest validation coverage a candidate must keep (see above).
    temperature : bool, default=False
        Reject on temperature-scaled probabilities (``T`` fitted on validation).
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

    Returns
    -------
    dict
        What was written to ``RUN_DIR/rejection.json`` (layout in the module docstring).
    """
    _check_common(B, alpha, n_bins, seed)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    g_arr = _resolve_grid(grid, mode, base)
    if isinstance(min_coverage, bool) or not isinstance(min_coverage, (int, float)) or not 0 <= min_coverage <= 1:
        raise ValueError(f"min_coverage must be in [0, 1], got {min_coverage!r}")
    coverages = [float(c) for c in np.atleast_1d(coverages)]
    run_dir = Path(run_dir)
    run, pred = load_run(run_dir)
    out = {**_header(run, run_dir), "mode": mode, "base": float(base), "grid": g_arr,
           "min_coverage": float(min_coverage), "temperature": bool(temperature), "n_bins": int(n_bins),
           "B": int(B), "alpha": float(alpha), "seed": int(seed), "decision_threshold": 0.5,
           "coverages": coverages, "eval_sets": {}}
    for es, g in _eval_groups(run, pred):
        n, n_unl = _counts(g)
        # validation first: nothing below reads a test label until the threshold is fixed
        yv, pv, Lv = labelled_arrays(g[g["split"] == "val"])
        why = _why_no_fit(yv)
        if why is None and n["test"] == 0:
            why = "no labelled test rows" + (f" ({n_unl['test']} unlabelled)" if n_unl["test"] else "")
        if why is None and temperature and (Lv is None):
            why = "temperature=True but predictions.parquet has no logit_0/logit_1 columns"
        if why is not None:
            out["eval_sets"][es] = {"skipped": why, "n": n, "n_unlabelled": n_unl}
            continue
        tblock = None
        if temperature:
            T = fit_temperature(yv, Lv)
            pv_raw, pv = pv, apply_temperature(Lv, T)
        search = _search(yv, pv, g_arr, mode, n_bins, base, min_coverage)
        if not np.isfinite(search["threshold"]):
            out["eval_sets"][es] = {"skipped": search["note"], "n": n, "n_unlabelled": n_unl,
                                    "val_search": search}
            continue
        thr = float(search["threshold"])
        # ---- the threshold is fixed; now the test split
        yt, pt, Lt = labelled_arrays(g[g["split"] == "test"])
        if temperature:
            pt_raw, pt = pt, apply_temperature(Lt, T)
            tblock = {"T": T, "fitted_on": "val", "n_fit": int(yv.size),
                      "val": _calib_pair(yv, pv_raw, pv, n_bins), "test": _calib_pair(yt, pt_raw, pt, n_bins)}
        rep, msgs = _with_warnings(rejection_report, yt, pt, thr, mode=mode, base=base, n_bins=n_bins,
                                   ci=True, B=B, alpha=alpha, seed=seed)
        entry = {
            "threshold": thr, "coverage": rep["coverage"], "n": n, "n_unlabelled": n_unl,
            "n_test": rep["n"], "n_retained": rep["n_retained"], "n_rejected": rep["n_rejected"],
            "before": rep["before"], "after": rep["after"],
            "fp": rep["fp_before"], "fn": rep["fn_before"],
            **{k: rep[k] for k in ("fp_before", "fn_before", "fp_after", "fn_after", "fp_prevented",
                                   "fn_prevented", "tp_rejected", "tn_rejected", "misdiagnoses_prevented",
                                   "correct_rejected", "fp_reduction_pct", "fn_reduction_pct")},
            "val_search": search,
            "min_coverage": float(min_coverage),
            "curves": {
                "accuracy_rejection": {**accuracy_rejection_curve(
                    yv, pv, np.round(np.linspace(0, math.log(2) / math.log(base), 101), 10), base=base),
                    "split": "val"},
                "risk_coverage": {**risk_coverage_curve(yt, pt, base=base), "split": "test"},
            },
            "aurc": bootstrap_ci(partial(aurc, base=base), yt, pt, B=B, alpha=alpha, seed=seed),
            "eaurc": bootstrap_ci(partial(eaurc, base=base), yt, pt, B=B, alpha=alpha, seed=seed),
            "selective_risk": selective_risk_at(yt, pt, coverages, base=base),
            "warnings": msgs,
        }
        if tblock is not None:
            entry["temperature"] = tblock
        out["eval_sets"][es] = entry
    write_json(run_dir / "rejection.json", out)
    return out


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
    """One row per evaluation set: threshold, coverage, accuracy before → after, FN/FP prevented."""
    rows = []
    for es, e in result["eval_sets"].items():
        if "skipped" in e:
            rows.append({"eval set": es, "threshold": "", "coverage": "", "accuracy before → after": "",
                         "FN prevented": "", "FP prevented": "", "note": f"skipped: {e['skipped']}"})
            continue
        note = e["val_search"].get("note", "")
        rows.append({
            "eval set": es, "threshold": _f(e["threshold"], "g"),
            "coverage": f"{_f(e['coverage'])} ({e['n_retained']}/{e['n_test']})",
            "accuracy before → after": f"{_f(e['before']['accuracy'])} → {_f(e['after']['accuracy'])}",
            "FN prevented": f"{e['fn_prevented']}/{e['fn']}", "FP prevented": f"{e['fp_prevented']}/{e['fp']}",
            "note": "coverage floor relaxed" if note else "",
        })
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

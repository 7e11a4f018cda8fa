"""Reject uncertain predictions of one run: threshold on validation, report on test → ``rejection.json``.

The package function behind notebook 04 and ``melanoma reject``. The run directory is read by
:mod:`melanoma.evaluate.rundir`; :func:`reject_run` writes ``RUN_DIR/rejection.json``::

    {"run_id", "model", "train", "synthetic", "mode", "base", "thresholds", "min_coverage",
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

The file is written atomically (:func:`melanoma.io.write_json`); ``NaN`` marks undefined values.
The candidate thresholds (``START:STOP:STEP``, :func:`parse_thresholds`) and the rule names
(:data:`MODES`, :data:`METHODS`) are also what a grid file's ``reject:`` section is checked against
(:mod:`melanoma.pipeline.grid`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from melanoma.evaluate.calibrate import calibration_pair, check_report_settings, why_no_fit, with_metric_warnings
from melanoma.evaluate.conformal import compare_methods, conformal_decisions, fit_conformal
from melanoma.evaluate.metrics import MetricUndefinedWarning, bootstrap_ci, classification_report
from melanoma.evaluate.rundir import eval_groups, labelled_arrays, load_run, run_header, split_counts
from melanoma.evaluate.uncertainty import (
    ABSOLUTE_THRESHOLDS,
    MODES,
    RELATIVE_THRESHOLDS,
    accuracy_rejection_curve,
    apply_temperature,
    aurc,
    eaurc,
    entropy,
    fit_temperature,
    referral_counts,
    report_for_mask,
    retained_mask,
    risk_coverage_curve,
    search_threshold,
    selective_risk_at,
)
from melanoma.io import write_json

__all__ = [
    "MODES",
    "METHODS",
    "DEFAULT_MODE",
    "LOW_TEST_COVERAGE",
    "DEFAULT_MIN_COVERAGE",
    "DEFAULT_COVERAGES",
    "parse_thresholds",
    "default_thresholds",
    "rejection_flags",
    "reject_run",
]

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

_MAX_THRESHOLDS = 100_000


# --------------------------------------------------------------------------------------------
# candidate thresholds
# --------------------------------------------------------------------------------------------


def parse_thresholds(text: str) -> np.ndarray:
    """Parse ``START:STOP:STEP`` into candidate thresholds, STOP included.

    ``"0:0.2:0.01"`` gives 0, 0.01, …, 0.20 (21 values, the paper's candidates). Values are rounded to
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
    return (ABSOLUTE_THRESHOLDS if mode == "absolute" else RELATIVE_THRESHOLDS).copy()


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



# --------------------------------------------------------------------------------------------
# rejection
# --------------------------------------------------------------------------------------------


def _search(yv, pv, thresholds, mode, n_bins, base, min_coverage) -> dict:
    """search_threshold with the coverage floor; if no candidate meets the floor, relax it to the
    largest coverage any candidate reaches (flagged ``min_coverage_met: False``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricUndefinedWarning)
        s = search_threshold(yv, pv, thresholds, mode=mode, n_bins=n_bins, base=base, min_coverage=min_coverage)
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
        s2 = search_threshold(yv, pv, thresholds, mode=mode, n_bins=n_bins, base=base, min_coverage=best)
    s2["min_coverage"] = float(min_coverage)
    s2["min_coverage_met"] = False
    s2["note"] = (f"no candidate reaches validation coverage {min_coverage:g}; the floor was relaxed to the "
                  f"largest coverage among the candidate thresholds, {best:.3f} (widen the thresholds or lower "
                  "min_coverage)")
    return s2


def rejection_flags(val_search: dict, coverage: float, referral: dict) -> list[dict]:
    """Why a rejection result must not be read at face value: a list of ``{"code", "text"}``.

    * ``floor-relaxed``: no candidate reached the validation coverage floor, so the floor was
      relaxed (the threshold is the least-bad candidate, not one the rule accepts);
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


def _variant(yv, pv, yt, pt, candidates, mode, n_bins, base, min_coverage) -> dict:
    """One rejection rule applied to one pair of (validation, test) probabilities."""
    search = _search(yv, pv, candidates, mode, n_bins, base, min_coverage)
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
        Smallest validation coverage a candidate must keep (relative mode with the default thresholds
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

    Returns
    -------
    dict
        What was written to ``RUN_DIR/rejection.json`` (layout in the module docstring).
    """
    st = _RejectSettings(mode=mode, min_coverage=min_coverage, temperature=temperature, base=base, B=B,
                         alpha=alpha, seed=seed, n_bins=n_bins, coverages=coverages, method=method,
                         conformal_alpha=conformal_alpha, risk_target=risk_target, risk_delta=risk_delta,
                         candidates=None)
    st.check(thresholds)
    run_dir = Path(run_dir)
    run, pred = load_run(run_dir)
    out = {**run_header(run, run_dir), "mode": mode, "base": float(base), "thresholds": st.candidates,
           "min_coverage": float(min_coverage), "temperature": bool(temperature), "primary": st.primary,
           "low_test_coverage": LOW_TEST_COVERAGE, "n_bins": int(n_bins), "method": method,
           "conformal_alpha": float(conformal_alpha), "risk_target": float(risk_target),
           "risk_delta": float(risk_delta),
           "B": int(B), "alpha": float(alpha), "seed": int(seed), "decision_threshold": 0.5,
           "coverages": st.coverages, "eval_sets": {}}
    sources = run.get("eval_sources") or {}
    for es, g in eval_groups(run, pred):
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
        check_report_settings(self.B, self.alpha, self.n_bins, self.seed)
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
    n, n_unl = split_counts(g)
    # validation first: nothing below reads a test label until the thresholds are fixed
    yv, pv, Lv = labelled_arrays(g[g["split"] == "val"])
    why = why_no_fit(yv)
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
    rep, msgs = with_metric_warnings(report_for_mask, yt, pt, keep, n_bins=st.n_bins, ci=True, B=st.B,
                               alpha=st.alpha, seed=st.seed)
    if st.method != "entropy":
        flags = _method_flags(rep, methods, st)
    entry = _entry(n, n_unl, yv, pv, yt, pt, v, thr, rep, msgs, flags, methods, compact, src, st)
    if T is not None:
        tv = probs.get("temperature", probs["raw"])
        entry["temperature"] = {"T": T, "fitted_on": "val", "n_fit": int(yv.size),
                                "val": calibration_pair(yv, probs["raw"][0], tv[0], st.n_bins),
                                "test": calibration_pair(yt, pt_raw, tv[1], st.n_bins)}
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


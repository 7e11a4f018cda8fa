"""Entropy, rejection to "Uncertain", the validation threshold search, and selective curves.

The paper (§2.3–2.4, §3.3) scores each prediction by the Shannon entropy of its softmax,
rejects predictions whose entropy exceeds a threshold into an "Uncertain" class (to be referred
to a clinician), chooses that threshold on the **validation** split by minimising the mean of
ECE and Brier on the retained samples, and applies it unchanged to the test split.

Conventions: ``y`` are labels (1 = melanoma), ``p`` is p(melanoma) of shape ``(n,)`` (entropy
also takes ``(n, k)`` probability matrices); entropy is in bits by default, so in [0, 1] for two
classes. For two classes entropy is a decreasing function of the max softmax, so ranking by
entropy is ranking by confidence. Every function is pure; ``*_curve`` functions return numbers
and :mod:`melanoma.report.plots` draws them.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from melanoma.evaluate.metrics import (
    MetricUndefinedWarning,
    brier_unchecked,
    check_bins,
    check_bootstrap,
    check_p,
    check_threshold,
    check_y,
    check_y_p,
    classification_report,
    confusion_counts_unchecked,
    ece_unchecked,
)

__all__ = [
    "UNCERTAIN",
    "ABSOLUTE_THRESHOLDS",
    "RELATIVE_THRESHOLDS",
    "entropy",
    "reject_by_threshold",
    "reject_by_coverage",
    "relative_threshold",
    "retained_mask",
    "triage_labels",
    "search_threshold",
    "rejection_report",
    "report_for_mask",
    "referral_counts",
    "accuracy_rejection_curve",
    "risk_coverage_curve",
    "aurc",
    "eaurc",
    "selective_risk_at",
    "fit_temperature",
    "apply_temperature",
]

#: Label given to rejected predictions.
UNCERTAIN = "Uncertain"

#: The paper's candidate thresholds: 0, 0.01, ..., 0.20 (entropy in bits; the default of ``mode="absolute"``).
ABSOLUTE_THRESHOLDS = np.round(np.arange(0.0, 0.2001, 0.01), 10)

#: The seed code's relative thresholds: reject 5 %, 6 %, ..., 20 % of the validation split (the
#: default of ``mode="relative"`` and ``"coverage"``).
RELATIVE_THRESHOLDS = np.round(np.arange(0.05, 0.2001, 0.01), 10)

#: Rejection rules. ``relative`` (the seed code's): the threshold is the validation split's entropy
#: quantile that rejects a fraction r, and that *entropy value* is applied to test; ``absolute``:
#: the candidates are entropies in bits; ``coverage``: reject a fraction of whatever set is scored.
MODES = ("relative", "absolute", "coverage")


# --------------------------------------------------------------------------------------------
# entropy and rejection
# --------------------------------------------------------------------------------------------


def _check_base(base) -> float:
    if not isinstance(base, (int, float, np.integer, np.floating)) or not (
        math.isfinite(base) and base > 0 and base != 1
    ):
        raise ValueError(f"base must be a positive number other than 1, got {base!r}")
    return float(base)


def entropy(p, base: float = 2):
    """Shannon entropy of each prediction (the paper's Eq. 1), in bits by default.

    .. math:: H_i = -\\sum_{c=1}^{k} p_{ic} \\log_b p_{ic}, \\qquad 0 \\log 0 := 0

    For a 1-D ``p`` = p(melanoma) the distribution is ``[1 - p, p]``, so with ``base=2``
    :math:`H \\in [0, 1]`: 1 bit at p = 0.5 and 0 at p in {0, 1} (no NaN).

    Parameters
    ----------
    p : float, array-like of shape (n,) or (n, k)
        p(melanoma), or a matrix whose rows are probability distributions (rows must sum to 1
        within 1e-6).
    base : float, default=2
        Logarithm base (2: bits, ``math.e``: nats).

    Returns
    -------
    float or ndarray of shape (n,)
        A float for a scalar ``p``.

    Examples
    --------
    >>> entropy(0.5), entropy(1.0), entropy(0.0)
    (1.0, 0.0, 0.0)
    >>> entropy([[0.5, 0.5], [1.0, 0.0], [0.25, 0.75]]).round(4).tolist()
    [1.0, 0.0, 0.8113]
    >>> float(entropy([[1/3, 1/3, 1/3]], base=3)[0].round(10))
    1.0
    """
    base = _check_base(base)
    scalar = np.ndim(p) == 0
    arr = np.asarray(p)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"p must hold numeric probabilities, got dtype {arr.dtype}")
    arr = np.atleast_1d(arr).astype(np.float64)
    if arr.ndim == 1:
        arr = check_p(arr)
        P = np.stack([1.0 - arr, arr], axis=1)
    elif arr.ndim == 2:
        if not np.all(np.isfinite(arr)):
            raise ValueError("p contains NaN or infinite values")
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            raise ValueError("p has values outside [0, 1]")
        if arr.shape[0] and arr.shape[1] < 2:
            raise ValueError(f"p must have at least 2 columns (classes), got shape {arr.shape}")
        dev = np.abs(arr.sum(axis=1) - 1.0)
        if dev.size and dev.max() > 1e-6:
            raise ValueError(f"rows of p must sum to 1 (largest deviation {dev.max():.3g})")
        P = arr
    else:
        raise ValueError(f"p must have shape (n,) or (n, k), got shape {arr.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(P > 0, P * np.log(np.where(P > 0, P, 1.0)), 0.0)
    H = np.maximum(-plogp.sum(axis=1) / math.log(base), 0.0)
    return float(H[0]) if scalar else H


def _check_entropy_threshold(threshold) -> float:
    if not isinstance(threshold, (int, float, np.integer, np.floating)) or not (
        math.isfinite(threshold) and threshold >= 0
    ):
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")
    return float(threshold)


def _check_fraction(fraction) -> float:
    if not isinstance(fraction, (int, float, np.integer, np.floating)) or not (0 <= fraction <= 1):
        raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
    return float(fraction)


def _check_mode(mode) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return mode


def reject_by_threshold(p, threshold: float, base: float = 2) -> np.ndarray:
    """Retain predictions whose entropy is at most ``threshold`` (the paper's rule).

    .. math:: \\text{retained}_i = [\\,H_i \\le \\tau\\,]

    A prediction is rejected ("Uncertain") when its entropy exceeds the threshold.

    Parameters
    ----------
    p : array-like of shape (n,) or (n, k)
        p(melanoma), or rows of class probabilities.
    threshold : float
        Entropy threshold :math:`\\tau \\ge 0`, in units of ``base``.
    base : float, default=2
        Entropy base.

    Returns
    -------
    ndarray of shape (n,), dtype bool
        True where the prediction is retained.

    Examples
    --------
    >>> reject_by_threshold([0.5, 0.99, 0.01, 0.9], 0.2).tolist()
    [False, True, True, False]
    """
    threshold = _check_entropy_threshold(threshold)
    return np.atleast_1d(entropy(p, base=base)) <= threshold


def reject_by_coverage(p, fraction: float, base: float = 2) -> np.ndarray:
    """Reject the most uncertain ``fraction`` of the predictions (what the seed code did).

    .. math:: n_{\\text{reject}} = \\lfloor f\\,n \\rfloor, \\qquad
              \\text{retained} = \\text{the } n - n_{\\text{reject}} \\text{ lowest-entropy predictions}

    Ties are broken stably: among equal entropies the earlier samples are retained first, so
    the result never depends on anything but the order of ``p``.

    Parameters
    ----------
    p : array-like of shape (n,) or (n, k)
        p(melanoma), or rows of class probabilities.
    fraction : float
        Fraction to reject, in [0, 1].
    base : float, default=2
        Entropy base (does not change the ranking).

    Returns
    -------
    ndarray of shape (n,), dtype bool
        True where the prediction is retained.

    Examples
    --------
    >>> reject_by_coverage([0.5, 0.99, 0.4, 0.9], 0.5).tolist()
    [False, True, False, True]
    """
    fraction = _check_fraction(fraction)
    H = np.atleast_1d(entropy(p, base=base))
    n = H.size
    n_reject = int(np.floor(np.round(fraction * n, 9)))
    keep = np.zeros(n, dtype=bool)
    keep[np.argsort(H, kind="stable")[: n - n_reject]] = True
    return keep


def relative_threshold(p, fraction: float, base: float = 2) -> float:
    """The entropy value that rejects ``fraction`` of ``p`` (the seed code's relative threshold).

    With :math:`H_{(1)} \\le \\dots \\le H_{(n)}` the sorted entropies and
    :math:`k = n - \\lfloor f\\,n \\rfloor` the number to keep,

    .. math:: \\tau_f = H_{(k)}

    so that ``reject_by_threshold(p, tau)`` keeps every prediction at most as uncertain as the
    k-th most confident one: exactly ``k`` without ties, more when entropies tie at
    :math:`\\tau_f` (coverage is then above ``1 - f``, never below). The value is an entropy, so
    applied to another split (test) it keeps whatever fraction of that split is at least as
    confident: the achieved coverage there is measured, not assumed.

    Parameters
    ----------
    p : array-like of shape (n,) or (n, k)
        p(melanoma) (or rows of class probabilities) of the split the threshold is fitted on.
    fraction : float
        Fraction to reject, in [0, 1).
    base : float, default=2
        Entropy base.

    Returns
    -------
    float
        :math:`\\tau_f` in units of ``base``; ``nan`` when ``p`` is empty or nothing would be kept.

    Examples
    --------
    >>> p = [0.5, 0.9, 0.99, 0.6, 0.2, 0.01, 0.95, 0.7, 0.8, 0.3]
    >>> round(relative_threshold(p, 0.1), 4)   # the 0.5 (1 bit) is rejected; next is 0.6
    0.971
    >>> round(relative_threshold(p, 0.2), 4)   # 0.5 and 0.6 rejected; 0.7 and 0.3 tie at 0.8813
    0.8813
    """
    fraction = _check_fraction(fraction)
    H = np.sort(np.atleast_1d(entropy(p, base=base)), kind="stable")
    n_keep = H.size - int(np.floor(np.round(fraction * H.size, 9)))
    return float(H[n_keep - 1]) if n_keep > 0 else math.nan


def retained_mask(p, threshold: float, mode: str = "absolute", base: float = 2) -> np.ndarray:
    """Dispatch to :func:`reject_by_threshold` (``mode="absolute"`` or ``"relative"``: ``threshold``
    is an entropy; a relative threshold is the entropy found by :func:`relative_threshold`) or
    :func:`reject_by_coverage` (``mode="coverage"``, ``threshold`` = fraction rejected).

    Parameters
    ----------
    p : array-like of shape (n,) or (n, k)
        p(melanoma), or rows of class probabilities.
    threshold : float
        Entropy threshold or fraction to reject, by ``mode``.
    mode : {"absolute", "relative", "coverage"}, default="absolute"
        Rejection rule.
    base : float, default=2
        Entropy base.

    Returns
    -------
    ndarray of shape (n,), dtype bool

    Examples
    --------
    >>> retained_mask([0.5, 0.99], 0.5, mode="coverage").tolist()
    [False, True]
    """
    if _check_mode(mode) in ("absolute", "relative"):
        return reject_by_threshold(p, threshold, base=base)
    return reject_by_coverage(p, threshold, base=base)


def triage_labels(p, retained, threshold: float = 0.5) -> np.ndarray:
    """Final labels with rejection: "Melanoma", "Non-Melanoma" or ``UNCERTAIN``.

    .. math:: \\ell_i = \\text{Uncertain if not retained}_i,\\ \\text{else Melanoma if } p_i > t

    Parameters
    ----------
    p : array-like of shape (n,)
        p(melanoma).
    retained : array-like of shape (n,), bool
        Retained mask, e.g. from :func:`reject_by_threshold`.
    threshold : float, default=0.5
        Decision threshold.

    Returns
    -------
    ndarray of shape (n,), dtype object

    Examples
    --------
    >>> triage_labels([0.9, 0.1, 0.5], [True, True, False]).tolist()
    ['Melanoma', 'Non-Melanoma', 'Uncertain']
    """
    p = check_p(p)
    retained = _check_mask(retained, p.size)
    lab = np.where(p > check_threshold(threshold), "Melanoma", "Non-Melanoma").astype(object)
    lab[~retained] = UNCERTAIN
    return lab


def _check_mask(mask, n: int) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.shape != (n,):
        raise ValueError(f"retained must be a boolean array of shape ({n},), got {mask.dtype} {mask.shape}")
    return mask


# --------------------------------------------------------------------------------------------
# threshold search (validation only) and the before/after report (test)
# --------------------------------------------------------------------------------------------


def search_threshold(
    y_val,
    p_val,
    thresholds=None,
    *,
    mode: str = "absolute",
    n_bins: int = 10,
    base: float = 2,
    min_retained: int = 1,
    min_coverage: float = 0.0,
    decision_threshold: float = 0.5,
) -> dict:
    """Choose the rejection threshold on the validation split (the paper's rule, §3.3).

    For each candidate in ``thresholds``, keep the validation samples it retains and compute

    .. math:: J = \\tfrac12\\bigl(\\text{ECE}(\\text{retained}) + \\text{Brier}(\\text{retained})\\bigr)

    (ECE: ``n_bins`` equal-width bins, top-label; Brier on p(melanoma)). The chosen candidate
    minimises :math:`J`; ties go to the **higher coverage** (then the larger entropy threshold /
    smaller rejected fraction). Candidates retaining fewer than ``min_retained`` samples, or a
    fraction below ``min_coverage``, are skipped (their row has ``objective = nan``).

    What a candidate is depends on ``mode``:

    * ``"relative"`` (the seed code's rule, the default of :func:`melanoma.evaluate.reject.reject_run`):
      a fraction :math:`r` to reject; its threshold is the validation entropy quantile
      :math:`\\tau_r` (:func:`relative_threshold`), and the result's ``threshold`` is that
      **entropy value** (``fraction`` is :math:`r`), to be applied unchanged to test as an
      absolute threshold;
    * ``"absolute"``: an entropy threshold in units of ``base``;
    * ``"coverage"``: a fraction to reject of whatever split is scored.

    Beware in absolute mode: ECE and Brier of a small set of very confident predictions are close
    to 0, so with a weak or under-confident model the bare rule favours the smallest threshold
    that retains anything (coverage of a few %), and on real data no candidate in 0–0.2 bits may
    reach a sensible coverage at all. The relative rule cannot degenerate that way: every
    candidate keeps at least :math:`1 - r` of the validation split.

    The function only ever sees validation arrays; apply the result to the test split with
    :func:`rejection_report`.

    Parameters
    ----------
    y_val : array-like of shape (n,)
        Validation labels, 1 = melanoma.
    p_val : array-like of shape (n,)
        Validation p(melanoma).
    thresholds : array-like of float, optional
        Candidates: fractions to reject (``relative``, ``coverage``; default
        :data:`RELATIVE_THRESHOLDS`, 0.05 to 0.20) or entropy thresholds (``absolute``; default
        :data:`ABSOLUTE_THRESHOLDS`, 0 to 0.2 bits).
    mode : {"absolute", "relative", "coverage"}, default="absolute"
        Rejection rule, see above.
    n_bins : int, default=10
        ECE bins.
    base : float, default=2
        Entropy base.
    min_retained : int, default=1
        Smallest number of retained validation samples for a candidate to count.
    min_coverage : float, default=0.0
        Smallest retained fraction for a candidate to count (0: the paper's rule as stated).
    decision_threshold : float, default=0.5
        Decision threshold for the accuracy column.

    Returns
    -------
    dict
        ``threshold`` (the chosen entropy threshold, or the fraction in ``coverage`` mode;
        ``nan`` with a :class:`MetricUndefinedWarning` when no candidate qualifies),
        ``fraction`` (relative mode: the chosen :math:`r`; else ``nan``), ``objective``,
        ``coverage``, ``n_retained`` (at the chosen candidate), ``mode``, ``n`` and ``table``: a
        dict of arrays, one entry per candidate, with keys ``threshold, fraction, coverage,
        n_retained, accuracy, ece, brier, objective``.

    Examples
    --------
    >>> s = search_threshold([1, 0, 1, 0], [0.99, 0.02, 0.6, 0.45], thresholds=[0.0, 0.2, 1.0])
    >>> s["threshold"], s["coverage"]
    (0.2, 0.5)
    >>> r = search_threshold([1, 0, 1, 0, 1], [0.99, 0.02, 0.6, 0.45, 0.9], thresholds=[0.2, 0.4],
    ...                      mode="relative")
    >>> r["fraction"], round(r["threshold"], 4), r["coverage"]
    (0.4, 0.469, 0.6)
    """
    y, p = check_y_p(y_val, p_val)
    mode = _check_mode(mode)
    base = _check_base(base)
    check_bins(n_bins, "uniform", "top-label")
    decision_threshold = check_threshold(decision_threshold)
    if isinstance(min_retained, bool) or not isinstance(min_retained, (int, np.integer)) or min_retained < 1:
        raise ValueError(f"min_retained must be a positive integer, got {min_retained!r}")
    if not isinstance(min_coverage, (int, float, np.integer, np.floating)) or not (0 <= min_coverage <= 1):
        raise ValueError(f"min_coverage must be in [0, 1], got {min_coverage!r}")
    cands = _candidates(thresholds, mode)
    n = y.size
    if mode == "relative":  # a fraction r rejects the validation samples above its entropy quantile
        cuts = np.array([relative_threshold(p, float(r), base=base) if n else math.nan for r in cands])
    else:
        cuts = cands.copy()
    rows, n_ret = _score_candidates(y, p, cuts, mode=mode, base=base, n_bins=n_bins, min_retained=min_retained,
                                    min_coverage=min_coverage, decision_threshold=decision_threshold)
    fractions = cands.copy() if mode == "relative" else np.full(cands.size, np.nan)
    table = {"threshold": cuts, "fraction": fractions, "coverage": rows["coverage"], "n_retained": n_ret}
    table.update({k: rows[k] for k in ("accuracy", "ece", "brier", "objective")})
    out = {"mode": mode, "n": int(n), "table": table}
    obj = rows["objective"]
    if not np.any(np.isfinite(obj)):
        warnings.warn(
            f"no candidate threshold retains at least min_retained={min_retained} and "
            f"min_coverage={min_coverage:g} of the {n} validation samples; threshold is nan "
            "(widen the thresholds or lower min_retained / min_coverage)",
            MetricUndefinedWarning,
            stacklevel=2,
        )
        out.update(threshold=math.nan, fraction=math.nan, objective=math.nan, coverage=math.nan, n_retained=0)
        return out
    best = np.nanmin(obj)
    tied = np.flatnonzero(np.isfinite(obj) & (np.abs(obj - best) <= 1e-12))
    # ties: highest coverage, then larger entropy threshold (absolute) / smaller fraction (others)
    secondary = cands[tied] if mode == "absolute" else -cands[tied]
    j = tied[np.lexsort((secondary, n_ret[tied]))[-1]]
    out.update(
        threshold=float(cuts[j]),
        fraction=float(fractions[j]),
        objective=float(obj[j]),
        coverage=float(rows["coverage"][j]),
        n_retained=int(n_ret[j]),
    )
    return out


def _candidates(thresholds, mode: str) -> np.ndarray:
    """:func:`search_threshold`'s candidates as a checked 1-D array (``None``: the mode's default)."""
    if thresholds is None:
        thresholds = ABSOLUTE_THRESHOLDS if mode == "absolute" else RELATIVE_THRESHOLDS
    cands = np.asarray(thresholds, dtype=np.float64)
    if cands.ndim != 1 or cands.size == 0:
        raise ValueError(f"thresholds must be a non-empty 1-D array of candidates, got shape {cands.shape}")
    if mode == "relative" and (cands.min() < 0 or cands.max() >= 1):
        raise ValueError(f"relative mode: the thresholds are fractions to reject, in [0, 1); got {cands.tolist()}")
    return cands


def _score_candidates(y, p, cuts, *, mode, base, n_bins, min_retained, min_coverage, decision_threshold):
    """Per cut (entropy threshold, or fraction in coverage mode): coverage, accuracy, ECE, Brier and
    the objective ½(ECE + Brier) of the validation samples it retains (objective NaN where it
    keeps fewer than ``min_retained`` or a fraction below ``min_coverage``), and the number retained."""
    n = y.size
    rows = {k: np.full(cuts.size, np.nan) for k in ("coverage", "accuracy", "ece", "brier", "objective")}
    n_ret = np.zeros(cuts.size, dtype=np.int64)
    for j, t in enumerate(cuts):
        keep = retained_mask(p, float(t), mode=mode, base=base) if np.isfinite(t) else np.zeros(n, bool)
        yk, pk = y[keep], p[keep]
        n_ret[j] = yk.size
        rows["coverage"][j] = yk.size / n if n else math.nan
        if yk.size:
            c = confusion_counts_unchecked(yk, pk > decision_threshold)
            rows["accuracy"][j] = (c["tp"] + c["tn"]) / yk.size
            rows["ece"][j] = ece_unchecked(yk, pk, n_bins, "uniform", "top-label")
            rows["brier"][j] = brier_unchecked(yk, pk)
        if yk.size >= min_retained and yk.size >= min_coverage * n - 1e-9:
            rows["objective"][j] = 0.5 * (rows["ece"][j] + rows["brier"][j])
    return rows, n_ret


def rejection_report(
    y_test,
    p_test,
    threshold: float,
    *,
    mode: str = "absolute",
    base: float = 2,
    decision_threshold: float = 0.5,
    n_bins: int = 10,
    ci: bool = False,
    B: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict:
    """Metrics before and after rejection, coverage, and the misdiagnoses prevented.

    With :math:`R` the retained set and :math:`\\bar R` the rejected ("Uncertain") one:

    .. math::
        \\text{coverage} = |R|/n,\\quad
        FP_{\\text{before}} = FP(\\text{all}),\\quad FP_{\\text{after}} = FP(R),\\quad
        FP_{\\text{prevented}} = FP(\\bar R) = FP_{\\text{before}} - FP_{\\text{after}}

    (likewise for FN), and
    :math:`\\text{FN reduction} = 100\\,FN_{\\text{prevented}} / FN_{\\text{before}}` %.

    Parameters
    ----------
    y_test : array-like of shape (n,)
        Test labels, 1 = melanoma.
    p_test : array-like of shape (n,)
        Test p(melanoma).
    threshold : float
        The threshold chosen on validation (:func:`search_threshold`): an entropy threshold
        (``mode="absolute"`` or ``"relative"``) or a fraction to reject (``mode="coverage"``).
    mode : {"absolute", "relative", "coverage"}, default="absolute"
        Rejection rule (``relative``: ``threshold`` is the entropy found on validation, applied
        as an absolute threshold).
    base : float, default=2
        Entropy base.
    decision_threshold : float, default=0.5
        Decision threshold of the classifier.
    n_bins : int, default=10
        Calibration bins.
    ci : bool, default=False
        Add bootstrap confidence intervals to both blocks, see
        :func:`melanoma.evaluate.metrics.classification_report`.
    B : int, default=1000
        Bootstrap resamples.
    alpha : float, default=0.05
        One minus the confidence level.
    seed : int, default=0
        Bootstrap seed (the same for both blocks).

    Returns
    -------
    dict
        ``threshold, mode, n, n_retained, n_rejected, coverage``; ``before`` and ``after``:
        :func:`~melanoma.evaluate.metrics.classification_report` of all / retained samples (``after``
        is all-NaN with ``n = 0`` when everything is rejected); ``fp_before, fn_before,
        fp_after, fn_after, fp_prevented, fn_prevented, tp_rejected, tn_rejected,
        misdiagnoses_prevented`` (= fp_prevented + fn_prevented), ``correct_rejected``
        (= tp_rejected + tn_rejected), ``fp_reduction_pct, fn_reduction_pct`` (``nan`` when
        there was nothing to reduce), ``referral`` (:func:`referral_counts`).

    Examples
    --------
    >>> r = rejection_report([1, 0, 1, 0], [0.99, 0.02, 0.45, 0.6], 0.2)
    >>> r["coverage"], r["fn_before"], r["fn_prevented"], r["fp_prevented"], r["fn_reduction_pct"]
    (0.5, 1, 1, 1, 100.0)
    """
    y, p = check_y_p(y_test, p_test)
    mode = _check_mode(mode)
    keep = retained_mask(p, threshold, mode=mode, base=base)
    return {**report_for_mask(y, p, keep, decision_threshold=decision_threshold, n_bins=n_bins, ci=ci, B=B,
                              alpha=alpha, seed=seed), "threshold": float(threshold), "mode": mode}


def report_for_mask(y, p, keep, *, decision_threshold: float = 0.5, n_bins: int = 10, ci: bool = False,
                    B: int = 1000, alpha: float = 0.05, seed: int = 0) -> dict:
    """:func:`rejection_report` for any retained mask (e.g. the singleton sets of a conformal
    classifier): metrics before / after, coverage, FP/FN before, after and prevented, referral.

    Returns the keys of :func:`rejection_report` except ``threshold`` and ``mode``.

    Examples
    --------
    >>> r = report_for_mask([1, 0, 1, 0], [0.99, 0.02, 0.45, 0.6], [True, True, False, False])
    >>> r["coverage"], r["fn_prevented"], r["referral"]["melanoma_referred"]
    (0.5, 1, 1)
    """
    y, p = check_y_p(y, p)
    keep = _check_mask(np.asarray(keep), p.size)
    decision_threshold = check_threshold(decision_threshold)
    if ci:
        check_bootstrap(B, alpha)
    kw = dict(threshold=decision_threshold, n_bins=n_bins, ci=ci, B=B, alpha=alpha, seed=seed)
    before = classification_report(y, p, **kw)
    if keep.any():
        after = classification_report(y[keep], p[keep], **kw)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MetricUndefinedWarning)
            after = classification_report(y[keep], p[keep], **kw)
    rej = confusion_counts_unchecked(y[~keep], p[~keep] > decision_threshold)
    n = int(y.size)
    n_ret = int(keep.sum())
    return {
        "n": n,
        "n_retained": n_ret,
        "n_rejected": n - n_ret,
        "coverage": n_ret / n if n else math.nan,
        "before": before,
        "after": after,
        "fp_before": before["fp"],
        "fn_before": before["fn"],
        "fp_after": after["fp"],
        "fn_after": after["fn"],
        "fp_prevented": rej["fp"],
        "fn_prevented": rej["fn"],
        "tp_rejected": rej["tp"],
        "tn_rejected": rej["tn"],
        "misdiagnoses_prevented": rej["fp"] + rej["fn"],
        "correct_rejected": rej["tp"] + rej["tn"],
        "fp_reduction_pct": 100.0 * rej["fp"] / before["fp"] if before["fp"] else math.nan,
        "fn_reduction_pct": 100.0 * rej["fn"] / before["fn"] if before["fn"] else math.nan,
        "referral": referral_counts(y, p, keep, decision_threshold),
    }


def referral_counts(y, p, retained, decision_threshold: float = 0.5) -> dict:
    """What a clinician asks of a rejection: where did the melanomas (and benign lesions) go?

    Every melanoma ends in exactly one of three places — **caught** (retained, predicted
    melanoma), **missed** (retained, predicted benign: a confident false negative) or
    **referred** (rejected as "Uncertain", so a clinician sees it) — and every benign lesion in
    one of **cleared** (retained, predicted benign), **false alarm** (retained, predicted
    melanoma) or **referred**:

    .. math:: \\text{caught} + \\text{missed} + \\text{referred} = n_{\\text{melanoma}}, \\qquad
              \\text{cleared} + \\text{false alarm} + \\text{referred} = n_{\\text{benign}}

    Parameters
    ----------
    y : array-like of shape (n,)
        Labels, 1 = melanoma.
    p : array-like of shape (n,)
        p(melanoma).
    retained : array-like of shape (n,), bool
        Retained mask.
    decision_threshold : float, default=0.5
        Melanoma when p > this.

    Returns
    -------
    dict
        ``n_melanoma, melanoma_caught, melanoma_missed, melanoma_referred, melanoma_missed_before``
        (false negatives without rejection), ``n_benign, benign_cleared, benign_false_alarm,
        benign_referred, benign_false_alarm_before``, ``n_retained``, ``coverage``,
        ``sensitivity_retained`` (caught / (caught + missed)), ``specificity_retained``
        (cleared / (cleared + false alarm)), ``melanoma_referred_pct`` (of all melanomas) and
        ``melanoma_missed_pct`` (of all melanomas; ``nan`` without melanomas).

    Examples
    --------
    >>> r = referral_counts([1, 1, 1, 0, 0], [0.9, 0.2, 0.55, 0.1, 0.6], [True, True, False, True, True])
    >>> r["melanoma_caught"], r["melanoma_missed"], r["melanoma_referred"], r["benign_false_alarm"]
    (1, 1, 1, 1)
    """
    y, p = check_y_p(y, p)
    keep = _check_mask(np.asarray(retained), p.size)
    pos = p > check_threshold(decision_threshold)
    mel, ben = y == 1, y == 0
    n_mel, n_ben = int(mel.sum()), int(ben.sum())
    caught, missed = int((mel & keep & pos).sum()), int((mel & keep & ~pos).sum())
    cleared, alarm = int((ben & keep & ~pos).sum()), int((ben & keep & pos).sum())
    nan = math.nan
    return {
        "n_melanoma": n_mel, "melanoma_caught": caught, "melanoma_missed": missed,
        "melanoma_referred": int((mel & ~keep).sum()), "melanoma_missed_before": int((mel & ~pos).sum()),
        "n_benign": n_ben, "benign_cleared": cleared, "benign_false_alarm": alarm,
        "benign_referred": int((ben & ~keep).sum()), "benign_false_alarm_before": int((ben & pos).sum()),
        "n_retained": int(keep.sum()), "coverage": float(keep.mean()) if keep.size else nan,
        "sensitivity_retained": caught / (caught + missed) if caught + missed else nan,
        "specificity_retained": cleared / (cleared + alarm) if cleared + alarm else nan,
        "melanoma_referred_pct": 100.0 * int((mel & ~keep).sum()) / n_mel if n_mel else nan,
        "melanoma_missed_pct": 100.0 * missed / n_mel if n_mel else nan,
    }


# --------------------------------------------------------------------------------------------
# selective-classification curves
# --------------------------------------------------------------------------------------------


def accuracy_rejection_curve(
    y, p, thresholds=None, *, base: float = 2, decision_threshold: float = 0.5
) -> dict[str, np.ndarray]:
    """Accuracy on the retained samples as the entropy threshold varies (the paper's Fig. 3).

    .. math:: \\text{acc}(\\tau) = \\frac{\\sum_i [H_i \\le \\tau][\\hat y_i = y_i]}{\\sum_i [H_i \\le \\tau]}

    Parameters
    ----------
    y : array-like of shape (n,)
        Labels, 1 = melanoma.
    p : array-like of shape (n,)
        p(melanoma).
    thresholds : array-like of float, optional
        Entropy thresholds; default 0, 0.01, ..., 1.
    base : float, default=2
        Entropy base.
    decision_threshold : float, default=0.5
        Decision threshold.

    Returns
    -------
    dict
        Arrays ``threshold, coverage, rejection_rate, accuracy, n_retained``
        (``accuracy`` is nan where nothing is retained).

    Examples
    --------
    >>> c = accuracy_rejection_curve([1, 0, 1], [0.99, 0.6, 0.8], thresholds=[0.1, 1.0])
    >>> c["accuracy"].round(3).tolist(), c["coverage"].round(3).tolist()
    ([1.0, 0.667], [0.333, 1.0])
    """
    y, p = check_y_p(y, p)
    decision_threshold = check_threshold(decision_threshold)
    t = np.round(np.linspace(0, 1, 101), 10) if thresholds is None else np.asarray(thresholds, dtype=float)
    if t.ndim != 1 or not np.all(np.isfinite(t)) or (t.size and t.min() < 0):
        raise ValueError("thresholds must be a 1-D array of finite numbers >= 0")
    H = entropy(p, base=base)
    correct = (p > decision_threshold) == (y == 1)
    keep = H[None, :] <= t[:, None]
    n_ret = keep.sum(axis=1)
    n_ok = (keep & correct[None, :]).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(n_ret > 0, n_ok / np.maximum(n_ret, 1), np.nan)
        cov = n_ret / y.size if y.size else np.full(t.size, np.nan)
    return {"threshold": t, "coverage": cov, "rejection_rate": 1 - cov, "accuracy": acc, "n_retained": n_ret}


def _sorted_errors(y, p, base, decision_threshold):
    y, p = check_y_p(y, p)
    decision_threshold = check_threshold(decision_threshold)
    H = entropy(p, base=base)
    err = ((p > decision_threshold) != (y == 1)).astype(np.float64)
    order = np.argsort(H, kind="stable")
    return H[order], err[order]


def risk_coverage_curve(y, p, *, base: float = 2, decision_threshold: float = 0.5) -> dict[str, np.ndarray]:
    """Selective risk (error rate on the retained) against coverage, one point per entropy level.

    Sorting by entropy (most confident first), at each distinct entropy :math:`h`

    .. math:: \\text{coverage}(h) = \\frac{|\\{i: H_i \\le h\\}|}{n},\\qquad
              \\text{risk}(h) = \\frac{\\sum_{i: H_i \\le h} [\\hat y_i \\ne y_i]}{|\\{i: H_i \\le h\\}|}

    Tied entropies are one point, so the curve does not depend on the order of the samples.

    Parameters
    ----------
    y : array-like of shape (n,)
        Labels, 1 = melanoma.
    p : array-like of shape (n,)
        p(melanoma).
    base : float, default=2
        Entropy base.
    decision_threshold : float, default=0.5
        Decision threshold.

    Returns
    -------
    dict
        Arrays ``threshold`` (the entropy level), ``coverage``, ``risk``, ``n_retained``, in
        increasing coverage (empty arrays for an empty input).

    References
    ----------
    El-Yaniv & Wiener (2010), "On the foundations of noise-free selective classification", JMLR.

    Examples
    --------
    >>> c = risk_coverage_curve([1, 0, 1, 0], [0.75, 0.25, 0.6, 0.6])
    >>> c["coverage"].tolist(), c["risk"].tolist()
    ([0.5, 1.0], [0.0, 0.25])
    """
    H, err = _sorted_errors(y, p, base, decision_threshold)
    if H.size == 0:
        e = np.empty(0)
        return {"threshold": e, "coverage": e, "risk": e, "n_retained": np.empty(0, dtype=np.int64)}
    last = np.r_[np.flatnonzero(np.diff(H) != 0), H.size - 1]  # last index of each tie group
    k = last + 1
    cum = np.cumsum(err)[last]
    return {"threshold": H[last], "coverage": k / H.size, "risk": cum / k, "n_retained": k}


def _expected_risk_at_each_k(H: np.ndarray, err: np.ndarray) -> np.ndarray:
    """Risk of the k most confident, k = 1..n, averaging over random orders within ties."""
    n = H.size
    starts = np.r_[0, np.flatnonzero(np.diff(H) != 0) + 1]
    ends = np.r_[starts[1:], n]
    group = np.repeat(np.arange(starts.size), ends - starts)
    gerr = np.add.reduceat(err, starts)
    before = np.r_[0.0, np.cumsum(gerr)[:-1]]
    k = np.arange(1, n + 1)
    within = k - starts[group]
    size = (ends - starts)[group]
    expected_errors = before[group] + gerr[group] * within / size
    return expected_errors / k


def aurc(y, p, *, base: float = 2, decision_threshold: float = 0.5) -> float:
    """Area under the risk–coverage curve; lower is better.

    .. math:: \\text{AURC} = \\frac1n \\sum_{k=1}^{n} \\text{risk}_k,\\qquad
              \\text{risk}_k = \\frac1k \\sum_{j=1}^{k} [\\hat y_{(j)} \\ne y_{(j)}]

    with samples ordered by increasing entropy. Within tied entropies the expected value over
    random orders is used (errors spread evenly over the tie group), so the result does not
    depend on the order of the samples; without ties this is the usual definition. ``nan`` for
    an empty input.

    Parameters
    ----------
    y : array-like of shape (n,)
        Labels, 1 = melanoma.
    p : array-like of shape (n,)
        p(melanoma).
    base : float, default=2
        Entropy base (does not change the ranking).
    decision_threshold : float, default=0.5
        Decision threshold.

    Returns
    -------
    float

    References
    ----------
    Geifman, Uziel & El-Yaniv (2019), "Bias-reduced uncertainty estimation for deep neural
    classifiers", ICLR.

    Examples
    --------
    >>> aurc([1, 0, 1], [0.99, 0.02, 0.4])  # the one error is the least confident
    0.1111111111111111
    """
    H, err = _sorted_errors(y, p, base, decision_threshold)
    return float(np.mean(_expected_risk_at_each_k(H, err))) if H.size else math.nan


def eaurc(y, p, *, base: float = 2, decision_threshold: float = 0.5) -> float:
    """Excess AURC: AURC minus that of an oracle ranking every error last.

    .. math:: \\text{E-AURC} = \\text{AURC} - \\frac1n\\sum_{k=1}^{n} \\frac{\\max(0,\\,k - n_{\\text{correct}})}{k}

    (the exact finite-sample oracle; Geifman et al. give its continuous approximation
    :math:`r + (1-r)\\ln(1-r)` for error rate :math:`r`). 0 for a perfect ranking.

    Parameters
    ----------
    y : array-like of shape (n,)
        Labels, 1 = melanoma.
    p : array-like of shape (n,)
        p(melanoma).
    base : float, default=2
        Entropy base.
    decision_threshold : float, default=0.5
        Decision threshold.

    Returns
    -------
    float

    Examples
    --------
    >>> eaurc([1, 0, 1], [0.99, 0.02, 0.4])
    0.0
    """
    H, err = _sorted_errors(y, p, base, decision_threshold)
    if not H.size:
        return math.nan
    n = H.size
    k = np.arange(1, n + 1)
    oracle = np.maximum(0, k - (n - err.sum())) / k
    return float(np.mean(_expected_risk_at_each_k(H, err)) - np.mean(oracle))


def selective_risk_at(y, p, coverages, *, base: float = 2, decision_threshold: float = 0.5) -> dict[str, np.ndarray]:
    """Selective risk at given target coverages (rejection by :func:`reject_by_coverage`).

    .. math:: \\text{risk}(c) = \\text{error rate on the } n - \\lfloor (1-c)\\,n \\rfloor
              \\text{ lowest-entropy samples}

    Parameters
    ----------
    y : array-like of shape (n,)
        Labels, 1 = melanoma.
    p : array-like of shape (n,)
        p(melanoma).
    coverages : float or array-like of float in [0, 1]
        Target coverages.
    base : float, default=2
        Entropy base.
    decision_threshold : float, default=0.5
        Decision threshold.

    Returns
    -------
    dict
        Arrays ``coverage`` (targets), ``achieved_coverage``, ``n_retained``, ``risk``
        (``nan`` where nothing is retained).

    Examples
    --------
    >>> r = selective_risk_at([1, 0, 1, 0], [0.99, 0.01, 0.6, 0.7], [0.5, 1.0])
    >>> r["risk"].tolist(), r["n_retained"].tolist()
    ([0.0, 0.25], [2, 4])
    """
    y, p = check_y_p(y, p)
    decision_threshold = check_threshold(decision_threshold)
    cov = np.atleast_1d(np.asarray(coverages, dtype=np.float64))
    if cov.ndim != 1 or not np.all(np.isfinite(cov)) or (cov.size and (cov.min() < 0 or cov.max() > 1)):
        raise ValueError("coverages must be numbers in [0, 1]")
    err = (p > decision_threshold) != (y == 1)
    n_ret = np.zeros(cov.size, dtype=np.int64)
    risk = np.full(cov.size, np.nan)
    for j, c in enumerate(cov):
        keep = reject_by_coverage(p, float(np.clip(1.0 - c, 0.0, 1.0)), base=base)
        n_ret[j] = keep.sum()
        if n_ret[j]:
            risk[j] = err[keep].mean()
    achieved = n_ret / y.size if y.size else np.full(cov.size, np.nan)
    return {"coverage": cov, "achieved_coverage": achieved, "n_retained": n_ret, "risk": risk}


# --------------------------------------------------------------------------------------------
# temperature scaling
# --------------------------------------------------------------------------------------------


def _check_logits(logits) -> np.ndarray:
    z = np.asarray(logits)
    if z.dtype.kind not in "biuf":
        raise TypeError(f"logits must be numeric, got dtype {z.dtype}")
    if z.ndim != 2 or z.shape[1] != 2:
        raise ValueError(f"logits must have shape (n, 2) (non-melanoma, melanoma), got shape {z.shape}")
    z = z.astype(np.float64)
    if not np.all(np.isfinite(z)):
        raise ValueError("logits contain NaN or infinite values")
    return z


def _check_temperature(T) -> float:
    if not isinstance(T, (int, float, np.integer, np.floating)) or not (math.isfinite(T) and T > 0):
        raise ValueError(f"T must be a finite number > 0, got {T!r}")
    return float(T)


def _nll_at(T: float, d: np.ndarray, y: np.ndarray) -> float:
    # p(melanoma) = sigmoid(d / T), d = z1 - z0; NLL = mean(softplus(-s * d / T)), s = +-1
    s = np.where(y == 1, 1.0, -1.0)
    return float(np.mean(np.logaddexp(0.0, -s * d / T)))


def fit_temperature(y_val, logits_val, bounds: tuple[float, float] = (0.05, 20.0), tol: float = 1e-7) -> float:
    """Fit the softmax temperature on validation logits by minimising the NLL.

    .. math:: T^* = \\arg\\min_{T} -\\frac1n\\sum_i \\log \\operatorname{softmax}(z_i / T)_{y_i}

    A golden-section search over :math:`\\log T` in ``bounds`` (the NLL is unimodal in
    :math:`T` for this one-parameter family). Temperature scaling changes no prediction at the
    0.5 threshold, only confidences.

    Parameters
    ----------
    y_val : array-like of shape (n,)
        Validation labels, 1 = melanoma.
    logits_val : array-like of shape (n, 2)
        Validation logits, columns (non-melanoma, melanoma).
    bounds : (float, float), default=(0.05, 20.0)
        Search interval for :math:`T`.
    tol : float, default=1e-7
        Tolerance on :math:`\\log T`.

    Returns
    -------
    float
        The temperature :math:`T^*` (> 1 softens over-confident predictions).

    References
    ----------
    Guo et al. (2017), "On calibration of modern neural networks", ICML, §4.2.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 4000)
    >>> d = np.where(y == 1, 1.0, -1.0) + rng.normal(size=4000)  # calibrated at T = 1/2 ...
    >>> logits = np.stack([np.zeros(4000), 4 * d], axis=1)        # ... so scaled by 4: T = 2
    >>> round(fit_temperature(y, logits), 1)
    2.0
    """
    z = _check_logits(logits_val)
    y = check_y(y_val)
    if len(y) != z.shape[0]:
        raise ValueError(f"y_val and logits_val have different lengths: {len(y)} != {z.shape[0]}")
    if y.size == 0:
        raise ValueError("fit_temperature needs at least one validation sample")
    lo, hi = bounds
    if not (0 < lo < hi and math.isfinite(hi)):
        raise ValueError(f"bounds must satisfy 0 < low < high < inf, got {bounds!r}")
    d = z[:, 1] - z[:, 0]
    f = lambda u: _nll_at(math.exp(u), d, y)  # noqa: E731
    a, b = math.log(lo), math.log(hi)
    g = (math.sqrt(5) - 1) / 2
    c, e = b - g * (b - a), a + g * (b - a)
    fc, fe = f(c), f(e)
    while b - a > tol:
        if fc <= fe:
            b, e, fe = e, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, e, fe
            e = a + g * (b - a)
            fe = f(e)
    return float(math.exp((a + b) / 2))


def apply_temperature(logits, T: float) -> np.ndarray:
    """p(melanoma) from logits divided by a temperature.

    .. math:: p_i = \\operatorname{softmax}(z_i / T)_1 = \\sigma\\bigl((z_{i1} - z_{i0}) / T\\bigr)

    Parameters
    ----------
    logits : array-like of shape (n, 2)
        Logits, columns (non-melanoma, melanoma).
    T : float
        Temperature > 0 (``T = 1`` gives the plain softmax).

    Returns
    -------
    ndarray of shape (n,)
        p(melanoma), ready for every function of :mod:`melanoma.evaluate.metrics` and this module.

    Examples
    --------
    >>> apply_temperature([[0.0, 2.0], [1.0, 1.0]], 2.0).round(4).tolist()
    [0.7311, 0.5]
    """
    z = _check_logits(logits)
    T = _check_temperature(T)
    d = (z[:, 1] - z[:, 0]) / T
    return np.exp(-np.logaddexp(0.0, -d))

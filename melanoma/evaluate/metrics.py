"""Classification and calibration metrics for melanoma detection, as pure functions over arrays.

Conventions (the whole package follows them):

* ``y`` holds the true labels, **1 = melanoma** (the positive class), 0 = non-melanoma;
  shape ``(n,)``, integers (or booleans / floats equal to 0 or 1).
* ``p`` holds the predicted probability of melanoma, ``p = p(melanoma)``, shape ``(n,)``,
  finite and in ``[0, 1]``.
* The predicted class is melanoma when ``p > threshold`` (default 0.5). With the default this
  is exactly ``argmax`` of the softmax ``[1 - p, p]`` with a tie going to non-melanoma, which is
  also what the ISIC challenge scorer does (``prediction.gt(0.5)``).
* Undefined values are explicit: a zero denominator gives ``nan``; AUC with only one class
  present gives ``nan`` and a :class:`MetricUndefinedWarning` saying why. Empty inputs are
  allowed (every rate is then ``nan``), so that "everything was rejected" never crashes.

Every ``*_curve`` function returns numbers; :mod:`melanoma.report.plots` draws them.

Calibration binning follows scikit-learn's ``calibration_curve`` and Guo et al. (2017): with
``M`` equal-width bins the bin of a confidence ``c`` is ``(b_{m-1}, b_m]`` (the first bin also
holds ``c = 0``), so ``c = 1`` falls in the last bin. torchmetrics bins ``[b_{m-1}, b_m)`` and
puts ``c = 1`` in a bin of its own; the two agree unless confidences sit exactly on a bin edge.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable

import numpy as np

__all__ = [
    "MetricUndefinedWarning",
    "predict",
    "confusion_counts",
    "precision",
    "sensitivity",
    "specificity",
    "f1",
    "accuracy",
    "balanced_accuracy",
    "macro_precision",
    "macro_f1",
    "auc",
    "brier",
    "nll",
    "reliability_curve",
    "ece",
    "adaptive_ece",
    "mce",
    "bootstrap_ci",
    "classification_report",
    "REPORT_METRICS",
]


class MetricUndefinedWarning(UserWarning):
    """A metric is undefined for this input (e.g. AUC with one class) and was set to NaN."""


#: Float-valued metrics of :func:`classification_report` (all in [0, 1] or NaN, except ``nll``).
REPORT_METRICS = (
    "precision",
    "sensitivity",
    "specificity",
    "f1",
    "accuracy",
    "balanced_accuracy",
    "macro_precision",
    "macro_f1",
    "auc",
    "ece",
    "adaptive_ece",
    "mce",
    "brier",
    "nll",
)

_CONFIDENCES = ("top-label", "positive")
_STRATEGIES = ("uniform", "quantile")


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


def check_p(p) -> np.ndarray:
    """Validate p(melanoma): numeric, shape (n,), finite, in [0, 1]; return it as float64."""
    p = np.asarray(p)
    if p.dtype.kind not in "biuf":
        raise TypeError(f"p must hold numeric probabilities, got dtype {p.dtype}")
    if p.ndim != 1:
        raise ValueError(f"p must be a 1-D array of p(melanoma) with shape (n,), got shape {p.shape}")
    p = p.astype(np.float64)
    if not np.all(np.isfinite(p)):
        raise ValueError("p contains NaN or infinite values")
    if p.size and (p.min() < 0 or p.max() > 1):
        raise ValueError("p has values outside [0, 1]")
    return p


def check_y(y) -> np.ndarray:
    """Validate labels: numeric, shape (n,), values in {0, 1}; return them as int64."""
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise TypeError(f"y must hold 0/1 labels, got dtype {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"y must be a 1-D array of 0/1 labels with shape (n,), got shape {y.shape}")
    bad = ~((y == 0) | (y == 1))
    if np.any(bad):
        raise ValueError(f"y has labels other than 0 and 1: {np.unique(y[bad]).tolist()}")
    return y.astype(np.int64)


def check_y_p(y, p) -> tuple[np.ndarray, np.ndarray]:
    """Validate labels and p(melanoma); return ``(y as int64, p as float64)``."""
    y = check_y(y)
    p = check_p(p)
    if len(y) != len(p):
        raise ValueError(f"y and p have different lengths: {len(y)} != {len(p)}")
    return y, p


def check_threshold(threshold) -> float:
    if not isinstance(threshold, (int, float, np.integer, np.floating)) or not (0 <= threshold <= 1):
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
    return float(threshold)


def check_bins(n_bins, strategy, confidence) -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    if strategy not in _STRATEGIES:
        raise ValueError(f"strategy must be one of {_STRATEGIES}, got {strategy!r}")
    if confidence not in _CONFIDENCES:
        raise ValueError(f"confidence must be one of {_CONFIDENCES}, got {confidence!r}")


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else math.nan


# --------------------------------------------------------------------------------------------
# classification
# --------------------------------------------------------------------------------------------


def predict(p, threshold: float = 0.5) -> np.ndarray:
    """Predicted labels, melanoma (1) where ``p > threshold``.

    .. math:: \\hat y_i = [\\,p_i > t\\,]

    Parameters
    ----------
    p : array-like of shape (n,)
        Predicted probability of melanoma, in [0, 1].
    threshold : float, default=0.5
        Decision threshold ``t``. With 0.5 this is the softmax argmax, ties to non-melanoma.

    Returns
    -------
    ndarray of shape (n,), dtype int64

    Examples
    --------
    >>> predict([0.2, 0.5, 0.51]).tolist()
    [0, 0, 1]
    """
    return (check_p(p) > check_threshold(threshold)).astype(np.int64)


def confusion_counts(y, p, threshold: float = 0.5) -> dict[str, int]:
    """True/false positives/negatives with melanoma as the positive class.

    .. math:: TP = \\sum_i [y_i = 1][\\hat y_i = 1],\\; FP = \\sum_i [y_i = 0][\\hat y_i = 1],\\;
              TN = \\sum_i [y_i = 0][\\hat y_i = 0],\\; FN = \\sum_i [y_i = 1][\\hat y_i = 0]

    with :math:`\\hat y_i = [p_i > t]`.

    Parameters
    ----------
    y : array-like of shape (n,)
        True labels, 1 = melanoma.
    p : array-like of shape (n,)
        Predicted p(melanoma).
    threshold : float, default=0.5
        Decision threshold.

    Returns
    -------
    dict
        ``{"tp": int, "fp": int, "tn": int, "fn": int}``.

    Examples
    --------
    >>> confusion_counts([1, 1, 0, 0], [0.9, 0.2, 0.7, 0.1])
    {'tp': 1, 'fp': 1, 'tn': 1, 'fn': 1}
    """
    y, p = check_y_p(y, p)
    return confusion_counts_unchecked(y, p > check_threshold(threshold))


def confusion_counts_unchecked(y: np.ndarray, yhat: np.ndarray) -> dict[str, int]:
    """:func:`confusion_counts` of checked labels ``y`` and boolean predictions ``yhat`` (no checks)."""
    pos = y == 1
    tp = int(np.count_nonzero(pos & yhat))
    fn = int(np.count_nonzero(pos & ~yhat))
    fp = int(np.count_nonzero(~pos & yhat))
    tn = int(np.count_nonzero(~pos & ~yhat))
    return {"tp": tp, "fp": fp, "tn": tn, "fn": fn}


def precision(y, p, threshold: float = 0.5) -> float:
    """Precision (positive predictive value) for melanoma.

    .. math:: \\text{precision} = \\frac{TP}{TP + FP}

    ``nan`` when nothing is predicted melanoma (scikit-learn would warn and return 0; the ISIC
    scorer returns 1).

    Parameters
    ----------
    y : array-like of shape (n,)
        True labels, 1 = melanoma.
    p : array-like of shape (n,)
        Predicted p(melanoma).
    threshold : float, default=0.5
        Decision threshold; melanoma is predicted where ``p > threshold``.

    Returns
    -------
    float

    Examples
    --------
    >>> precision([1, 1, 0, 0], [0.9, 0.8, 0.7, 0.1])
    0.6666666666666666
    """
    c = confusion_counts(y, p, threshold)
    return _ratio(c["tp"], c["tp"] + c["fp"])


def sensitivity(y, p, threshold: float = 0.5) -> float:
    """Sensitivity (recall, true positive rate) for melanoma.

    .. math:: \\text{sensitivity} = \\frac{TP}{TP + FN}

    ``nan`` when there is no melanoma in ``y``.

    Parameters
    ----------
    y : array-like of shape (n,)
        True labels, 1 = melanoma.
    p : array-like of shape (n,)
        Predicted p(melanoma).
    threshold : float, default=0.5
        Decision threshold.

    Returns
    -------
    float

    Examples
    --------
    >>> sensitivity([1, 1, 0, 0], [0.9, 0.2, 0.7, 0.1])
    0.5
    """
    c = confusion_counts(y, p, threshold)
    return _ratio(c["tp"], c["tp"] + c["fn"])


def specificity(y, p, threshold: float = 0.5) -> float:
    """Specificity (true negative rate).

    .. math:: \\text{specificity} = \\frac{TN}{TN + FP}

    ``nan`` when there is no non-melanoma in ``y``.

    Parameters
    ----------
    y : array-like of shape (n,)
        True labels, 1 = melanoma.
    p : array-like of shape (n,)
        Predicted p(melanoma).
    threshold : float, default=0.5
        Decision threshold.

    Returns
    -------
    float

    Examples
    --------
    >>> specificity([1, 0, 0, 0], [0.9, 0.2, 0.7, 0.1])
    0.6666666666666666
    """
    c = confusion_counts(y, p, threshold)
    return _ratio(c["tn"], c["tn"] + c["fp"])


def f1(y, p, threshold: float = 0.5) -> float:
    """F1 score for melanoma, the harmonic mean of precision and sensitivity.

    .. math:: F_1 = \\frac{2\\,TP}{2\\,TP + FP + FN}

    ``nan`` when ``TP + FP + FN = 0``.

    Parameters
    ----------
    y : array-like of shape (n,)
        True labels, 1 = melanoma.
    p : array-like of shape (n,)
        Predicted p(melanoma).
    threshold : float, default=0.5
        Decision threshold.

    Returns
    -------
    float

    Examples
    --------
    >>> f1([1, 1, 0, 0], [0.9, 0.2, 0.7, 0.1])
    0.5
    """
    c = confusion_counts(y, p, threshold)
    return _ratio(2 * c["tp"], 2 * c["tp"] + c["fp"] + c["fn"])


def accuracy(y, p, threshold: float = 0.5) -> float:
    """Fraction of correct predictions.

    .. math:: \\text{accuracy} = \\frac{TP + TN}{n}

    ``nan`` for an empty input.

    Parameters
    ----------
    y : array-like of shape (n,)
        True labels, 1 = melanoma.
    p : array-like of shape (n,)
        Predicted p(melanoma).
    threshold : float, default=0.5
        Decision threshold.

    Returns
    -------
    float

    Examples
    --------
    >>> accuracy([1, 1, 0, 0], [0.9, 0.2, 0.7, 0.1])
    0.5
    """
    c = confusion_counts(y, p, threshold)
    return _ratio(c["tp"] + c["tn"], sum(c.values()))


def balanced_accuracy(y, p, threshold: float = 0.5) -> float:
    """Mean of sensitivity and specificity.

    .. math:: \\text{balanced accuracy} = \\tfrac12\\left(\\frac{TP}{TP+FN} + \\frac{TN}{TN+FP}\\right)

    ``nan`` when either class is absent from ``y`` (scikit-learn instead averages over the
    classes present, with a warning).

    Parameters
    ----------
    y : array-like of shape (n,)
        True labels, 1 = melanoma.
    p : array-like of shape (n,)
        Predicted p(melanoma).
    threshold : float, default=0.5
        Decision threshold.

    Returns
    -------
    float

    Examples
    --------
    >>> balanced_accuracy([1, 0, 0, 0], [0.9, 0.2, 0.7, 0.1])
    0.8333333333333333
    """
    c = confusion_counts(y, p, threshold)
    return _balanced(c)


def _balanced(c: dict[str, int]) -> float:
    return 0.5 * (_ratio(c["tp"], c["tp"] + c["fn"]) + _ratio(c["tn"], c["tn"] + c["fp"]))


def macro_precision(y, p, threshold: float = 0.5) -> float:
    """Precision averaged over the two classes (what the seed code reported).

    .. math:: \\tfrac12\\left(\\frac{TP}{TP+FP} + \\frac{TN}{TN+FN}\\right)

    i.e. the mean of the melanoma precision and the non-melanoma precision (negative predictive
    value). ``nan`` when either class is never predicted.

    Parameters
    ----------
    y : array-like of shape (n,)
        True labels, 1 = melanoma.
    p : array-like of shape (n,)
        Predicted p(melanoma).
    threshold : float, default=0.5
        Decision threshold.

    Returns
    -------
    float

    Examples
    --------
    >>> macro_precision([1, 1, 0, 0], [0.9, 0.8, 0.7, 0.1])
    0.8333333333333333
    """
    return _macro_precision(confusion_counts(y, p, threshold))


def _macro_precision(c: dict[str, int]) -> float:
    return 0.5 * (_ratio(c["tp"], c["tp"] + c["fp"]) + _ratio(c["tn"], c["tn"] + c["fn"]))


def macro_f1(y, p, threshold: float = 0.5) -> float:
    """F1 averaged over the two classes (what the seed code reported).

    .. math:: \\tfrac12\\left(\\frac{2TP}{2TP+FP+FN} + \\frac{2TN}{2TN+FN+FP}\\right)

    ``nan`` when either per-class F1 is undefined.

    Parameters
    ----------
    y : array-like of shape (n,)
        True labels, 1 = melanoma.
    p : array-like of shape (n,)
        Predicted p(melanoma).
    threshold : float, default=0.5
        Decision threshold.

    Returns
    -------
    float

    Examples
    --------
    >>> macro_f1([1, 1, 0, 0], [0.9, 0.8, 0.7, 0.1])
    0.7333333333333334
    """
    return _macro_f1(confusion_counts(y, p, threshold))


def _macro_f1(c: dict[str, int]) -> float:
    f_pos = _ratio(2 * c["tp"], 2 * c["tp"] + c["fp"] + c["fn"])
    f_neg = _ratio(2 * c["tn"], 2 * c["tn"] + c["fp"] + c["fn"])
    return 0.5 * (f_pos + f_neg)


def auc(y, p) -> float:
    """Area under the ROC curve, melanoma positive (the Mann–Whitney statistic).

    .. math:: \\text{AUC} = \\frac{1}{n_1 n_0} \\sum_{i: y_i = 1} \\sum_{j: y_j = 0}
              \\left([p_i > p_j] + \\tfrac12 [p_i = p_j]\\right)

    Threshold-free. With only one class present (or no samples) the AUC is undefined: the
    function returns ``nan`` and emits a :class:`MetricUndefinedWarning` saying why.

    Parameters
    ----------
    y : array-like of shape (n,)
        True labels, 1 = melanoma.
    p : array-like of shape (n,)
        Predicted p(melanoma) (any score that ranks melanoma higher works).

    Returns
    -------
    float

    References
    ----------
    Hanley & McNeil (1982), "The meaning and use of the area under a receiver operating
    characteristic (ROC) curve", Radiology 143(1).

    Examples
    --------
    >>> auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    y, p = check_y_p(y, p)
    return _auc(y, p, warn=True)


def _auc(y: np.ndarray, p: np.ndarray, warn: bool, stacklevel: int = 3) -> float:
    pos = p[y == 1]
    neg = np.sort(p[y == 0])
    if pos.size == 0 or neg.size == 0:
        if warn:
            why = (
                "no samples"
                if y.size == 0
                else f"only one class present (n_melanoma={pos.size}, n_non_melanoma={neg.size})"
            )
            warnings.warn(f"AUC is undefined: {why}; returning nan", MetricUndefinedWarning, stacklevel=stacklevel)
        return math.nan
    below = np.searchsorted(neg, pos, side="left")
    upto = np.searchsorted(neg, pos, side="right")
    return float((below.sum() + 0.5 * (upto - below).sum()) / (pos.size * neg.size))


# --------------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------------


def brier(y, p) -> float:
    """Brier score of p(melanoma) (the paper's Eq. 3); lower is better.

    .. math:: \\text{Brier} = \\frac1n \\sum_{i=1}^n (p_i - y_i)^2

    ``nan`` for an empty input.

    Parameters
    ----------
    y : array-like of shape (n,)
        True labels, 1 = melanoma.
    p : array-like of shape (n,)
        Predicted p(melanoma).

    Returns
    -------
    float

    References
    ----------
    Brier (1950), "Verification of forecasts expressed in terms of probability".

    Examples
    --------
    >>> brier([1, 0], [0.8, 0.4])
    0.1
    """
    y, p = check_y_p(y, p)
    return brier_unchecked(y, p)


def brier_unchecked(y: np.ndarray, p: np.ndarray) -> float:
    """:func:`brier` of checked arrays (no checks)."""
    return float(np.mean((p - y) ** 2)) if y.size else math.nan


def nll(y, p) -> float:
    """Negative log-likelihood (log loss, natural log) of the labels under p(melanoma).

    .. math:: \\text{NLL} = -\\frac1n \\sum_{i=1}^n \\left[y_i \\ln p_i + (1-y_i) \\ln(1-p_i)\\right]

    ``p`` and ``1 - p`` are clipped to ``[eps, 1 - eps]`` (``eps`` = float64 machine epsilon) so
    a confident mistake costs about 36 nats instead of infinity, as in scikit-learn's
    ``log_loss``. ``nan`` for an empty input.

    Parameters
    ----------
    y : array-like of shape (n,)
        True labels, 1 = melanoma.
    p : array-like of shape (n,)
        Predicted p(melanoma).

    Returns
    -------
    float

    Examples
    --------
    >>> round(nll([1, 0], [0.5, 0.5]), 6)
    0.693147
    """
    y, p = check_y_p(y, p)
    return _nll(y, p)


def _nll(y: np.ndarray, p: np.ndarray) -> float:
    if not y.size:
        return math.nan
    eps = np.finfo(np.float64).eps
    q = np.clip(np.where(y == 1, p, 1.0 - p), eps, 1.0 - eps)
    return float(-np.mean(np.log(q)))


def _conf_and_hit(y: np.ndarray, p: np.ndarray, confidence: str) -> tuple[np.ndarray, np.ndarray]:
    """Confidence and outcome per sample for the chosen calibration view."""
    if confidence == "top-label":
        pred = p > 0.5
        return np.where(pred, p, 1.0 - p), (pred == (y == 1)).astype(np.float64)
    return p, y.astype(np.float64)


def _bin_edges(conf: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    if strategy == "uniform":
        return np.linspace(0.0, 1.0, n_bins + 1)
    return np.percentile(conf, np.linspace(0.0, 100.0, n_bins + 1))


def _binned(y, p, n_bins, strategy, confidence):
    """Per-bin (lower, upper, mean confidence, accuracy, count) over non-empty bins."""
    conf, hit = _conf_and_hit(y, p, confidence)
    if conf.size == 0:
        e = np.empty(0)
        return e, e, e, e, np.empty(0, dtype=np.int64)
    edges = _bin_edges(conf, n_bins, strategy)
    ids = np.searchsorted(edges[1:-1], conf, side="left")  # bins (b_{m-1}, b_m], first closed
    count = np.bincount(ids, minlength=n_bins)
    sconf = np.bincount(ids, weights=conf, minlength=n_bins)
    shit = np.bincount(ids, weights=hit, minlength=n_bins)
    nz = count > 0
    return edges[:-1][nz], edges[1:][nz], sconf[nz] / count[nz], shit[nz] / count[nz], count[nz]


def reliability_curve(
    y, p, n_bins: int = 10, strategy: str = "uniform", confidence: str = "top-label"
) -> dict[str, np.ndarray]:
    """Reliability-diagram data: per-bin mean confidence, accuracy and count.

    For each non-empty bin :math:`B_m` (empty bins are skipped)

    .. math:: \\text{conf}(B_m) = \\frac{1}{|B_m|}\\sum_{i\\in B_m} c_i,\\qquad
              \\text{acc}(B_m) = \\frac{1}{|B_m|}\\sum_{i\\in B_m} a_i

    where, for ``confidence="top-label"`` (the paper's ECE, Guo et al. 2017),
    :math:`c_i = \\max(p_i, 1-p_i)` is the max softmax and :math:`a_i = [\\hat y_i = y_i]` with
    :math:`\\hat y_i = [p_i > 0.5]`; for ``confidence="positive"`` (a calibration curve of
    p(melanoma), as scikit-learn's ``calibration_curve`` and torchmetrics' *binary* calibration
    error), :math:`c_i = p_i` and :math:`a_i = y_i` (the fraction of melanoma in the bin).

    Bins are ``(b_{m-1}, b_m]`` (first one closed); ``strategy="uniform"`` uses equal-width edges
    on [0, 1], ``strategy="quantile"`` edges at the quantiles of the confidences (equal mass,
    duplicate edges give empty bins, which are skipped). This matches
    ``sklearn.calibration.calibration_curve`` exactly for ``confidence="positive"``.

    Parameters
    ----------
    y : array-like of shape (n,)
        True labels, 1 = melanoma.
    p : array-like of shape (n,)
        Predicted p(melanoma).
    n_bins : int, default=10
        Number of bins ``M``.
    strategy : {"uniform", "quantile"}, default="uniform"
        Equal-width or equal-mass bins.
    confidence : {"top-label", "positive"}, default="top-label"
        Which confidence is binned (see above).

    Returns
    -------
    dict
        ``bin_lower``, ``bin_upper``, ``confidence``, ``accuracy`` (float arrays) and ``count``
        (int array), one entry per non-empty bin, in increasing confidence; plus ``n_bins``,
        ``strategy`` and ``kind`` (the ``confidence`` argument).

    References
    ----------
    Guo, Pleiss, Sun & Weinberger (2017), "On calibration of modern neural networks", ICML.

    Examples
    --------
    Top-label confidences are 0.9, 0.7, 0.8, 0.9 (the 0.7 one is wrong):

    >>> r = reliability_curve([0, 1, 1, 1], [0.1, 0.3, 0.8, 0.9], n_bins=5)
    >>> r["confidence"].tolist(), r["accuracy"].tolist(), r["count"].tolist()
    ([0.75, 0.9], [0.5, 1.0], [2, 2])

    The calibration curve of p(melanoma) itself:

    >>> r = reliability_curve([0, 1, 1, 1], [0.1, 0.3, 0.8, 0.9], n_bins=2, confidence="positive")
    >>> r["accuracy"].tolist(), r["count"].tolist()
    ([0.5, 1.0], [2, 2])
    """
    y, p = check_y_p(y, p)
    check_bins(n_bins, strategy, confidence)
    lo, hi, conf, acc, count = _binned(y, p, n_bins, strategy, confidence)
    return {
        "bin_lower": lo,
        "bin_upper": hi,
        "confidence": conf,
        "accuracy": acc,
        "count": count,
        "n_bins": int(n_bins),
        "strategy": strategy,
        "kind": confidence,
    }


def ece_unchecked(y, p, n_bins, strategy, confidence) -> float:
    """:func:`ece` of checked arrays and settings (no checks)."""
    if not y.size:
        return math.nan
    _, _, conf, acc, count = _binned(y, p, n_bins, strategy, confidence)
    return float(np.sum(count * np.abs(acc - conf)) / y.size)


def _mce(y, p, n_bins, strategy, confidence) -> float:
    if not y.size:
        return math.nan
    _, _, conf, acc, _ = _binned(y, p, n_bins, strategy, confidence)
    return float(np.max(np.abs(acc - conf)))


def ece(y, p, n_bins: int = 10, strategy: str = "uniform", confidence: str = "top-label") -> float:
    """Expected calibration error (the paper's Eq. 2); lower is better.

    .. math:: \\text{ECE} = \\sum_{m=1}^{M} \\frac{|B_m|}{n}\\,\\bigl|\\text{acc}(B_m) - \\text{conf}(B_m)\\bigr|

    with ``M`` bins and :math:`\\text{acc}`, :math:`\\text{conf}` as in
    :func:`reliability_curve`. The default (10 equal-width bins, top-label confidence = max
    softmax) is the paper's. ``confidence="top-label"`` equals torchmetrics'
    ``multiclass_calibration_error`` on ``[1 - p, p]``; ``confidence="positive"`` equals
    torchmetrics' ``binary_calibration_error`` on ``p`` (which bins p(melanoma) itself, not the
    max softmax) — in both cases up to confidences lying exactly on a bin edge, see the module
    notes. ``nan`` for an empty input.

    Parameters
    ----------
    y : array-like of shape (n,)
        True labels, 1 = melanoma.
    p : array-like of shape (n,)
        Predicted p(melanoma).
    n_bins : int, default=10
        Number of bins ``M``.
    strategy : {"uniform", "quantile"}, default="uniform"
        Equal-width bins (the paper) or equal-mass bins (see :func:`adaptive_ece`).
    confidence : {"top-label", "positive"}, default="top-label"
        Which confidence is calibrated.

    Returns
    -------
    float

    References
    ----------
    Naeini, Cooper & Hauskrecht (2015), "Obtaining well calibrated probabilities using Bayesian
    binning", AAAI; Guo et al. (2017), ICML.

    Examples
    --------
    A perfectly calibrated toy: in the 0.8-confidence bin, 4 of 5 predictions are right.

    >>> ece([1, 1, 1, 1, 0], [0.8, 0.8, 0.8, 0.8, 0.8])
    0.0
    >>> round(ece([1, 0], [0.9, 0.6]), 6)
    0.35
    """
    y, p = check_y_p(y, p)
    check_bins(n_bins, strategy, confidence)
    return ece_unchecked(y, p, n_bins, strategy, confidence)


def adaptive_ece(y, p, n_bins: int = 10, confidence: str = "top-label") -> float:
    """Adaptive (equal-mass) ECE: :func:`ece` with bin edges at confidence quantiles.

    .. math:: \\text{ECE}_{\\text{adaptive}} = \\sum_{m=1}^{M} \\frac{|B_m|}{n}\\,
              \\bigl|\\text{acc}(B_m) - \\text{conf}(B_m)\\bigr|,\\quad
              b_m = \\text{quantile}_{m/M}(c)

    so each bin holds about ``n / M`` samples (ties can make bins unequal or empty).

    Parameters
    ----------
    y : array-like of shape (n,)
        True labels, 1 = melanoma.
    p : array-like of shape (n,)
        Predicted p(melanoma).
    n_bins : int, default=10
        Number of bins ``M``.
    confidence : {"top-label", "positive"}, default="top-label"
        Which confidence is calibrated.

    Returns
    -------
    float

    References
    ----------
    Nixon et al. (2019), "Measuring calibration in deep learning", CVPR Workshops.

    Examples
    --------
    >>> round(adaptive_ece([1, 0, 1, 1], [0.9, 0.6, 0.7, 0.8], n_bins=2), 6)
    0.15
    """
    return ece(y, p, n_bins=n_bins, strategy="quantile", confidence=confidence)


def mce(y, p, n_bins: int = 10, strategy: str = "uniform", confidence: str = "top-label") -> float:
    """Maximum calibration error over the non-empty bins; lower is better.

    .. math:: \\text{MCE} = \\max_{m:\\,|B_m|>0} \\bigl|\\text{acc}(B_m) - \\text{conf}(B_m)\\bigr|

    Equals torchmetrics' calibration error with ``norm="max"`` (same variants as :func:`ece`).
    ``nan`` for an empty input.

    Parameters
    ----------
    y : array-like of shape (n,)
        True labels, 1 = melanoma.
    p : array-like of shape (n,)
        Predicted p(melanoma).
    n_bins : int, default=10
        Number of bins ``M``.
    strategy : {"uniform", "quantile"}, default="uniform"
        Equal-width or equal-mass bins.
    confidence : {"top-label", "positive"}, default="top-label"
        Which confidence is calibrated.

    Returns
    -------
    float

    Examples
    --------
    >>> round(mce([1, 0], [0.9, 0.6]), 6)
    0.6
    """
    y, p = check_y_p(y, p)
    check_bins(n_bins, strategy, confidence)
    return _mce(y, p, n_bins, strategy, confidence)


# --------------------------------------------------------------------------------------------
# bootstrap and report
# --------------------------------------------------------------------------------------------


def check_bootstrap(B, alpha) -> None:
    if isinstance(B, bool) or not isinstance(B, (int, np.integer)) or B < 1:
        raise ValueError(f"B must be a positive integer, got {B!r}")
    if not isinstance(alpha, (int, float, np.floating)) or not (0 < alpha < 1):
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")


def _percentile_ci(draws: np.ndarray, alpha: float) -> tuple[float, float, int]:
    valid = draws[np.isfinite(draws)]
    if valid.size == 0:
        return math.nan, math.nan, 0
    lo, hi = np.quantile(valid, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi), int(valid.size)


def _resample_indices(n: int, B: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(B, n)) if n else np.empty((B, 0), dtype=np.int64)


def bootstrap_ci(
    metric_fn: Callable[[np.ndarray, np.ndarray], float],
    y,
    p,
    B: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, float | int]:
    """Percentile bootstrap confidence interval for any metric ``metric_fn(y, p) -> float``.

    Draw ``B`` resamples of the ``n`` (y, p) pairs with replacement (seeded), evaluate the
    metric on each, and take the :math:`\\alpha/2` and :math:`1-\\alpha/2` quantiles of the
    finite draws:

    .. math:: \\text{CI}_{1-\\alpha} = \\bigl[\\,q_{\\alpha/2}(\\theta^*_b),\\ q_{1-\\alpha/2}(\\theta^*_b)\\,\\bigr]

    Draws where the metric is undefined (``nan``, e.g. AUC on a one-class resample) are
    dropped and counted; warnings raised inside the draws are silenced. If no draw is finite
    the bounds are ``nan``.

    Parameters
    ----------
    metric_fn : callable
        ``metric_fn(y, p)`` returning a float, e.g. :func:`auc` or
        ``functools.partial(ece, n_bins=15)``.
    y : array-like of shape (n,)
        True labels, 1 = melanoma.
    p : array-like of shape (n,)
        Predicted p(melanoma).
    B : int, default=1000
        Number of bootstrap resamples.
    alpha : float, default=0.05
        One minus the confidence level (0.05 gives a 95 % interval).
    seed : int, default=0
        Seed of ``numpy.random.default_rng``; the same seed gives the same interval.

    Returns
    -------
    dict
        ``estimate`` (the metric on the full data), ``low``, ``high``, ``B``, ``alpha``,
        ``seed`` and ``n_valid`` (number of finite draws).

    References
    ----------
    Efron & Tibshirani (1993), *An Introduction to the Bootstrap*, ch. 13.

    Examples
    --------
    >>> ci = bootstrap_ci(accuracy, [1, 0, 1, 0], [0.9, 0.1, 0.8, 0.7], B=200)
    >>> ci["estimate"], 0 <= ci["low"] <= ci["high"] <= 1, ci["n_valid"]
    (0.75, True, 200)
    """
    y, p = check_y_p(y, p)
    check_bootstrap(B, alpha)
    estimate = float(metric_fn(y, p))
    idx = _resample_indices(y.size, B, seed)
    draws = np.empty(B)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for b in range(B):
            draws[b] = metric_fn(y[idx[b]], p[idx[b]])
    lo, hi, n_valid = _percentile_ci(draws, alpha)
    return {
        "estimate": estimate,
        "low": lo,
        "high": hi,
        "B": int(B),
        "alpha": float(alpha),
        "seed": int(seed),
        "n_valid": n_valid,
    }


def _report(y: np.ndarray, p: np.ndarray, threshold: float, n_bins: int, warn: bool) -> dict:
    c = confusion_counts_unchecked(y, p > threshold)
    return {
        "precision": _ratio(c["tp"], c["tp"] + c["fp"]),
        "sensitivity": _ratio(c["tp"], c["tp"] + c["fn"]),
        "specificity": _ratio(c["tn"], c["tn"] + c["fp"]),
        "f1": _ratio(2 * c["tp"], 2 * c["tp"] + c["fp"] + c["fn"]),
        "accuracy": _ratio(c["tp"] + c["tn"], y.size),
        "balanced_accuracy": _balanced(c),
        "macro_precision": _macro_precision(c),
        "macro_f1": _macro_f1(c),
        "auc": _auc(y, p, warn=warn, stacklevel=4),
        "ece": ece_unchecked(y, p, n_bins, "uniform", "top-label"),
        "adaptive_ece": ece_unchecked(y, p, n_bins, "quantile", "top-label"),
        "mce": _mce(y, p, n_bins, "uniform", "top-label"),
        "brier": brier_unchecked(y, p),
        "nll": _nll(y, p),
        "n": int(y.size),
        "n_melanoma": int(np.count_nonzero(y == 1)),
        **c,
    }


def classification_report(
    y,
    p,
    threshold: float = 0.5,
    n_bins: int = 10,
    ci: bool = False,
    B: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict:
    """Every classification and calibration metric of one evaluation set, as a flat dict.

    The metrics are those of the functions of this module with their defaults (melanoma
    positive, predicted where ``p > threshold``; ECE/MCE with ``n_bins`` equal-width bins on the
    top-label confidence; adaptive ECE with ``n_bins`` equal-mass bins; Brier and NLL on
    p(melanoma)). With ``ci=True`` a paired percentile bootstrap (the same ``B`` resamples for
    every metric, see :func:`bootstrap_ci`) adds confidence intervals.

    Parameters
    ----------
    y : array-like of shape (n,)
        True labels, 1 = melanoma.
    p : array-like of shape (n,)
        Predicted p(melanoma).
    threshold : float, default=0.5
        Decision threshold for the thresholded metrics.
    n_bins : int, default=10
        Bins for ECE, adaptive ECE and MCE.
    ci : bool, default=False
        Add bootstrap confidence intervals.
    B : int, default=1000
        Bootstrap resamples (with ``ci=True``).
    alpha : float, default=0.05
        One minus the confidence level.
    seed : int, default=0
        Bootstrap seed.

    Returns
    -------
    dict
        Floats ``precision, sensitivity, specificity, f1, accuracy, balanced_accuracy,
        macro_precision, macro_f1, auc, ece, adaptive_ece, mce, brier, nll`` (see
        :data:`REPORT_METRICS`; ``nan`` where undefined), ints ``n, n_melanoma, tp, fp, tn,
        fn``, and ``threshold``, ``n_bins``. With ``ci=True`` also ``ci``: ``{metric: {"low",
        "high", "n_valid"}}`` for every float metric, and ``ci_params``: ``{"B", "alpha",
        "seed", "method": "percentile"}``.

    Examples
    --------
    >>> r = classification_report([1, 1, 0, 0], [0.9, 0.2, 0.7, 0.1])
    >>> r["accuracy"], r["auc"], r["n"], r["fn"]
    (0.5, 0.75, 4, 1)
    """
    y, p = check_y_p(y, p)
    threshold = check_threshold(threshold)
    check_bins(n_bins, "uniform", "top-label")
    out = _report(y, p, threshold, n_bins, warn=True)
    out["threshold"] = threshold
    out["n_bins"] = int(n_bins)
    if ci:
        check_bootstrap(B, alpha)
        idx = _resample_indices(y.size, B, seed)
        draws = {k: np.empty(B) for k in REPORT_METRICS}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for b in range(B):
                r = _report(y[idx[b]], p[idx[b]], threshold, n_bins, warn=False)
                for k in REPORT_METRICS:
                    draws[k][b] = r[k]
        out["ci"] = {}
        for k in REPORT_METRICS:
            lo, hi, n_valid = _percentile_ci(draws[k], alpha)
            out["ci"][k] = {"low": lo, "high": hi, "n_valid": n_valid}
        out["ci_params"] = {"B": int(B), "alpha": float(alpha), "seed": int(seed), "method": "percentile"}
    return out

"""Rejection with a guarantee: conformal prediction sets and selective guaranteed risk.

The paper's entropy rule promises nothing: a threshold chosen on one validation split lands on
test wherever the test distribution puts it. Two rules that do promise something, both fitted on a
calibration split (the evaluation set's **validation** split, never test):

**Class-conditional (Mondrian) split conformal sets** (:func:`fit_conformal`). With the hinge
non-conformity score :math:`s_c(x) = 1 - \\hat p_c(x)` and, for each class c, the calibration
scores of the images whose label is c, the non-smoothed conformal p-value of class c for a new
image is :math:`\\pi_c(x) = (|\\{i: y_i = c,\\ s_i \\ge s_c(x)\\}| + 1) / (n_c + 1)`, and the set is
:math:`\\Gamma(x) = \\{c : \\pi_c(x) \\ge \\alpha\\}`. If calibration and test images of class c are
exchangeable, :math:`P(c \\in \\Gamma(X) \\mid Y = c) \\ge 1 - \\alpha` for each class — in
particular **at most α of melanomas get a set without "melanoma"**, so at most α of melanomas are
given a confident benign label (Vovk et al. 2005; Shafer & Vovk 2008; Angelopoulos & Bates 2021).
A prediction is confident when its set holds exactly one class, "Uncertain" when it holds both or
none. The p-values and sets come from `crepes` (Boström 2024, :class:`crepes.ConformalClassifier`,
Mondrian categories = labels); the set is equivalent to one score threshold per class,
:math:`c \\in \\Gamma(x) \\iff \\hat p_c(x) \\ge 1 - q_c` (:attr:`ConformalSets.q`), which is what the
web page needs (``model.json``'s ``conformal``).

The guarantee is marginal over calibration and test draws. Given one calibration split of
:math:`n_c` images, the coverage on an infinite test set is :math:`\\mathrm{Beta}(k, n_c + 1 - k)`
distributed, :math:`k = \\lceil (n_c + 1)(1 - \\alpha) \\rceil`, and the fraction covered among
:math:`m` test images is Beta-Binomial; :func:`coverage_slack` gives the finite-sample slack
:math:`\\varepsilon` such that the observed coverage is at least :math:`1 - \\alpha - \\varepsilon`
with probability :math:`1 - \\delta` (Vovk 2012; Angelopoulos & Bates 2021, §C). It does **not**
hold when test differs from calibration (an external set calibrated on another release).

**Selective guaranteed risk** (:func:`fit_sgr`; Geifman & El-Yaniv 2017). Among entropy thresholds
(one per validation sample, most confident first), the largest coverage whose error rate among
the retained is at most ``target`` with probability :math:`1 - \\delta`: a one-sided
Clopper–Pearson upper bound on the retained error, with a union bound over the candidates
(:math:`\\delta / k`). The promise: with probability :math:`1 - \\delta` over the calibration draw,
the selective risk on the test distribution is at most ``target``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from melanoma.evaluate.metrics import check_y_p
from melanoma.evaluate.uncertainty import entropy

__all__ = ["ConformalSets", "fit_conformal", "coverage_slack", "SGR", "fit_sgr", "clopper_pearson_upper",
           "PROMISES", "selective_stats", "conformal_decisions", "compare_methods", "miss_rate_curves"]


def _check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    return float(alpha)


def _probs(p: np.ndarray) -> np.ndarray:
    return np.stack([1.0 - p, p], axis=1)


def _q_from_crepes_rule(scores: np.ndarray, alpha: float) -> float:
    """The score threshold equivalent to crepes' set rule ``(m + 1) / (n + 1) >= alpha`` with
    ``m = #{calibration scores >= s}``: the set holds the class iff ``s <= q``."""
    n = scores.size
    conf = 1 - alpha  # crepes compares with 1 - confidence, in floating point: do the same
    j = next(m for m in range(n + 2) if (m + 1) / (n + 1) >= 1 - conf)  # smallest m that includes
    if j == 0:
        return math.inf  # every score is included (too few calibration images for this alpha)
    if j > n:
        return -math.inf  # never included (cannot happen for alpha < 1)
    return float(np.sort(scores)[n - j])


@dataclass
class ConformalSets:
    """A fitted class-conditional conformal classifier for two classes (0 benign, 1 melanoma)."""

    alpha: float
    q: tuple[float, float]          # per class: included iff 1 - p_c <= q_c  (hinge score)
    n_cal: tuple[int, int]          # calibration images per class
    _cc: object = None              # the crepes ConformalClassifier

    def p_values(self, p) -> np.ndarray:
        """Non-smoothed conformal p-values, shape (n, 2), from crepes."""
        P = _probs(np.asarray(p, dtype=np.float64))
        alphas = 1.0 - P
        return np.stack([self._cc.predict_p(alphas, np.full(len(P), c), smoothing=False)[:, c]
                         for c in (0, 1)], axis=1)

    def sets(self, p) -> np.ndarray:
        """Prediction sets as a boolean array (n, 2): column 0 benign, column 1 melanoma."""
        return self.p_values(p) >= 1 - (1 - self.alpha)

    def sets_from_q(self, p) -> np.ndarray:
        """The same sets from the two thresholds ``q`` (what the web page computes)."""
        P = _probs(np.asarray(p, dtype=np.float64))
        return np.stack([1.0 - P[:, c] <= self.q[c] for c in (0, 1)], axis=1)

    def to_json(self) -> dict:
        return {"alpha": self.alpha, "q": list(self.q), "n_cal": list(self.n_cal),
                "rule": "class c is in the set iff 1 - p_c <= q[c] (hinge score); "
                        "confident iff exactly one class is in the set",
                "min_prob": [1.0 - v if math.isfinite(v) else (0.0 if v > 0 else math.inf) for v in self.q]}


def fit_conformal(y_cal, p_cal, alpha: float = 0.1) -> ConformalSets:
    """Fit class-conditional split conformal sets on a calibration split (validation only).

    Parameters
    ----------
    y_cal : array-like of shape (n,)
        Calibration labels, 1 = melanoma; both classes must be present.
    p_cal : array-like of shape (n,)
        Calibration p(melanoma).
    alpha : float, default=0.1
        Miscoverage per class: each class's true label is in its set with probability ≥ 1 - α.

    Returns
    -------
    ConformalSets

    Examples
    --------
    >>> cs = fit_conformal([1, 1, 1, 0, 0, 0, 0, 0, 0, 0], [.9, .8, .6, .1, .2, .3, .1, .4, .2, .05], 0.25)
    >>> cs.sets([0.95, 0.5, 0.02]).astype(int).tolist()  # columns: benign, melanoma
    [[0, 1], [0, 1], [1, 1]]
    >>> cs.q  # 3 melanomas are too few to exclude melanoma at α = 0.25: it is always in the set
    (0.4, inf)
    """
    from crepes import ConformalClassifier

    y, p = check_y_p(y_cal, p_cal)
    alpha = _check_alpha(alpha)
    counts = (int((y == 0).sum()), int((y == 1).sum()))
    if min(counts) == 0:
        raise ValueError(f"conformal calibration needs both classes; got {counts[0]} benign and "
                         f"{counts[1]} melanoma")
    scores = 1.0 - _probs(p)[np.arange(y.size), y]
    cc = ConformalClassifier()
    cc.fit(scores, bins=y)
    q = tuple(_q_from_crepes_rule(scores[y == c], alpha) for c in (0, 1))
    return ConformalSets(alpha=alpha, q=q, n_cal=counts, _cc=cc)


def coverage_slack(n_cal: int, n_test: int, alpha: float, delta: float = 0.05) -> float:
    """Finite-sample slack ε: with probability ≥ 1 - δ the observed class coverage on ``n_test``
    test images, with ``n_cal`` calibration images of that class, is ≥ 1 - α - ε.

    The calibration-conditional coverage of split conformal (non-smoothed, no ties) is
    Beta(k, n + 1 - k), k = ⌈(n + 1)(1 - α)⌉; the number covered among m exchangeable test images
    is then Beta-Binomial(m, k, n + 1 - k); ε = 1 - α - (its δ-quantile) / m, at least 0.

    Examples
    --------
    >>> round(coverage_slack(30, 117, 0.1), 3) > 0
    True
    >>> coverage_slack(100000, 100000, 0.1) < 0.01
    True
    """
    from scipy.stats import betabinom

    alpha = _check_alpha(alpha)
    if n_cal < 1 or n_test < 1:
        raise ValueError(f"need n_cal >= 1 and n_test >= 1, got {n_cal}, {n_test}")
    k = math.ceil((n_cal + 1) * (1 - alpha))
    if k > n_cal:
        return 0.0  # the set always holds the class: coverage is 1
    lo = betabinom.ppf(delta, n_test, k, n_cal + 1 - k) / n_test
    return max(0.0, (1 - alpha) - float(lo))


def clopper_pearson_upper(k: int, n: int, delta: float) -> float:
    """One-sided upper (1 - δ) Clopper–Pearson bound on a binomial rate with k events in n trials."""
    from scipy.stats import beta

    if n == 0:
        return 1.0
    return 1.0 if k >= n else float(beta.ppf(1 - delta, k + 1, n - k))


@dataclass
class SGR:
    """Selective guaranteed risk: an entropy threshold with its risk bound (Geifman & El-Yaniv 2017)."""

    target: float
    delta: float
    threshold: float            # entropy (bits); retained iff entropy <= threshold; nan if none qualifies
    coverage: float             # on the calibration split
    risk: float                 # empirical error among the retained (calibration)
    bound: float                # upper (1 - delta) bound on the selective risk
    n_candidates: int
    met: bool                   # a candidate met the target

    def to_json(self) -> dict:
        return dict(self.__dict__)


def fit_sgr(y_cal, p_cal, target: float = 0.1, delta: float = 0.05, min_retained: int = 10,
            decision_threshold: float = 0.5) -> SGR:
    """The largest-coverage entropy threshold whose retained error is ≤ ``target`` w.p. 1 - ``delta``.

    Candidates are the distinct entropies of the calibration split (retaining the k most confident,
    k ≥ ``min_retained``); each gets a one-sided Clopper–Pearson bound at level δ/K (K candidates:
    a union bound, so the bound holds for the one chosen). When none meets ``target`` the result
    says so (``met = False``, threshold nan: reject everything).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 2000)
    >>> p = np.clip(np.where(y == 1, 0.75, 0.25) + rng.normal(0, 0.2, 2000), 0, 1)
    >>> s = fit_sgr(y, p, target=0.1)
    >>> bool(s.met and s.bound <= 0.1 and 0 < s.coverage < 1)
    True
    """
    y, p = check_y_p(y_cal, p_cal)
    if not 0 < target < 1 or not 0 < delta < 1:
        raise ValueError(f"target and delta must be in (0, 1), got {target!r}, {delta!r}")
    H = entropy(p)
    err = ((p > decision_threshold) != (y == 1)).astype(np.int64)
    order = np.argsort(H, kind="stable")
    Hs, es = H[order], err[order]
    last = np.r_[np.flatnonzero(np.diff(Hs) != 0), Hs.size - 1] if Hs.size else np.empty(0, int)
    ks = last + 1
    ks_ok = ks[ks >= min_retained]
    K = max(1, ks_ok.size)
    cum = np.cumsum(es)
    best = None
    for k in ks_ok:
        b = clopper_pearson_upper(int(cum[k - 1]), int(k), delta / K)
        if b <= target:
            best = (k, b)  # ks ascending: the last qualifying one has the largest coverage
    n = y.size
    if best is None:
        return SGR(target, delta, math.nan, 0.0, math.nan, math.nan, int(ks_ok.size), False)
    k, b = best
    return SGR(target, delta, float(Hs[k - 1]), float(k / n), float(cum[k - 1] / k), float(b), int(ks_ok.size), True)


# --------------------------------------------------------------------------------------------
# side by side: entropy rule vs conformal sets vs SGR, on one (validation, test) pair
# --------------------------------------------------------------------------------------------

#: What each method promises, in words (the book and rejection.json repeat these).
PROMISES = {
    "entropy": "none: the threshold minimises ½(ECE + Brier) on validation; coverage and errors on test are "
               "whatever the test split makes of it",
    "conformal": "each class's true label is in its set for at least 1 - α of its images — so at most α of "
                 "melanomas get a confident benign label — if test is exchangeable with the calibration split",
    "sgr": "with probability 1 - δ over the calibration draw, the error rate among the retained is at most "
           "the target, if test is exchangeable with the calibration split",
}


def _stats_once(y, keep, pred):
    mel, ben = y == 1, y == 0
    n, n_mel = y.size, int(mel.sum())
    k = keep
    caught, missed = int((mel & k & pred).sum()), int((mel & k & ~pred).sum())
    cleared, alarm = int((ben & k & ~pred).sum()), int((ben & k & pred).sum())
    nan = math.nan
    return {"coverage": k.mean() if n else nan,
            "accuracy": (caught + cleared) / k.sum() if k.any() else nan,
            "sensitivity_retained": caught / (caught + missed) if caught + missed else nan,
            "specificity_retained": cleared / (cleared + alarm) if cleared + alarm else nan,
            "miss_rate": missed / n_mel if n_mel else nan,
            "melanoma_referred_rate": int((mel & ~k).sum()) / n_mel if n_mel else nan}


def selective_stats(y, keep, pred, *, B: int = 1000, alpha: float = 0.05, seed: int = 0) -> dict:
    """Coverage, accuracy, sensitivity / specificity among the retained, the melanoma miss rate
    (melanomas given a confident benign label, over all melanomas) and the melanoma referral rate,
    with counts and percentile bootstrap CIs (test images resampled; the fitted rule held fixed).

    ``pred`` is the label each retained image is given (True = melanoma).

    Examples
    --------
    >>> s = selective_stats([1, 1, 0, 0], [True, False, True, True], [True, False, True, False], B=50)
    >>> s["coverage"], s["miss_rate"], s["accuracy"], s["melanoma_referred"]
    (0.75, 0.0, 0.6666666666666666, 1)
    """
    y = np.asarray(y, dtype=np.int64)
    keep = np.asarray(keep, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    point = _stats_once(y, keep, pred)
    rng = np.random.default_rng(seed)
    draws = {k: [] for k in point}
    if y.size and B:
        for _ in range(B):
            i = rng.integers(0, y.size, y.size)
            for k, v in _stats_once(y[i], keep[i], pred[i]).items():
                draws[k].append(v)
    ci = {}
    for k, vals in draws.items():
        v = np.asarray(vals, dtype=float)
        v = v[np.isfinite(v)]
        ci[k] = {"low": float(np.quantile(v, alpha / 2)), "high": float(np.quantile(v, 1 - alpha / 2))} if v.size \
            else {"low": math.nan, "high": math.nan}
    mel = y == 1
    return {**{k: float(v) for k, v in point.items()}, "ci": ci, "n": int(y.size), "n_retained": int(keep.sum()),
            "n_melanoma": int(mel.sum()), "melanoma_missed": int((mel & keep & ~pred).sum()),
            "melanoma_referred": int((mel & ~keep).sum()), "benign_referred": int((~mel & ~keep).sum()),
            "n_benign": int((~mel).sum())}


def conformal_decisions(cs: ConformalSets, p) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(sets, retained, predicted)``: retained = a singleton set; predicted = its class."""
    S = cs.sets(p)
    single = S.sum(axis=1) == 1
    return S, single, S[:, 1] & single


def compare_methods(y_val, p_val, y_test, p_test, *, entropy_keep, entropy_threshold: float = math.nan,
                    alpha: float = 0.1,
                    risk_target: float = 0.2, risk_delta: float = 0.05, coverage_delta: float = 0.05,
                    B: int = 1000, ci_alpha: float = 0.05, seed: int = 0) -> dict:
    """The paper's entropy rule (its test mask ``entropy_keep``, the threshold already chosen on
    validation), class-
    conditional conformal sets (``alpha``) and SGR (``risk_target``, ``risk_delta``), each fitted
    on the validation arrays only and scored on test with :func:`selective_stats`; for each, the
    promise and whether test kept it; and the melanoma miss rate vs coverage curves of the three
    as their parameter varies (``curves``)."""
    yv, pv = check_y_p(y_val, p_val)
    yt, pt = check_y_p(y_test, p_test)
    kw = dict(B=B, alpha=ci_alpha, seed=seed)
    Ht = entropy(pt)
    out = {}
    keep = np.asarray(entropy_keep, dtype=bool)
    out["entropy"] = {"promise": PROMISES["entropy"], "threshold": float(entropy_threshold),
                      "kept": None, **selective_stats(yt, keep, pt > 0.5, **kw)}
    # conformal: calibrated on validation; the guarantee is checked per class on test
    cs = fit_conformal(yv, pv, alpha)
    S, single, pred = conformal_decisions(cs, pt)
    cov = {}
    for c, name in ((1, "melanoma"), (0, "benign")):
        m = int((yt == c).sum())
        observed = float(S[yt == c, c].mean()) if m else math.nan
        slack = coverage_slack(cs.n_cal[c], m, alpha, coverage_delta) if m else math.nan
        cov[name] = {"observed": observed, "target": 1 - alpha, "slack": slack, "n_test": m,
                     "n_cal": cs.n_cal[c], "kept": bool(observed >= 1 - alpha - slack) if m else None}
    out["conformal"] = {"promise": PROMISES["conformal"], **cs.to_json(), "class_coverage": cov,
                        "n_empty": int((S.sum(axis=1) == 0).sum()), "n_both": int((S.sum(axis=1) == 2).sum()),
                        "n_set_label_differs": int((single & (pred != (pt > 0.5))).sum()),
                        "kept": all(v["kept"] for v in cov.values() if v["kept"] is not None),
                        **selective_stats(yt, single, pred, **kw)}
    # SGR: the largest validation coverage whose retained error is <= target with prob. 1 - delta
    sg = fit_sgr(yv, pv, risk_target, risk_delta)
    keep = Ht <= sg.threshold if sg.met else np.zeros(yt.size, bool)
    st = selective_stats(yt, keep, pt > 0.5, **kw)
    test_risk = 1 - st["accuracy"] if keep.any() else math.nan
    out["sgr"] = {"promise": PROMISES["sgr"], **sg.to_json(), "val_coverage": sg.coverage,
                  "test_risk": test_risk, "kept": (bool(test_risk <= risk_target) if keep.any() else None),
                  **st}
    out["curves"] = miss_rate_curves(yv, pv, yt, pt)
    return out


def _curve(parameter: str, pts: list[tuple[float, float, float]]) -> dict:
    """``(value, coverage, miss rate)`` points as the curve dict :func:`miss_rate_curves` returns."""
    return {"parameter": parameter, "value": [a for a, _, _ in pts], "coverage": [b for _, b, _ in pts],
            "miss_rate": [c for _, _, c in pts]}


def miss_rate_curves(y_val, p_val, y_test, p_test) -> dict:
    """Melanoma miss rate (confident benign labels / all melanomas) vs coverage on test, as each
    method's parameter varies: the entropy rule's r (0 … 0.9 of validation rejected), conformal α
    (0.01 … 0.5), SGR's target (0.02 … 0.5; only where a candidate meets it)."""
    from melanoma.evaluate.uncertainty import relative_threshold

    yv, pv = check_y_p(y_val, p_val)
    yt, pt = check_y_p(y_test, p_test)
    Ht = entropy(pt)
    res = {}
    pts = []
    for r in np.round(np.arange(0.0, 0.91, 0.02), 10):
        keep = Ht <= relative_threshold(pv, float(r))
        s = _stats_once(yt, keep, pt > 0.5)
        pts.append((float(r), float(s["coverage"]), float(s["miss_rate"])))
    res["entropy"] = _curve("r", pts)
    pts = []
    for a in np.round(np.arange(0.01, 0.5001, 0.01), 10):
        cs = fit_conformal(yv, pv, float(a))
        _, single, pred = conformal_decisions(cs, pt)
        s = _stats_once(yt, single, pred)
        pts.append((float(a), float(s["coverage"]), float(s["miss_rate"])))
    res["conformal"] = _curve("alpha", pts)
    pts = []
    for t in np.round(np.arange(0.02, 0.5001, 0.02), 10):
        sg = fit_sgr(yv, pv, float(t))
        if not sg.met:
            continue
        s = _stats_once(yt, Ht <= sg.threshold, pt > 0.5)
        pts.append((float(t), float(s["coverage"]), float(s["miss_rate"])))
    res["sgr"] = _curve("target", pts)
    return res

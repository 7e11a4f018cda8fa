"""Tests of melanoma.evaluate.uncertainty: entropy, rejection, the validation-only threshold search, the
before/after report, selective-classification curves and temperature scaling."""

from __future__ import annotations

import doctest
import inspect
import math
import re
import warnings

import numpy as np
import pytest
import scipy.optimize
import scipy.stats

from melanoma.evaluate import metrics as M
from melanoma.evaluate import uncertainty as U
from melanoma.evaluate.metrics import MetricUndefinedWarning


def model_outputs(seed: int, n: int = 400):
    """Validation-like data: a decent classifier whose errors concentrate at high entropy."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    logit = np.where(y == 1, 1.5, -1.5) + rng.normal(scale=1.8, size=n)
    p = 1.0 / (1.0 + np.exp(-logit))
    return y, p


def test_doctests():
    res = doctest.testmod(U, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 15 and res.failed == 0


# --------------------------------------------------------------------------------------------
# entropy
# --------------------------------------------------------------------------------------------


def test_entropy_hand_values_no_nan():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero / invalid warnings at p in {0, 1}
        assert U.entropy([[0.5, 0.5]])[0] == 1.0
        assert U.entropy([[1.0, 0.0]])[0] == 0.0
        assert U.entropy([[0.0, 1.0]])[0] == 0.0
        assert U.entropy(0.5) == 1.0
        np.testing.assert_array_equal(U.entropy(np.array([0.0, 1.0])), [0.0, 0.0])
    assert U.entropy(0.25) == pytest.approx(-(0.25 * np.log2(0.25) + 0.75 * np.log2(0.75)))
    assert U.entropy([[0.25, 0.25, 0.25, 0.25]])[0] == pytest.approx(2.0)


def test_entropy_matches_scipy_and_bases():
    rng = np.random.default_rng(0)
    P = rng.dirichlet(np.ones(4), size=50)
    np.testing.assert_allclose(U.entropy(P), scipy.stats.entropy(P, base=2, axis=1))
    np.testing.assert_allclose(U.entropy(P, base=math.e), scipy.stats.entropy(P, axis=1))
    p = rng.random(50)
    np.testing.assert_allclose(U.entropy(p), U.entropy(np.stack([1 - p, p], 1)))
    np.testing.assert_allclose(U.entropy(p, base=math.e), U.entropy(p) * np.log(2))


def test_entropy_binary_bounds_and_symmetry():
    p = np.linspace(0, 1, 1001)
    H = U.entropy(p)
    assert H.min() >= 0 and H.max() <= 1
    np.testing.assert_allclose(H, U.entropy(1 - p), atol=1e-12)
    assert np.all(np.diff(H[:501]) > 0)  # increasing up to 0.5


@pytest.mark.parametrize(
    "p, kw, msg",
    [
        ([[0.5, 0.6]], {}, "rows of p must sum to 1 (largest deviation 0.1)"),
        ([0.2, 1.5], {}, "p has values outside [0, 1]"),
        ([[0.2, np.nan]], {}, "p contains NaN or infinite values"),
        ([0.2], {"base": 1}, "base must be a positive number other than 1, got 1"),
        ([0.2], {"base": -2}, "base must be a positive number other than 1, got -2"),
        (np.zeros((2, 2, 2)), {}, "p must have shape (n,) or (n, k), got shape (2, 2, 2)"),
    ],
)
def test_entropy_validation(p, kw, msg):
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        U.entropy(p, **kw)


# --------------------------------------------------------------------------------------------
# rejection rules
# --------------------------------------------------------------------------------------------


def test_reject_by_threshold_is_entropy_le_threshold():
    _, p = model_outputs(0)
    H = U.entropy(p)
    for t in (0.0, 0.1, 0.5, 0.9):
        np.testing.assert_array_equal(U.reject_by_threshold(p, t), H <= t)
    assert U.reject_by_threshold(p, 1.0).all()  # bits: nothing exceeds 1
    assert not U.reject_by_threshold(p, 0.0).any()  # no saturated outputs here
    assert U.reject_by_threshold([0.0, 1.0, 0.5], 0.0).tolist() == [True, True, False]
    masks = [U.reject_by_threshold(p, t) for t in np.linspace(0, 1, 21)]
    assert all(np.all(a <= b) for a, b in zip(masks, masks[1:]))  # monotone in the threshold


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.29, 0.5, 0.77, 1.0])
def test_reject_by_coverage_counts_and_order(fraction):
    _, p = model_outputs(1, n=100)
    keep = U.reject_by_coverage(p, fraction)
    assert (~keep).sum() == math.floor(round(fraction * 100, 9))
    H = U.entropy(p)
    if keep.any() and (~keep).any():
        assert H[~keep].min() >= H[keep].max()


def test_reject_by_coverage_stable_ties():
    p = np.full(10, 0.7)
    assert U.reject_by_coverage(p, 0.3).tolist() == [True] * 7 + [False] * 3
    p = np.array([0.5, 0.9, 0.5, 0.1, 0.5])  # three tied most-uncertain, reject two
    assert U.reject_by_coverage(p, 0.4).tolist() == [True, True, False, True, False]


def test_rejection_argument_validation():
    with pytest.raises(ValueError, match=re.escape("threshold must be a finite number >= 0, got -0.1")):
        U.reject_by_threshold([0.2], -0.1)
    with pytest.raises(ValueError, match=re.escape("threshold must be a finite number >= 0, got nan")):
        U.reject_by_threshold([0.2], float("nan"))
    with pytest.raises(ValueError, match=re.escape("fraction must be in [0, 1], got 1.5")):
        U.reject_by_coverage([0.2], 1.5)
    with pytest.raises(ValueError, match=re.escape("mode must be one of ('relative', 'absolute', 'coverage'), got 'x'")):
        U.retained_mask([0.2], 0.1, mode="x")


def test_triage_labels():
    p = np.array([0.9, 0.2, 0.55, 0.5])
    keep = U.reject_by_threshold(p, 0.75)  # entropies 0.47, 0.72, 0.99, 1.0
    assert U.triage_labels(p, keep).tolist() == ["Melanoma", "Non-Melanoma", "Uncertain", "Uncertain"]


# --------------------------------------------------------------------------------------------
# threshold search on validation
# --------------------------------------------------------------------------------------------


def test_search_minimises_mean_of_ece_and_brier_on_retained():
    y, p = model_outputs(2)
    thresholds = np.round(np.arange(0, 0.5001, 0.025), 10)
    s = U.search_threshold(y, p, thresholds, min_retained=5)
    t = s["table"]
    assert set(t) == {"threshold", "fraction", "coverage", "n_retained", "accuracy", "ece", "brier", "objective"}
    assert np.all(np.isnan(t["fraction"]))  # absolute mode: candidates are entropies
    for j, thr in enumerate(thresholds):
        keep = U.entropy(p) <= thr
        assert t["n_retained"][j] == keep.sum()
        assert t["coverage"][j] == pytest.approx(keep.mean())
        if keep.sum() >= 5:
            e, b = M.ece(y[keep], p[keep]), M.brier(y[keep], p[keep])
            assert t["ece"][j] == pytest.approx(e) and t["brier"][j] == pytest.approx(b)
            assert t["objective"][j] == pytest.approx((e + b) / 2)
            assert t["accuracy"][j] == pytest.approx(M.accuracy(y[keep], p[keep]))
        else:
            assert math.isnan(t["objective"][j])
    j = int(np.nanargmin(t["objective"]))
    assert s["threshold"] == thresholds[j] and s["objective"] == t["objective"][j]
    assert s["coverage"] == t["coverage"][j] and s["n_retained"] == t["n_retained"][j]


def test_search_default_thresholds_are_the_papers():
    y, p = model_outputs(3)
    s = U.search_threshold(y, p)
    np.testing.assert_allclose(s["table"]["threshold"], np.arange(0, 0.2001, 0.01))
    assert s["table"]["threshold"].size == 21
    assert s["mode"] == "absolute" and s["n"] == len(y)


def test_search_ties_go_to_the_larger_threshold():
    # entropies: 0 (p = 1), 0.0808 (p = 0.99), 1 (p = 0.5): thresholds 0.1 .. 0.9 retain the same set
    y = np.array([1, 1, 0])
    p = np.array([1.0, 0.99, 0.5])
    s = U.search_threshold(y, p, thresholds=[0.1, 0.3, 0.9])
    assert s["threshold"] == 0.9
    assert np.all(s["table"]["objective"] == s["table"]["objective"][0])
    s = U.search_threshold(y, p, thresholds=[0.9, 0.3, 0.1])  # candidate order does not matter
    assert s["threshold"] == 0.9


@pytest.mark.filterwarnings("ignore::melanoma.evaluate.metrics.MetricUndefinedWarning")
def test_search_never_reads_test_labels():
    """The search takes validation arrays only; perturbing or shuffling test labels (or the test
    split altogether) cannot move the chosen threshold."""
    params = set(inspect.signature(U.search_threshold).parameters)
    assert not {p for p in params if "test" in p}
    y_val, p_val = model_outputs(4)
    y_test, p_test = model_outputs(5)
    rng = np.random.default_rng(0)

    def pipeline(y_test_labels):
        chosen = U.search_threshold(y_val, p_val)["threshold"]
        report = U.rejection_report(y_test_labels, p_test, chosen)
        return chosen, report

    t0, r0 = pipeline(y_test)
    for _ in range(3):
        t1, r1 = pipeline(rng.permutation(y_test))
        t2, _ = pipeline(1 - y_test)
        assert t1 == t2 == t0
        assert r1["coverage"] == r0["coverage"]  # rejection uses p only
    # ... while the validation labels do matter
    assert U.search_threshold(1 - y_val, p_val)["objective"] != U.search_threshold(y_val, p_val)["objective"]


def test_search_min_retained_and_nothing_qualifies():
    y, p = model_outputs(6, n=50)
    s = U.search_threshold(y, p, thresholds=[0.0, 0.05, 1.0], min_retained=50)
    assert s["threshold"] == 1.0  # only the candidate retaining everything qualifies
    msg = "no candidate threshold retains at least min_retained=1 and min_coverage=0 of the 50"
    with pytest.warns(MetricUndefinedWarning, match=msg):
        s = U.search_threshold(y, p, thresholds=[0.0])
    assert math.isnan(s["threshold"]) and s["n_retained"] == 0
    assert s["table"]["n_retained"].tolist() == [0]


def test_search_min_coverage_guards_against_tiny_retained_sets():
    """On a weak model the bare rule picks a near-empty retained set; min_coverage bounds it."""
    y, p = model_outputs(2)
    bare = U.search_threshold(y, p)
    assert bare["coverage"] < 0.05
    thresholds = np.round(np.arange(0, 1.0001, 0.01), 10)
    s = U.search_threshold(y, p, thresholds, min_coverage=0.8)
    assert s["coverage"] >= 0.8
    ok = s["table"]["coverage"] >= 0.8
    obj = s["table"]["objective"]
    assert np.all(np.isnan(obj[~ok])) and np.all(np.isfinite(obj[ok]))
    with pytest.raises(ValueError, match=re.escape("min_coverage must be in [0, 1], got 1.5")):
        U.search_threshold(y, p, min_coverage=1.5)


def test_search_coverage_mode():
    y, p = model_outputs(7)
    s = U.search_threshold(y, p, thresholds=[0.0, 0.1, 0.2], mode="coverage")
    np.testing.assert_allclose(s["table"]["coverage"], [1.0, 0.9, 0.8])
    j = int(np.nanargmin(s["table"]["objective"]))
    assert s["threshold"] == [0.0, 0.1, 0.2][j] and s["mode"] == "coverage"


def test_search_validation():
    with pytest.raises(ValueError, match=re.escape("min_retained must be a positive integer, got 0")):
        U.search_threshold([0, 1], [0.2, 0.8], min_retained=0)
    with pytest.raises(ValueError, match=re.escape("thresholds must be a non-empty 1-D array of candidates")):
        U.search_threshold([0, 1], [0.2, 0.8], thresholds=[])
    with pytest.raises(ValueError, match=re.escape("y and p have different lengths: 2 != 3")):
        U.search_threshold([0, 1], [0.2, 0.8, 0.1])


# --------------------------------------------------------------------------------------------
# the before/after report
# --------------------------------------------------------------------------------------------

REPORT_KEYS = {"threshold", "mode", "n", "n_retained", "n_rejected", "coverage", "before", "after",
               "fp_before", "fn_before", "fp_after", "fn_after", "fp_prevented", "fn_prevented",
               "tp_rejected", "tn_rejected", "misdiagnoses_prevented", "correct_rejected",
               "fp_reduction_pct", "fn_reduction_pct", "referral"}


@pytest.mark.parametrize("threshold", [0.1, 0.3, 0.6])
def test_rejection_report_accounting(threshold):
    y, p = model_outputs(8)
    r = U.rejection_report(y, p, threshold)
    assert set(r) == REPORT_KEYS
    keep = U.reject_by_threshold(p, threshold)
    assert r["n_retained"] + r["n_rejected"] == r["n"] == len(y)
    assert r["n_retained"] == keep.sum() and r["coverage"] == pytest.approx(keep.mean())
    assert r["fp_before"] == r["fp_after"] + r["fp_prevented"]
    assert r["fn_before"] == r["fn_after"] + r["fn_prevented"]
    assert r["before"]["tp"] == r["after"]["tp"] + r["tp_rejected"]
    assert r["before"]["tn"] == r["after"]["tn"] + r["tn_rejected"]
    assert r["misdiagnoses_prevented"] + r["correct_rejected"] == r["n_rejected"]
    assert r["fn_reduction_pct"] == pytest.approx(100 * r["fn_prevented"] / r["fn_before"])
    assert r["before"] == M.classification_report(y, p)
    after = M.classification_report(y[keep], p[keep])
    for k in M.REPORT_METRICS:
        assert r["after"][k] == pytest.approx(after[k], nan_ok=True)
    assert r["after"]["n"] == r["n_retained"]
    # the paper's claim holds on this well-behaved model: rejection removes errors first
    assert r["after"]["accuracy"] > r["before"]["accuracy"]


def test_everything_rejected():
    y, p = model_outputs(9, n=40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the empty 'after' block must not warn either
        r = U.rejection_report(y, p, 0.0)
    assert r["coverage"] == 0.0 and r["n_retained"] == 0 and r["n_rejected"] == 40
    assert r["after"]["n"] == 0
    for k in M.REPORT_METRICS:
        assert math.isnan(r["after"][k]), k
    assert r["fp_prevented"] == r["fp_before"] and r["fn_prevented"] == r["fn_before"]
    assert r["fp_after"] == r["fn_after"] == 0


def test_nothing_rejected():
    y, p = model_outputs(10, n=60)
    r = U.rejection_report(y, p, 1.0)
    assert r["coverage"] == 1.0 and r["n_rejected"] == 0
    assert r["after"] == r["before"]
    assert r["fp_prevented"] == r["fn_prevented"] == 0
    assert r["fn_reduction_pct"] == 0.0 or math.isnan(r["fn_reduction_pct"])


def test_one_class_retained():
    y = np.array([0, 0, 0, 1, 1])
    p = np.array([0.01, 0.02, 0.03, 0.6, 0.45])  # only the confident non-melanomas survive
    with pytest.warns(MetricUndefinedWarning, match="only one class present"):
        r = U.rejection_report(y, p, 0.3)
    assert r["n_retained"] == 3 and r["after"]["n_melanoma"] == 0
    assert math.isnan(r["after"]["auc"]) and math.isnan(r["after"]["sensitivity"])
    assert r["after"]["specificity"] == 1.0 and r["after"]["accuracy"] == 1.0
    assert r["fn_before"] == 1 and r["fn_prevented"] == 1 and r["fn_reduction_pct"] == 100.0
    assert math.isnan(r["fp_reduction_pct"])  # no false positive to reduce


def test_rejection_report_coverage_mode_and_ci():
    y, p = model_outputs(11, n=100)
    r = U.rejection_report(y, p, 0.2, mode="coverage", ci=True, B=30)
    assert r["n_rejected"] == 20 and r["coverage"] == 0.8
    assert "ci" in r["before"] and "ci" in r["after"]
    lo, hi = r["after"]["ci"]["accuracy"]["low"], r["after"]["ci"]["accuracy"]["high"]
    assert lo <= r["after"]["accuracy"] <= hi


# --------------------------------------------------------------------------------------------
# selective-classification curves
# --------------------------------------------------------------------------------------------


def test_accuracy_rejection_curve():
    y, p = model_outputs(12)
    t = np.linspace(0, 1, 11)
    c = U.accuracy_rejection_curve(y, p, t)
    for j, thr in enumerate(t):
        keep = U.reject_by_threshold(p, thr)
        assert c["n_retained"][j] == keep.sum()
        assert c["accuracy"][j] == pytest.approx(M.accuracy(y[keep], p[keep]), nan_ok=True)
    np.testing.assert_allclose(c["coverage"] + c["rejection_rate"], 1)
    assert c["coverage"][-1] == 1.0 and c["accuracy"][-1] == pytest.approx(M.accuracy(y, p))


def test_risk_coverage_curve_points():
    y, p = model_outputs(13)
    c = U.risk_coverage_curve(y, p)
    assert np.all(np.diff(c["coverage"]) > 0) and c["coverage"][-1] == 1.0
    assert c["risk"][-1] == pytest.approx(1 - M.accuracy(y, p))
    for j in (0, len(c["risk"]) // 2):
        keep = U.entropy(p) <= c["threshold"][j]
        assert c["risk"][j] == pytest.approx(1 - M.accuracy(y[keep], p[keep]))


def _brute_aurc(y, p):
    order = np.argsort(U.entropy(p), kind="stable")
    err = ((p > 0.5) != (y == 1))[order]
    return np.mean(np.cumsum(err) / np.arange(1, len(y) + 1))


def test_aurc_matches_definition_without_ties():
    y, p = model_outputs(14)
    assert U.aurc(y, p) == pytest.approx(_brute_aurc(y, p))


def test_aurc_is_expected_value_over_tie_orders():
    y = np.array([1, 0, 1, 0, 1, 1])
    p = np.array([0.9, 0.9, 0.9, 0.2, 0.6, 0.6])  # tie groups by entropy
    rng = np.random.default_rng(0)
    vals = []
    for _ in range(4000):
        perm = rng.permutation(len(y))
        vals.append(_brute_aurc(y[perm], p[perm]))
    assert U.aurc(y, p) == pytest.approx(np.mean(vals), abs=3e-3)
    perm = rng.permutation(len(y))
    assert U.aurc(y[perm], p[perm]) == pytest.approx(U.aurc(y, p), abs=1e-15)


def test_eaurc():
    y, p = model_outputs(15)
    e = U.eaurc(y, p)
    assert 0 <= e <= U.aurc(y, p)
    # an oracle: the errors are exactly the least confident predictions
    y = np.array([1, 1, 0, 0, 1, 0])
    p = np.array([0.99, 0.9, 0.05, 0.2, 0.45, 0.55])
    assert U.eaurc(y, p) == pytest.approx(0.0, abs=1e-15)
    r = 2 / 6
    assert U.aurc(y, p) == pytest.approx(np.mean([0, 0, 0, 0, 1 / 5, 2 / 6]))
    assert U.aurc(y, p) > r + (1 - r) * math.log(1 - r) - 0.05  # near the continuous approximation


def test_selective_risk_at():
    y, p = model_outputs(16, n=200)
    r = U.selective_risk_at(y, p, [1.0, 0.9, 0.5, 0.0])
    assert r["n_retained"].tolist() == [200, 180, 100, 0]
    np.testing.assert_allclose(r["achieved_coverage"], [1.0, 0.9, 0.5, 0.0])
    keep = U.reject_by_coverage(p, 0.5)
    assert r["risk"][2] == pytest.approx(1 - M.accuracy(y[keep], p[keep]))
    assert math.isnan(r["risk"][3])
    assert r["risk"][2] <= r["risk"][0]


def test_curves_on_empty_input():
    assert U.risk_coverage_curve([], [])["coverage"].size == 0
    assert math.isnan(U.aurc([], [])) and math.isnan(U.eaurc([], []))


# --------------------------------------------------------------------------------------------
# temperature scaling
# --------------------------------------------------------------------------------------------


def _overconfident_logits(seed, n=3000, scale=3.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    d = np.where(y == 1, 1.0, -1.0) * 0.8 + rng.normal(size=n)
    return y, np.stack([-scale * d / 2, scale * d / 2], axis=1)


def test_fit_temperature_minimises_nll():
    y, z = _overconfident_logits(0)
    T = U.fit_temperature(y, z)
    assert T > 1.5  # over-confident logits get softened
    nll = lambda t: M.nll(y, U.apply_temperature(z, t))  # noqa: E731
    for other in (1.0, T * 0.97, T * 1.03, T / 2, T * 2):
        assert nll(T) <= nll(other) + 1e-12
    ref = scipy.optimize.minimize_scalar(nll, bounds=(0.05, 20), method="bounded", options={"xatol": 1e-8})
    assert T == pytest.approx(ref.x, rel=1e-3)


def test_temperature_keeps_predictions_and_improves_calibration():
    y, z = _overconfident_logits(1)
    T = U.fit_temperature(y, z)
    p1, pT = U.apply_temperature(z, 1.0), U.apply_temperature(z, T)
    np.testing.assert_array_equal(p1 > 0.5, pT > 0.5)
    assert M.ece(y, pT) < M.ece(y, p1) and M.brier(y, pT) < M.brier(y, p1)


def test_apply_temperature_is_softmax():
    torch = pytest.importorskip("torch")
    z = np.random.default_rng(2).normal(scale=5, size=(20, 2))
    ref = torch.softmax(torch.tensor(z) / 1.7, dim=1)[:, 1].numpy()
    np.testing.assert_allclose(U.apply_temperature(z, 1.7), ref, rtol=1e-12)
    assert np.all(np.isfinite(U.apply_temperature(np.array([[0.0, 1000.0], [1000.0, 0.0]]), 1.0)))


def test_temperature_validation():
    msg = "logits must have shape (n, 2) (non-melanoma, melanoma), got shape (3,)"
    with pytest.raises(ValueError, match=re.escape(msg)):
        U.apply_temperature([0.1, 0.2, 0.3], 1.0)
    with pytest.raises(ValueError, match=re.escape("T must be a finite number > 0, got 0")):
        U.apply_temperature([[0.1, 0.2]], 0)
    with pytest.raises(ValueError, match=re.escape("y_val and logits_val have different lengths: 1 != 2")):
        U.fit_temperature([1], [[0.1, 0.2], [0.3, 0.1]])
    with pytest.raises(ValueError, match=re.escape("fit_temperature needs at least one validation sample")):
        U.fit_temperature([], np.zeros((0, 2)))


# ---------------------------------------------------------------- the seed code's relative rule

# p(melanoma) of 10 validation images, chosen so the entropies are easy to follow by hand:
# H(0.5) = 1, H(0.6) = H(0.4) = 0.9710, H(0.7) = H(0.3) = 0.8813, H(0.8) = H(0.2) = 0.7219,
# H(0.9) = 0.4690, H(0.95) = 0.2864, H(0.99) = H(0.01) = 0.0808
HAND_P = np.array([0.5, 0.9, 0.99, 0.6, 0.2, 0.01, 0.95, 0.7, 0.8, 0.3])


def test_relative_threshold_hand_computed():
    # r = 0.1 rejects floor(1.0) = 1 image, the 0.5 (1 bit): the threshold is the next entropy, H(0.6)
    assert U.relative_threshold(HAND_P, 0.1) == pytest.approx(0.9709505944546688)
    # r = 0.2 rejects 2 (0.5, 0.6): the 8th smallest entropy is H(0.7) = H(0.3) — a tie at the threshold
    assert U.relative_threshold(HAND_P, 0.2) == pytest.approx(0.8812908992306927)
    # r = 0.25 rejects floor(2.5) = 2 as well; r = 0.3 rejects 3, the tie: both 0.7 and 0.3 are kept
    # by "entropy <= threshold" at r = 0.2 and 0.25, so coverage is 0.8, never below 1 - r
    assert U.relative_threshold(HAND_P, 0.25) == U.relative_threshold(HAND_P, 0.2)
    assert U.reject_by_threshold(HAND_P, U.relative_threshold(HAND_P, 0.2)).tolist() == \
        [False, True, True, False, True, True, True, True, True, True]
    # r = 0.3: threshold is the 7th smallest, H(0.3) again (tie), so the same 8 are kept (coverage 0.8 > 0.7)
    assert U.reject_by_threshold(HAND_P, U.relative_threshold(HAND_P, 0.3)).sum() == 8
    assert U.relative_threshold(HAND_P, 0.0) == pytest.approx(1.0)          # keep everything
    assert math.isnan(U.relative_threshold([], 0.1))
    assert math.isnan(U.relative_threshold([0.3], 1.0))                     # nothing kept


def test_relative_search_hand_computed():
    y = np.array([1, 0, 1, 1, 0, 0, 1, 1, 0, 0])
    s = U.search_threshold(y, HAND_P, [0.1, 0.2], mode="relative")
    t = s["table"]
    np.testing.assert_allclose(t["fraction"], [0.1, 0.2])
    np.testing.assert_allclose(t["threshold"], [U.entropy(0.6), U.entropy(0.7)])
    np.testing.assert_array_equal(t["n_retained"], [9, 8])
    for j, r in enumerate((0.1, 0.2)):   # objective recomputed by hand on the retained
        keep = U.entropy(HAND_P) <= t["threshold"][j]
        e, b = M.ece(y[keep], HAND_P[keep]), M.brier(y[keep], HAND_P[keep])
        assert t["objective"][j] == pytest.approx((e + b) / 2)
    j = int(np.nanargmin(t["objective"]))
    assert s["fraction"] == [0.1, 0.2][j] and s["threshold"] == t["threshold"][j]
    assert s["coverage"] == t["coverage"][j] and s["mode"] == "relative"


def test_relative_default_thresholds_are_the_seed_codes():
    y, p = model_outputs(3)
    s = U.search_threshold(y, p, mode="relative")
    np.testing.assert_allclose(s["table"]["fraction"], np.arange(0.05, 0.2001, 0.01))
    assert np.all(s["table"]["coverage"] >= 0.8 - 1e-12)   # never below 1 - r


def test_relative_threshold_carries_to_test_as_an_entropy():
    # the threshold found on validation is applied to test as a value: test coverage is whatever
    # fraction of test is at least as confident, here everything (a more confident test split)
    yv, pv = model_outputs(4)
    s = U.search_threshold(yv, pv, mode="relative")
    pt = np.clip(np.where(pv > 0.5, 0.999, 0.001), 0, 1)
    r = U.rejection_report(yv, pt, s["threshold"], mode="relative")
    assert r["coverage"] == 1.0 and r["n_rejected"] == 0
    with pytest.raises(ValueError, match="relative mode"):
        U.search_threshold(yv, pv, [0.1, 1.0], mode="relative")


def test_referral_counts_add_up():
    rng = np.random.default_rng(5)
    for _ in range(20):
        n = int(rng.integers(1, 60))
        y = rng.integers(0, 2, n)
        p = rng.random(n)
        keep = rng.random(n) < rng.random()
        r = U.referral_counts(y, p, keep)
        assert r["melanoma_caught"] + r["melanoma_missed"] + r["melanoma_referred"] == r["n_melanoma"] == y.sum()
        assert r["benign_cleared"] + r["benign_false_alarm"] + r["benign_referred"] == r["n_benign"] == (y == 0).sum()
        assert r["n_retained"] == keep.sum()
        assert r["melanoma_missed"] <= r["melanoma_missed_before"]   # rejection never adds a miss
        if r["melanoma_caught"] + r["melanoma_missed"]:
            assert r["sensitivity_retained"] == pytest.approx(
                M.sensitivity(y[keep], p[keep]) if keep.any() else math.nan)
        else:
            assert math.isnan(r["sensitivity_retained"])


def test_referral_in_rejection_report_matches_counts():
    y, p = model_outputs(9)
    r = U.rejection_report(y, p, 0.6)
    ref = r["referral"]
    assert ref["melanoma_missed"] == r["fn_after"] and ref["melanoma_missed_before"] == r["fn_before"]
    assert ref["melanoma_referred"] == r["fn_prevented"] + r["tp_rejected"]
    assert ref["benign_referred"] == r["fp_prevented"] + r["tn_rejected"]

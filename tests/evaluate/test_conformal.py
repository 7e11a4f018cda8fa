"""melanoma.evaluate.conformal: conformal sets (their guarantee, checked over many seeds on a known
distribution), the finite-sample slack, SGR's bound, and the side-by-side comparison."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from scipy.stats import binomtest

from melanoma.evaluate import conformal as C


def draw(rng, n, prevalence=0.3):
    """A known distribution: y ~ Bernoulli(prevalence), score z ~ N(±1, 1), p = sigmoid(2 z)."""
    y = (rng.random(n) < prevalence).astype(int)
    z = np.where(y == 1, 1.0, -1.0) + rng.normal(0, 1, n)
    return y, 1 / (1 + np.exp(-2 * z))


def test_doctests():
    assert doctest.testmod(C, optionflags=doctest.NORMALIZE_WHITESPACE).failed == 0


def test_thresholds_reproduce_crepes_sets_exactly():
    """The page's rule (p_c >= 1 - q_c) equals crepes' p-value rule, ties and small samples included."""
    rng = np.random.default_rng(1)
    for _ in range(300):
        n = int(rng.integers(4, 60))
        y = rng.integers(0, 2, n)
        y[:2] = [0, 1]
        p = np.round(rng.random(n), int(rng.integers(1, 3)))          # rounding makes ties
        a = float(rng.choice([0.05, 0.1, 0.2, 0.25, 0.3, 0.5]))
        cs = C.fit_conformal(y, p, a)
        pt = np.round(rng.random(50), 2)
        np.testing.assert_array_equal(cs.sets(pt), cs.sets_from_q(pt))
        mp = cs.to_json()["min_prob"]
        P = np.stack([1 - pt, pt], 1)
        np.testing.assert_array_equal(cs.sets(pt), P >= np.array(mp)[None, :] - 1e-12)


def _expected_coverage(n: int, alpha: float) -> float:
    """P(class in set) for continuous exchangeable scores under crepes' rule (m + 1)/(n + 1) >= alpha,
    m = #{calibration scores >= test score}: the test score's rank is uniform on n + 1 places."""
    j = next(m for m in range(n + 2) if (m + 1) / (n + 1) >= 1 - (1 - alpha))
    return (n + 1 - j) / (n + 1)


@pytest.mark.parametrize("alpha", [0.1, 0.2])
def test_class_conditional_guarantee_over_many_seeds(alpha):
    """Over 1,500 independent calibration draws, one fresh test image per class each: the number
    covered is Poisson-binomial with the exact per-draw probabilities; it must lie within 4 sd,
    and the coverage of each class is at least 1 - alpha (up to that sampling error)."""
    S = 1500
    covered = {0: 0, 1: 0}
    mean = {0: 0.0, 1: 0.0}
    var = {0: 0.0, 1: 0.0}
    for seed in range(S):
        rng = np.random.default_rng(seed)
        y, p = draw(rng, 80)
        if min((y == 0).sum(), (y == 1).sum()) == 0:
            continue
        cs = C.fit_conformal(y, p, alpha)
        for c in (0, 1):
            while True:                      # one test image of class c
                yt, pt = draw(rng, 1)
                if yt[0] == c:
                    break
            covered[c] += int(cs.sets(pt)[0, c])
            e = _expected_coverage(cs.n_cal[c], alpha)
            mean[c] += e
            var[c] += e * (1 - e)
    for c in (0, 1):
        assert abs(covered[c] - mean[c]) <= 4 * math.sqrt(var[c]), (c, covered[c], mean[c])
        assert mean[c] / S >= 1 - alpha                              # the exact marginal guarantee
        assert covered[c] / S >= 1 - alpha - 4 * math.sqrt(alpha * (1 - alpha) / S)


def test_coverage_slack_holds_with_probability_one_minus_delta():
    """Monte Carlo: with n_cal calibration and m test images of a class, the observed coverage is at
    least 1 - alpha - slack in at least 1 - delta of the draws."""
    rng = np.random.default_rng(7)
    n_cal, m, alpha, delta = 30, 117, 0.1, 0.05
    slack = C.coverage_slack(n_cal, m, alpha, delta)
    assert 0 < slack < 0.2
    ok = 0
    R = 1500
    for _ in range(R):
        cal = rng.random(n_cal)                       # scores of one class (continuous, exchangeable)
        test = rng.random(m)
        j = next(k for k in range(n_cal + 2) if (k + 1) / (n_cal + 1) >= alpha)
        q = np.sort(cal)[n_cal - j] if j else np.inf
        ok += (test <= q).mean() >= 1 - alpha - slack
    assert ok / R >= 1 - delta - 3 * math.sqrt(delta * (1 - delta) / R)
    # more data, less slack
    assert C.coverage_slack(300, 1000, alpha) < slack
    with pytest.raises(ValueError, match="alpha"):
        C.coverage_slack(10, 10, 1.5)


def test_clopper_pearson_matches_scipy():
    for k, n in [(0, 10), (3, 10), (10, 10), (17, 120), (50, 51)]:
        want = binomtest(k, n).proportion_ci(confidence_level=0.9, method="exact").high  # one-sided 95 %
        assert C.clopper_pearson_upper(k, n, 0.05) == pytest.approx(want, abs=1e-9)


def test_sgr_bound_holds_over_many_seeds():
    """The chosen threshold's true selective risk (on a huge test draw) exceeds the target in at
    most delta of the calibration draws (plus sampling error)."""
    target, delta = 0.1, 0.1
    big_y, big_p = draw(np.random.default_rng(10_000), 200_000)
    from melanoma.evaluate.uncertainty import entropy

    H = entropy(big_p)
    err = (big_p > 0.5) != (big_y == 1)
    over, met = 0, 0
    R = 200
    for seed in range(R):
        y, p = draw(np.random.default_rng(seed), 400)
        s = C.fit_sgr(y, p, target, delta)
        if not s.met:
            continue
        met += 1
        assert s.bound <= target and s.coverage > 0
        keep = H <= s.threshold
        over += err[keep].mean() > target
    assert met >= R // 2
    assert over / met <= delta + 3 * math.sqrt(delta * (1 - delta) / met)


def test_sgr_not_met_is_reported():
    y, p = draw(np.random.default_rng(0), 30)
    s = C.fit_sgr(y, p, target=0.01, delta=0.05)
    assert not s.met and math.isnan(s.threshold) and s.coverage == 0.0


def test_compare_methods_keeps_the_conformal_promise_on_exchangeable_data():
    rng = np.random.default_rng(3)
    yv, pv = draw(rng, 600)
    yt, pt = draw(rng, 3000)
    from melanoma.evaluate.uncertainty import entropy, relative_threshold

    keep = entropy(pt) <= relative_threshold(pv, 0.1)
    r = C.compare_methods(yv, pv, yt, pt, entropy_keep=keep, alpha=0.1, B=100)
    conf = r["conformal"]
    assert conf["kept"] is True
    # at most alpha (+ slack) of melanomas get a confident benign label
    assert conf["miss_rate"] <= 0.1 + conf["class_coverage"]["melanoma"]["slack"]
    for k in ("entropy", "conformal", "sgr"):
        m = r[k]
        assert m["ci"]["coverage"]["low"] <= m["coverage"] <= m["ci"]["coverage"]["high"]
        assert m["melanoma_missed"] <= m["n_melanoma"] and m["n"] == 3000
        assert set(r["curves"][k]) == {"parameter", "value", "coverage", "miss_rate"}
    assert r["entropy"]["kept"] is None and "none" in r["entropy"]["promise"]
    # conformal's curve: a larger alpha retains more and misses more melanomas (on average)
    c = r["curves"]["conformal"]
    assert c["coverage"][-1] > c["coverage"][0] and c["miss_rate"][-1] >= c["miss_rate"][0]


def test_conformal_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        C.fit_conformal([1, 1, 1], [0.9, 0.8, 0.7])
    with pytest.raises(ValueError, match="alpha"):
        C.fit_conformal([1, 0], [0.9, 0.1], alpha=0)

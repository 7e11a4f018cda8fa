"""Tests of melanoma.evaluate.metrics against scikit-learn, torchmetrics and the official ISIC scorer,
hand-computed cases, shared invariants, edge cases and input validation."""

from __future__ import annotations

import doctest
import functools
import math
import re
import warnings

import numpy as np
import pandas as pd
import pytest
import sklearn.metrics as skm
from sklearn.calibration import calibration_curve

from melanoma.evaluate import metrics as M
from melanoma.evaluate.metrics import MetricUndefinedWarning

# every scalar metric of the module, with its default arguments
THRESHOLDED = {
    "precision": M.precision,
    "sensitivity": M.sensitivity,
    "specificity": M.specificity,
    "f1": M.f1,
    "accuracy": M.accuracy,
    "balanced_accuracy": M.balanced_accuracy,
    "macro_precision": M.macro_precision,
    "macro_f1": M.macro_f1,
}
PROBABILISTIC = {
    "auc": M.auc,
    "ece": M.ece,
    "adaptive_ece": M.adaptive_ece,
    "mce": M.mce,
    "ece_positive": functools.partial(M.ece, confidence="positive"),
    "brier": M.brier,
    "nll": M.nll,
}
ALL = {**THRESHOLDED, **PROBABILISTIC}


def random_case(seed: int, n: int = 300, ties: bool = False):
    """Labels drawn from a miscalibrated model so every metric is away from its bounds."""
    rng = np.random.default_rng(seed)
    p = rng.beta(0.7, 0.7, n)
    if ties:  # coarse probabilities: many exact ties, values exactly 0, 0.5 and 1
        p = np.round(p * 8) / 8
    y = (rng.random(n) < np.clip(1.3 * p - 0.15, 0, 1)).astype(int)
    return y, p


CASES = [random_case(s) for s in range(4)] + [random_case(10 + s, n=60, ties=True) for s in range(3)]


def test_doctests():
    res = doctest.testmod(M, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 15 and res.failed == 0


# --------------------------------------------------------------------------------------------
# validation: exact messages
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "y, p, exc, msg",
    [
        ([0, 1], [0.1, 0.2, 0.3], ValueError, "y and p have different lengths: 2 != 3"),
        ([0, 1], [0.1, np.nan], ValueError, "p contains NaN or infinite values"),
        ([0, 1], [0.1, np.inf], ValueError, "p contains NaN or infinite values"),
        ([0, 1], [0.1, 1.2], ValueError, "p has values outside [0, 1]"),
        ([0, 1], [-0.1, 0.2], ValueError, "p has values outside [0, 1]"),
        ([0, 2, 3], [0.1, 0.2, 0.3], ValueError, "y has labels other than 0 and 1: [2, 3]"),
        ([0, -1], [0.1, 0.2], ValueError, "y has labels other than 0 and 1: [-1]"),
        ([[0, 1]], [0.1, 0.2], ValueError, "y must be a 1-D array of 0/1 labels with shape (n,), got shape (1, 2)"),
        ([0, 1], [[0.9, 0.1], [0.2, 0.8]], ValueError,
         "p must be a 1-D array of p(melanoma) with shape (n,), got shape (2, 2)"),
        (["a", "b"], [0.1, 0.2], TypeError, "y must hold 0/1 labels, got dtype <U1"),
        ([0, 1], ["x", "y"], TypeError, "p must hold numeric probabilities, got dtype <U1"),
    ],
)
@pytest.mark.parametrize("fn", [M.accuracy, M.auc, M.ece, M.brier, M.classification_report])
def test_validation_messages(fn, y, p, exc, msg):
    with pytest.raises(exc, match=f"^{re.escape(msg)}$"):
        fn(y, p)


def test_argument_validation_messages():
    y, p = [0, 1], [0.2, 0.7]
    with pytest.raises(ValueError, match=re.escape("threshold must be a number in [0, 1], got 1.5")):
        M.precision(y, p, threshold=1.5)
    with pytest.raises(ValueError, match=re.escape("n_bins must be a positive integer, got 0")):
        M.ece(y, p, n_bins=0)
    with pytest.raises(ValueError, match=re.escape("strategy must be one of ('uniform', 'quantile'), got 'x'")):
        M.ece(y, p, strategy="x")
    with pytest.raises(ValueError, match=re.escape("confidence must be one of ('top-label', 'positive'), got 'max'")):
        M.reliability_curve(y, p, confidence="max")
    with pytest.raises(ValueError, match=re.escape("B must be a positive integer, got 0")):
        M.bootstrap_ci(M.accuracy, y, p, B=0)
    with pytest.raises(ValueError, match=re.escape("alpha must be in (0, 1), got 1.0")):
        M.bootstrap_ci(M.accuracy, y, p, alpha=1.0)


def test_accepts_bool_and_float_labels():
    p = [0.2, 0.7, 0.9]
    assert M.accuracy([False, True, True], p) == M.accuracy([0.0, 1.0, 1.0], p) == 1.0


# --------------------------------------------------------------------------------------------
# against scikit-learn
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_thresholded_metrics_match_sklearn(case, threshold):
    y, p = CASES[case]
    yhat = (p > threshold).astype(int)
    kw = dict(zero_division=np.nan)
    assert M.precision(y, p, threshold) == pytest.approx(skm.precision_score(y, yhat, **kw))
    assert M.sensitivity(y, p, threshold) == pytest.approx(skm.recall_score(y, yhat, **kw))
    assert M.specificity(y, p, threshold) == pytest.approx(skm.recall_score(y, yhat, pos_label=0, **kw))
    assert M.f1(y, p, threshold) == pytest.approx(skm.f1_score(y, yhat, **kw))
    assert M.accuracy(y, p, threshold) == pytest.approx(skm.accuracy_score(y, yhat))
    assert M.balanced_accuracy(y, p, threshold) == pytest.approx(skm.balanced_accuracy_score(y, yhat))
    assert M.macro_precision(y, p, threshold) == pytest.approx(skm.precision_score(y, yhat, average="macro", **kw))
    assert M.macro_f1(y, p, threshold) == pytest.approx(skm.f1_score(y, yhat, average="macro", **kw))
    tn, fp, fn, tp = skm.confusion_matrix(y, yhat, labels=[0, 1]).ravel()
    assert M.confusion_counts(y, p, threshold) == {"tp": tp, "fp": fp, "tn": tn, "fn": fn}


@pytest.mark.parametrize("case", range(len(CASES)))
def test_probabilistic_metrics_match_sklearn(case):
    y, p = CASES[case]
    assert M.auc(y, p) == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert M.brier(y, p) == pytest.approx(skm.brier_score_loss(y, p), abs=1e-12)
    assert M.nll(y, p) == pytest.approx(skm.log_loss(y, np.stack([1 - p, p], axis=1), labels=[0, 1]), rel=1e-12)


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
@pytest.mark.parametrize("n_bins", [5, 10, 15])
def test_reliability_curve_positive_matches_sklearn_calibration_curve(case, strategy, n_bins):
    y, p = CASES[case]
    prob_true, prob_pred = calibration_curve(y, p, n_bins=n_bins, strategy=strategy)
    r = M.reliability_curve(y, p, n_bins=n_bins, strategy=strategy, confidence="positive")
    np.testing.assert_allclose(r["accuracy"], prob_true, atol=1e-12)
    np.testing.assert_allclose(r["confidence"], prob_pred, atol=1e-12)
    assert r["count"].sum() == len(y) and np.all(r["count"] > 0)


def test_nll_clips_confident_mistakes_like_sklearn():
    y, p = np.array([1, 0]), np.array([0.0, 1.0])
    assert math.isfinite(M.nll(y, p))
    assert M.nll(y, p) == pytest.approx(skm.log_loss(y, np.stack([1 - p, p], 1), labels=[0, 1]))


# --------------------------------------------------------------------------------------------
# against torchmetrics
# --------------------------------------------------------------------------------------------
#
# torchmetrics' *binary* calibration error bins p(positive) itself and compares it with the
# label (confidence = preds, accuracy = target): it is the calibration of p(melanoma), i.e. our
# confidence="positive" — despite its docstring calling it "top-label". The paper's top-label
# ECE (confidence = max softmax, accuracy = argmax correct) is torchmetrics' *multiclass*
# calibration error on the two-column softmax [1 - p, p]. torchmetrics casts the multiclass
# confidences to float32, hence the 1e-6 tolerance there.


@pytest.fixture(scope="module")
def tm():
    torch = pytest.importorskip("torch")
    tmf = pytest.importorskip("torchmetrics.functional.classification")
    tmc = pytest.importorskip("torchmetrics.classification")
    return torch, tmf, tmc


def _t(tm, y, p):
    torch = tm[0]
    return torch.tensor(y), torch.tensor(p, dtype=torch.float64)


@pytest.mark.parametrize("case", range(4))  # continuous p: no value on a bin edge
@pytest.mark.parametrize("norm, ours", [("l1", M.ece), ("max", M.mce)])
def test_positive_class_ece_mce_match_torchmetrics_binary(tm, case, norm, ours):
    _, _, tmc = tm
    y, p = CASES[case]
    ty, tp = _t(tm, y, p)
    ref = tmc.BinaryCalibrationError(n_bins=10, norm=norm)(tp, ty).item()
    assert ours(y, p, n_bins=10, confidence="positive") == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("case", range(4))
@pytest.mark.parametrize("norm, ours", [("l1", M.ece), ("max", M.mce)])
def test_top_label_ece_mce_match_torchmetrics_multiclass(tm, case, norm, ours):
    torch, _, tmc = tm
    y, p = CASES[case]
    ty, tp = _t(tm, y, p)
    ref = tmc.MulticlassCalibrationError(num_classes=2, n_bins=10, norm=norm)(torch.stack([1 - tp, tp], 1), ty).item()
    assert ours(y, p, n_bins=10) == pytest.approx(ref, abs=2e-6)


def test_top_label_and_positive_ece_differ(tm):
    """The two views are different numbers; the paper's is the top-label one."""
    _, tmf, _ = tm
    y, p = CASES[0]
    ty, tp = _t(tm, y, p)
    binary = tmf.binary_calibration_error(tp, ty, n_bins=10).item()
    assert M.ece(y, p) != pytest.approx(binary, abs=1e-3)
    assert M.ece(y, p, confidence="positive") == pytest.approx(binary, abs=1e-12)


def test_saturated_probabilities_torchmetrics_own_bin(tm):
    """torchmetrics bins [lo, hi) and puts confidence exactly 1 in an extra bin of its own; we
    bin (lo, hi] like scikit-learn and Guo et al., so c = 1 joins the last bin. Documented
    difference: torchmetrics = (our ECE on the other samples) * share + |acc - 1| * share(c=1)."""
    _, tmf, _ = tm
    y = np.array([1, 0, 1, 1, 0, 1, 0])
    p = np.array([1.0, 1.0, 0.95, 0.92, 0.0, 0.7, 0.3])
    ty, tp = _t(tm, y, p)
    ref = tmf.binary_calibration_error(tp, ty, n_bins=10, norm="l1").item()
    sat = p == 1.0
    expected = (~sat).mean() * M.ece(y[~sat], p[~sat], confidence="positive") + sat.mean() * abs(y[sat].mean() - 1.0)
    assert ref == pytest.approx(expected, abs=1e-12)
    assert ref > M.ece(y, p, confidence="positive")  # splitting a bin never lowers the ECE


# --------------------------------------------------------------------------------------------
# against the official ISIC challenge scorer
# --------------------------------------------------------------------------------------------


def _isic_scores(y, p) -> pd.Series:
    from isic_challenge_scoring.classification import ClassificationMetric, ClassificationScore

    truth = pd.DataFrame({"MEL": y.astype(float), "NEV": 1.0 - y})
    pred = pd.DataFrame({"MEL": p, "NEV": 1.0 - p})
    w = pd.DataFrame({"score_weight": np.ones(len(y)), "validation_weight": np.ones(len(y))})
    return ClassificationScore(truth, pred, w, ClassificationMetric.AUC).per_category.loc["MEL"]


@pytest.mark.filterwarnings("ignore:The inplace keyword")  # the scorer's own pandas deprecation
@pytest.mark.parametrize("case", range(len(CASES)))
def test_match_isic_challenge_scorer(case):
    pytest.importorskip("isic_challenge_scoring")
    y, p = CASES[case]
    ref = _isic_scores(y, p)
    assert M.auc(y, p) == pytest.approx(ref["auc"], abs=1e-12)
    assert M.sensitivity(y, p) == pytest.approx(ref["sensitivity"])
    assert M.specificity(y, p) == pytest.approx(ref["specificity"])
    assert M.accuracy(y, p) == pytest.approx(ref["accuracy"])
    assert M.precision(y, p) == pytest.approx(ref["ppv"])
    assert M.f1(y, p) == pytest.approx(ref["dice"])  # Dice of the binary masks = F1


def test_isic_scorer_edge_cases_differ_only_by_convention():
    """With no melanoma the ISIC scorer scores sensitivity as a 'freebie' 1.0; we say nan.
    Where both are defined the numbers agree."""
    pytest.importorskip("isic_challenge_scoring")
    from isic_challenge_scoring import metrics as im
    from isic_challenge_scoring.confusion import create_binary_confusion_matrix

    y, p = np.zeros(5, dtype=int), np.array([0.1, 0.6, 0.2, 0.5, 0.9])
    cm = create_binary_confusion_matrix(y > 0.5, p > 0.5)
    assert im.binary_sensitivity(cm) == 1.0 and math.isnan(M.sensitivity(y, p))
    assert im.binary_specificity(cm) == pytest.approx(M.specificity(y, p)) == 3 / 5
    # p == 0.5 is non-melanoma for both (strict '>')
    assert M.predict([0.5]).tolist() == [0] and not bool((np.array([0.5]) > 0.5)[0])


# --------------------------------------------------------------------------------------------
# hand-computed cases
# --------------------------------------------------------------------------------------------


def test_perfectly_calibrated_toy_has_zero_ece():
    # top-label: 10 at confidence 0.9 with 9 right, 5 at confidence 0.6 with 3 right
    y = np.array([1] * 9 + [0] + [0] * 3 + [1] * 2)
    p = np.array([0.9] * 10 + [0.4] * 5)
    assert M.ece(y, p) == pytest.approx(0.0, abs=1e-12)
    assert M.mce(y, p) == pytest.approx(0.0, abs=1e-12)
    r = M.reliability_curve(y, p)
    assert r["count"].tolist() == [5, 10]
    np.testing.assert_allclose(r["accuracy"], r["confidence"])


def test_ece_mce_hand_computed():
    # conf 0.9 right (bin 9), conf 0.6 wrong (bin 6), conf 0.8 wrong (bin 8), conf 0.8 right
    y = np.array([1, 0, 0, 0])
    p = np.array([0.9, 0.6, 0.8, 0.2])
    expected_ece = (1 * 0.1 + 1 * 0.6 + 2 * abs(0.5 - 0.8)) / 4
    assert M.ece(y, p) == pytest.approx(expected_ece)
    assert M.mce(y, p) == pytest.approx(0.6)
    assert M.brier(y, p) == pytest.approx((0.01 + 0.36 + 0.64 + 0.04) / 4)
    assert M.nll(y, p) == pytest.approx(-(np.log(0.9) + np.log(0.4) + np.log(0.2) + np.log(0.8)) / 4)


def test_auc_hand_computed_with_ties():
    assert M.auc([0, 1], [0.3, 0.3]) == 0.5
    assert M.auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert M.auc([1, 1, 0], [0.9, 0.2, 0.2]) == pytest.approx((1 + 0.5) / 2)


def test_bin_edges_are_right_closed():
    # 0.5 top-label confidence belongs to bin (0.4, 0.5]; 1.0 to the last bin
    r = M.reliability_curve([0, 1], [0.5, 1.0], n_bins=10)
    np.testing.assert_allclose(r["bin_upper"], [0.5, 1.0])


# --------------------------------------------------------------------------------------------
# undefined cases
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("y", [[1, 1, 1], [0, 0, 0]])
def test_auc_one_class_is_nan_with_reason(y):
    with pytest.warns(MetricUndefinedWarning, match="AUC is undefined: only one class present"):
        assert math.isnan(M.auc(y, [0.2, 0.6, 0.9]))


def test_empty_input_gives_nan_not_crash():
    with pytest.warns(MetricUndefinedWarning, match="no samples"):
        r = M.classification_report([], [])
    assert r["n"] == 0 and r["n_melanoma"] == 0
    for k in M.REPORT_METRICS:
        assert math.isnan(r[k]), k
    assert M.reliability_curve([], [])["count"].size == 0


def test_zero_denominators_are_nan():
    y, p = np.array([0, 0, 1]), np.array([0.1, 0.2, 0.3])  # nothing predicted melanoma
    assert math.isnan(M.precision(y, p))
    assert math.isnan(M.macro_precision(y, p))
    assert M.sensitivity(y, p) == 0.0
    assert math.isnan(M.sensitivity([0, 0], [0.1, 0.9]))
    assert math.isnan(M.specificity([1, 1], [0.1, 0.9]))
    assert math.isnan(M.f1([0, 0], [0.1, 0.2]))
    assert math.isnan(M.balanced_accuracy([1, 1], [0.1, 0.9]))


# --------------------------------------------------------------------------------------------
# invariants shared by every metric
# --------------------------------------------------------------------------------------------

# flipping the classes (y -> 1 - y, p -> 1 - p) leaves these unchanged ...
FLIP_INVARIANT = {"accuracy", "balanced_accuracy", "macro_precision", "macro_f1", "auc", "ece",
                  "adaptive_ece", "mce", "brier", "nll"}
# ... and swaps these pairs
FLIP_SWAPS = {"sensitivity": "specificity", "specificity": "sensitivity"}


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("case", range(len(CASES)))
def test_shared_invariants(name, case):
    fn = ALL[name]
    y, p = CASES[case]
    v = fn(y, p)
    assert isinstance(v, float)
    if name == "nll":
        assert v >= 0
    else:
        assert 0.0 <= v <= 1.0
    # a metric of a set: the order of the samples does not matter
    perm = np.random.default_rng(case).permutation(len(y))
    assert fn(y[perm], p[perm]) == pytest.approx(v, abs=1e-12)
    # inputs are not modified
    y0, p0 = y.copy(), p.copy()
    fn(y, p)
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(p, p0)
    # class-flip symmetry (continuous p only: a tie at 0.5 is non-melanoma either way)
    if case < 4:
        flipped = {"y": 1 - y, "p": 1.0 - p}
        if name in FLIP_INVARIANT:
            assert fn(flipped["y"], flipped["p"]) == pytest.approx(v, abs=1e-9)
        elif name in FLIP_SWAPS:
            assert ALL[FLIP_SWAPS[name]](flipped["y"], flipped["p"]) == pytest.approx(v, abs=1e-12)


@pytest.mark.parametrize("name", ["ece", "adaptive_ece", "mce", "brier", "nll"])
def test_lower_is_better_losses_are_zero_for_a_perfect_confident_model(name):
    y = np.array([0, 1, 1, 0, 1])
    assert ALL[name](y, y.astype(float)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("name", sorted(THRESHOLDED) + ["auc"])
def test_higher_is_better_scores_are_one_for_a_perfect_model(name):
    y = np.array([0, 1, 1, 0, 1])
    assert ALL[name](y, np.where(y == 1, 0.8, 0.3)) == 1.0


# --------------------------------------------------------------------------------------------
# bootstrap and the report
# --------------------------------------------------------------------------------------------


def test_bootstrap_matches_manual_percentiles_and_is_seeded():
    y, p = CASES[0]
    ci = M.bootstrap_ci(M.brier, y, p, B=200, alpha=0.1, seed=3)
    rng = np.random.default_rng(3)
    idx = rng.integers(0, len(y), size=(200, len(y)))
    draws = np.array([skm.brier_score_loss(y[i], p[i]) for i in idx])
    assert ci["low"] == pytest.approx(np.quantile(draws, 0.05))
    assert ci["high"] == pytest.approx(np.quantile(draws, 0.95))
    assert ci["estimate"] == pytest.approx(M.brier(y, p))
    assert ci["n_valid"] == 200 and ci["B"] == 200
    assert M.bootstrap_ci(M.brier, y, p, B=200, alpha=0.1, seed=3) == ci
    assert M.bootstrap_ci(M.brier, y, p, B=200, alpha=0.1, seed=4) != ci
    assert ci["low"] <= ci["estimate"] <= ci["high"]


def test_bootstrap_drops_nan_draws():
    y = np.array([1, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.2, 0.1, 0.3, 0.6, 0.4])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # draws must not leak warnings
        ci = M.bootstrap_ci(M.auc, y, p, B=300, seed=0)
    assert 0 < ci["n_valid"] < 300  # some resamples have no melanoma
    assert 0 <= ci["low"] <= ci["high"] <= 1


def test_bootstrap_all_nan_gives_nan_bounds():
    with pytest.warns(MetricUndefinedWarning):
        ci = M.bootstrap_ci(M.auc, [1, 1, 1], [0.2, 0.5, 0.9], B=50)
    assert ci["n_valid"] == 0 and math.isnan(ci["low"]) and math.isnan(ci["high"])


def test_bootstrap_any_metric_callable():
    y, p = CASES[1]
    ci = M.bootstrap_ci(functools.partial(M.ece, n_bins=15, strategy="quantile"), y, p, B=50)
    assert ci["estimate"] == pytest.approx(M.ece(y, p, n_bins=15, strategy="quantile"))


REPORT_KEYS = {"precision", "sensitivity", "specificity", "f1", "accuracy", "balanced_accuracy", "auc",
               "ece", "brier", "nll", "mce", "n", "n_melanoma"}


@pytest.mark.parametrize("case", [0, 5])
def test_report_equals_individual_functions(case):
    y, p = CASES[case]
    r = M.classification_report(y, p, threshold=0.4, n_bins=12)
    assert REPORT_KEYS <= set(r)
    assert r["n"] == len(y) and r["n_melanoma"] == int(y.sum())
    for name, fn in THRESHOLDED.items():
        assert r[name] == pytest.approx(fn(y, p, 0.4), nan_ok=True), name
    assert r["auc"] == M.auc(y, p)
    assert r["ece"] == pytest.approx(M.ece(y, p, n_bins=12))
    assert r["adaptive_ece"] == pytest.approx(M.adaptive_ece(y, p, n_bins=12))
    assert r["mce"] == pytest.approx(M.mce(y, p, n_bins=12))
    assert r["brier"] == M.brier(y, p) and r["nll"] == M.nll(y, p)
    assert {k: r[k] for k in ("tp", "fp", "tn", "fn")} == M.confusion_counts(y, p, 0.4)
    assert "ci" not in r


def test_report_with_ci():
    y, p = CASES[2]
    r = M.classification_report(y, p, ci=True, B=40, seed=1)
    assert set(r["ci"]) == set(M.REPORT_METRICS)
    assert r["ci_params"] == {"B": 40, "alpha": 0.05, "seed": 1, "method": "percentile"}
    for k, c in r["ci"].items():
        assert c["low"] <= c["high"], k
    # paired resamples: same seed, same interval as bootstrap_ci for a single metric
    single = M.bootstrap_ci(M.accuracy, y, p, B=40, seed=1)
    assert (r["ci"]["accuracy"]["low"], r["ci"]["accuracy"]["high"]) == (single["low"], single["high"])


def test_report_one_class_warns_once_and_auc_nan():
    with pytest.warns(MetricUndefinedWarning) as rec:
        r = M.classification_report([0, 0, 0], [0.1, 0.7, 0.2], ci=True, B=20)
    assert len(rec) == 1
    assert math.isnan(r["auc"]) and math.isnan(r["sensitivity"])
    assert r["specificity"] == pytest.approx(2 / 3)
    assert r["ci"]["auc"]["n_valid"] == 0

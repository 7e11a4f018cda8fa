"""melanoma.train.probe: the L-BFGS linear probe picks C on validation, deterministically, and is
folded into the network's Linear head as scikit-learn's standardised logistic regression."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from melanoma.train.probe import DEFAULT_C_GRID, fit_logistic_probe, load_into_head

GRID = [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0]


def _data(n=240, d=12, seed=0, prevalence=0.3):
    """Two Gaussian classes apart along a few directions, features on very different scales."""
    rng = np.random.default_rng(seed)
    w = np.zeros(d)
    w[:3] = [1.0, -0.7, 0.5]
    scale = np.logspace(-2, 2, d)

    def draw(m):
        y = (rng.random(m) < prevalence).astype(int)
        X = rng.normal(size=(m, d)) + np.outer(2 * y - 1, w)
        return X * scale + 5.0, y
    return (*draw(n), *draw(n // 2))


def _quiet(*a, **k):
    pass


def _sklearn(Xtr, ytr, C, balanced=True):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, class_weight="balanced" if balanced else None,
                                                             max_iter=5000, tol=1e-8)).fit(Xtr, ytr)


def test_C_is_chosen_by_validation_loss_and_the_head_is_sklearns_model():
    from sklearn.metrics import log_loss

    Xtr, ytr, Xva, yva = _data()
    fit = fit_logistic_probe(Xtr, ytr, Xva, yva, C_grid=GRID, log=_quiet)
    # each candidate's validation loss, independently
    losses = [log_loss(yva, _sklearn(Xtr, ytr, C).predict_proba(Xva)[:, 1]) for C in GRID]
    np.testing.assert_allclose([h["val_loss"] for h in fit["history"]], losses, atol=1e-4)
    k = int(np.argmin(losses))
    assert (fit["index"], fit["C"]) == (k, GRID[k]) and fit["C_grid"] == GRID and fit["select"] == "val_loss"
    assert fit["at_edge"] == (k in (0, len(GRID) - 1)) and fit["converged"]
    # folded into a Linear head: logits ±z/2 on the raw (unstandardised) features
    head = torch.nn.Linear(Xtr.shape[1], 2)
    load_into_head(head, fit)
    with torch.no_grad():
        logits = head(torch.from_numpy(Xva.astype(np.float32))).double().numpy()
    z = _sklearn(Xtr, ytr, GRID[k]).decision_function(Xva)
    np.testing.assert_allclose(logits[:, 1] - logits[:, 0], z, atol=1e-3 * np.abs(z).max())
    np.testing.assert_allclose(logits[:, 0], -logits[:, 1], atol=1e-4)


def test_deterministic_and_independent_of_the_grids_order():
    Xtr, ytr, Xva, yva = _data(seed=1)
    a = fit_logistic_probe(Xtr, ytr, Xva, yva, C_grid=GRID, log=_quiet)
    b = fit_logistic_probe(Xtr, ytr, Xva, yva, C_grid=GRID[::-1], log=_quiet)
    assert a["C"] == b["C"] and b["C_grid"] == GRID
    assert np.array_equal(a["weight"], b["weight"]) and np.array_equal(a["bias"], b["bias"])
    assert [h["val_loss"] for h in a["history"]] == [h["val_loss"] for h in b["history"]]


@pytest.mark.parametrize("select", ["val_accuracy", "val_auc"])
def test_other_criteria_pick_the_highest(select):
    Xtr, ytr, Xva, yva = _data(seed=2)
    fit = fit_logistic_probe(Xtr, ytr, Xva, yva, C_grid=GRID, select=select, log=_quiet)
    scores = [h[select] for h in fit["history"]]
    assert fit["index"] == int(np.argmax(scores)) and fit["select"] == select


def test_the_edge_of_the_grid_is_reported():
    Xtr, ytr, Xva, yva = _data(seed=3)
    logs = []
    fit = fit_logistic_probe(Xtr, ytr, Xva, yva, C_grid=[1e-7, 1e-6], log=logs.append)
    assert fit["at_edge"] is True
    assert any("WARNING: the best C" in m and "edge of the grid [1e-07, 1e-06]; widen reg_grid" in m for m in logs)
    one = fit_logistic_probe(Xtr, ytr, Xva, yva, C_grid=[1.0], log=_quiet)
    assert one["at_edge"] is False and one["C"] == 1.0      # a single candidate has no edge to widen


def _z(fit, X):
    """logit_1 - logit_0 of the folded head."""
    return X @ (fit["weight"][1] - fit["weight"][0]).astype(np.float64) + float(fit["bias"][1] - fit["bias"][0])


def test_class_weights_follow_balanced():
    Xtr, ytr, Xva, yva = _data(seed=4, prevalence=0.15)
    bal = fit_logistic_probe(Xtr, ytr, Xva, yva, C_grid=[0.1], log=_quiet)
    raw = fit_logistic_probe(Xtr, ytr, Xva, yva, C_grid=[0.1], balanced=False, log=_quiet)
    for fit, balanced in ((bal, True), (raw, False)):
        z = _sklearn(Xtr, ytr, 0.1, balanced).decision_function(Xva)
        np.testing.assert_allclose(_z(fit, Xva), z, atol=1e-3 * np.abs(z).max())
    # up-weighting the rare melanomas raises every score
    assert (_z(bal, Xva) > _z(raw, Xva)).mean() > 0.9
    # the reported training loss is the unweighted log loss of the fitted model
    z = _sklearn(Xtr, ytr, 0.1, False).decision_function(Xtr)
    assert raw["history"][0]["train_loss"] == pytest.approx(float(np.mean(np.logaddexp(0, -(2 * ytr - 1) * z))),
                                                            rel=1e-4)


def test_a_one_class_validation_split_takes_the_middle_candidate_by_auc():
    Xtr, ytr, Xva, yva = _data(seed=5)
    fit = fit_logistic_probe(Xtr, ytr, Xva, np.zeros_like(yva), C_grid=GRID, select="val_auc", log=_quiet)
    assert all(math.isnan(h["val_auc"]) for h in fit["history"]) and fit["index"] == len(GRID) // 2


def test_an_empty_validation_split_takes_the_middle_candidate():
    Xtr, ytr, _, _ = _data(seed=5)
    fit = fit_logistic_probe(Xtr, ytr, Xtr[:0], ytr[:0], C_grid=GRID, log=_quiet)
    assert fit["index"] == len(GRID) // 2 and all(math.isnan(h["val_loss"]) for h in fit["history"])


def test_constant_features_do_not_break_standardisation():
    Xtr, ytr, Xva, yva = _data(seed=6)
    Xtr[:, 4] = Xva[:, 4] = 3.0
    fit = fit_logistic_probe(Xtr, ytr, Xva, yva, C_grid=[1.0], log=_quiet)
    assert np.isfinite(fit["weight"]).all() and np.isfinite(fit["bias"]).all()
    assert fit["weight"][1, 4] == 0.0


@pytest.mark.parametrize("kw,match", [
    (dict(C_grid=[]), "C_grid must hold positive finite numbers"),
    (dict(C_grid=[1.0, 0.0]), "C_grid must hold positive finite numbers"),
    (dict(C_grid=[float("inf")]), "C_grid must hold positive finite numbers"),
    (dict(select="auc"), "select must be val_loss, val_accuracy or val_auc, got 'auc'"),
])
def test_bad_arguments(kw, match):
    Xtr, ytr, Xva, yva = _data(n=40)
    with pytest.raises(ValueError, match=match):
        fit_logistic_probe(Xtr, ytr, Xva, yva, log=_quiet, **kw)


def test_one_class_cannot_be_fitted():
    Xtr, _, Xva, yva = _data(n=40)
    with pytest.raises(ValueError, match="one class only"):
        fit_logistic_probe(Xtr, np.zeros(len(Xtr), int), Xva, yva, log=_quiet)


def test_load_into_head_checks_the_shape():
    Xtr, ytr, Xva, yva = _data(n=60)
    fit = fit_logistic_probe(Xtr, ytr, Xva, yva, C_grid=[1.0], log=_quiet)
    for head in (torch.nn.Linear(Xtr.shape[1] + 1, 2), torch.nn.Linear(Xtr.shape[1], 3)):
        with pytest.raises(ValueError, match=r"head is Linear\(\d+, \d+\); the probe has 12 features and 2 classes"):
            load_into_head(head, fit)


def test_the_default_grid_spans_half_decades():
    assert DEFAULT_C_GRID[0] == 1e-5 and DEFAULT_C_GRID[-1] == 100.0 and len(DEFAULT_C_GRID) == 15
    np.testing.assert_allclose(np.diff(np.log10(DEFAULT_C_GRID)), 0.5, atol=2e-3)

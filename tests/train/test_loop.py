"""melanoma.train.loop: epoch orders, validation metrics, and fit — the epoch loop every path shares —
driving real runs (melanoma.train.run.Run) through a minimal Steps on a tiny work folder."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from melanoma.train.loop import epoch_order, fit, predict_batches, val_metrics
from melanoma.train.params import TrainParams
from melanoma.train.run import Run

from tests.tinywork import CACHE, standard_work


def test_oversampling_balances_classes():  # moved here from the recipe's tests
    y = np.array([0] * 90 + [1] * 10)
    draws = np.concatenate([y[epoch_order(y, e, 0)] for e in range(20)])
    assert 0.45 < draws.mean() < 0.55
    assert (epoch_order(y, 3, 0) == epoch_order(y, 3, 0)).all()
    assert not (epoch_order(y, 3, 0) == epoch_order(y, 4, 0)).all()
    assert sorted(epoch_order(y, 0, 0, oversample=False)) == list(range(100))


def test_epoch_order_depends_on_the_seed_and_draws_n():
    y = np.array([0, 1] * 20)
    assert len(epoch_order(y, 0, 0)) == 40
    assert not np.array_equal(epoch_order(y, 0, 0), epoch_order(y, 0, 1))
    assert not np.array_equal(epoch_order(y, 0, 0, oversample=False), epoch_order(y, 0, 1, oversample=False))


def test_val_metrics_are_cross_entropy_accuracy_and_auc():
    from sklearn.metrics import log_loss, roc_auc_score

    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.normal(size=(50, 2)).astype(np.float32))
    y = rng.integers(0, 2, 50)
    m = val_metrics(logits, y)
    p = torch.softmax(logits.double(), 1).numpy()
    assert m["val_loss"] == pytest.approx(log_loss(y, p[:, 1]), rel=1e-5)
    assert m["val_accuracy"] == pytest.approx(float((p.argmax(1) == y).mean()))
    assert m["val_auc"] == pytest.approx(roc_auc_score(y, p[:, 1]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")       # a one-class validation set: NaN AUC, quietly
        assert np.isnan(val_metrics(logits, np.zeros(50, int))["val_auc"])


def test_predict_batches_concatenates_in_eval_mode():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 2)).train()
    xs = [torch.randn(3, 4), torch.randn(5, 4)]
    out = predict_batches(model, iter(xs), torch.device("cpu"))
    assert not model.training
    with torch.no_grad():
        assert torch.equal(out, model(torch.cat(xs)))
    assert predict_batches(model, iter([]), torch.device("cpu")).shape == (0, 2)


# ----------------------------------------------------------------------------- fit


def _params(work, out, **kw):
    d = dict(work=str(work), out=str(out), model="meshnet", weights="none", freeze="backbone", fast=True,
             solver="sgd", train="B", eval_sets=["isic2017"], image_size=32, cache_size=CACHE, epochs=4,
             lr=0.05, step_size=2, device="cpu")
    d.update(kw)
    return TrainParams.from_dict(d)


class Steps:
    """Train each run's head on fixed per-row features (torch noise added: seeded by fit), and
    record what fit asked for."""

    def __init__(self, runs, fail_eval=False, noise=0.1):
        self.runs, self.fail_eval, self.noise = runs, fail_eval, noise
        self.heads = [r.model.classifier for r in runs]
        for r, h in zip(runs, self.heads):
            r.resume(h)
        self.X = [self._features(r) for r in runs]
        self.calls = []

    @staticmethod
    def _features(r):
        gen = torch.Generator().manual_seed(42)
        def f(rows):
            return torch.randn(len(rows), 21, generator=gen) + torch.from_numpy(rows["label"].clip(lower=0).to_numpy(
                np.float32))[:, None]
        return f(r.combo.train), f(r.combo.val), f(r.ev)

    def train_epoch(self, epoch, orders):
        self.calls.append((epoch, {k: o.copy() for k, o in orders.items()}))
        out = {}
        for k, order in orders.items():
            r, head, (X, _, _) = self.runs[k], self.heads[k], self.X[k]
            tot, correct, n = 0.0, 0, 0
            for s in range(0, len(order), 8):
                idx = torch.from_numpy(order[s:s + 8])
                x = X[idx] + self.noise * torch.randn(len(idx), X.shape[1])
                y = torch.from_numpy(r.y_tr[order[s:s + 8]])
                logits = head(x)
                loss = F.cross_entropy(logits, y)
                r.opt.zero_grad()
                loss.backward()
                r.opt.step()
                tot += float(loss.detach()) * len(idx)
                correct += int((logits.argmax(1) == y).sum())
                n += len(idx)
            out[k] = (tot, correct, n)
        return out

    @torch.no_grad()
    def val_logits(self, k):
        return self.heads[k](self.X[k][1])

    @torch.no_grad()
    def eval_logits(self, k):
        if self.fail_eval:
            raise RuntimeError("killed while predicting")
        return self.heads[k](self.X[k][2])


def _quiet(*a, **k):
    pass


def _outputs(out):
    hist = pd.read_csv(out / "history.csv").drop(columns=["seconds", "img_per_s"])
    pred = pd.read_parquet(out / "predictions.parquet").drop(columns="run_id")
    return hist, pred, torch.load(out / "model.pt", weights_only=True)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return standard_work(tmp_path_factory.mktemp("loop_work"))


@pytest.fixture(scope="module")
def reference(work, tmp_path_factory):
    """One uninterrupted run of 4 epochs, and the calls fit made."""
    r = Run(_params(work, tmp_path_factory.mktemp("ref") / "r"), log=_quiet)
    steps = Steps([r])
    (out,) = fit([r], steps, log=_quiet)
    return out, steps.calls, r


def test_fit_draws_each_epochs_order_and_finishes_the_run(reference):
    out, calls, r = reference
    assert [e for e, _ in calls] == [0, 1, 2, 3]
    for e, orders in calls:
        assert list(orders) == [0] and np.array_equal(orders[0], epoch_order(r.y_tr, e, r.p.seed, r.p.oversample))
    hist, pred, state = _outputs(out)
    assert list(hist["epoch"]) == [1, 2, 3, 4]
    assert list(hist["lr"]) == pytest.approx([0.05, 0.05, 0.005, 0.005])   # StepLR(2, 0.1), stepped per epoch
    assert (out / "run.json").is_file() and not (out / "checkpoint.pt").exists()
    assert len(pred) == len(r.ev) and set(pred["split"]) == {"val", "test"}
    # the best epoch's weights went out: they give the best validation loss of the history
    best = int(hist["val_loss"].idxmin())
    head = torch.nn.Linear(21, 2)
    head.load_state_dict({k.removeprefix("classifier."): v for k, v in state.items() if k.startswith("classifier.")})
    with torch.no_grad():
        m = val_metrics(head(Steps._features(r)[1]), r.y_va)
    assert m["val_loss"] == pytest.approx(hist["val_loss"][best], rel=1e-5)


def test_stopped_and_resumed_equals_uninterrupted(work, reference, tmp_path):
    ref_out, ref_calls, _ = reference
    p = _params(work, tmp_path / "r")
    r = Run(p, log=_quiet)
    logs = []
    fit([r], Steps([r]), stop_after=2, log=logs.append)
    assert (tmp_path / "r" / "checkpoint.pt").is_file() and not (tmp_path / "r" / "run.json").exists()
    assert logs == ["[train] stopping after epoch 2 (stop_after)"]
    logs.clear()
    r2 = Run(p, log=logs.append)
    steps = Steps([r2])
    assert r2.start == 2 and "[train] resuming after epoch 2" in logs
    fit([r2], steps, log=_quiet)
    assert [e for e, _ in steps.calls] == [2, 3]
    for (e, a), (e2, b) in zip(ref_calls[2:], steps.calls):
        assert e == e2 and np.array_equal(a[0], b[0])
    (h1, p1, s1), (h2, p2, s2) = _outputs(ref_out), _outputs(tmp_path / "r")
    pd.testing.assert_frame_equal(h1, h2)
    pd.testing.assert_frame_equal(p1, p2)
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_runs_of_different_lengths_train_side_by_side(work, tmp_path):
    # no noise here: runs side by side share one torch stream per epoch (the first active run's seed)
    alone = Run(_params(work, tmp_path / "alone"), log=_quiet)
    fit([alone], Steps([alone], noise=0.0), log=_quiet)
    short = Run(_params(work, tmp_path / "short", epochs=2), log=_quiet)
    long = Run(_params(work, tmp_path / "long"), log=_quiet)
    steps = Steps([short, long], noise=0.0)
    outs = fit([short, long], steps, log=_quiet)
    assert outs == [tmp_path / "short", tmp_path / "long"]
    assert [(e, sorted(o)) for e, o in steps.calls] == [(0, [0, 1]), (1, [0, 1]), (2, [1]), (3, [1])]
    assert len(pd.read_csv(tmp_path / "short" / "history.csv")) == 2
    # the long run trained as it would alone (each run its own order, head and optimiser)
    h1, p1, _ = _outputs(tmp_path / "alone")
    h2, p2, _ = _outputs(tmp_path / "long")
    pd.testing.assert_frame_equal(h1, h2)
    pd.testing.assert_frame_equal(p1, p2)


def test_a_run_killed_after_its_last_epoch_is_only_finished(work, reference, tmp_path):
    ref_out, _, _ = reference
    p = _params(work, tmp_path / "r")
    r = Run(p, log=_quiet)
    with pytest.raises(RuntimeError, match="killed while predicting"):
        fit([r], Steps([r], fail_eval=True), log=_quiet)
    assert (tmp_path / "r" / "checkpoint.pt").is_file() and not (tmp_path / "r" / "run.json").exists()
    r2 = Run(p, log=_quiet)
    steps = Steps([r2])
    fit([r2], steps, log=_quiet)
    assert steps.calls == [] and (tmp_path / "r" / "run.json").is_file()
    pd.testing.assert_frame_equal(_outputs(ref_out)[1], _outputs(tmp_path / "r")[1])

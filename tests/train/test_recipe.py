"""The training recipe: learning, determinism, resume, and fast path == loop path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from melanoma.train.params import ParamError, TrainParams, epochs_for
from melanoma.train.recipe import train_run


def _params(work, out, **kw):
    d = dict(work=str(work), out=str(out), model="resnet18", weights="none", train="B",
             eval_sets=["isic2017"], image_size=64, epochs=3, cache_size=256)
    d.update(kw)
    return TrainParams.from_dict(d)


def _quiet(*a, **k):
    pass


def test_epochs_schedule():
    assert [epochs_for(n) for n in range(1, 11)] == [30, 34, 36, 38, 40, 42, 44, 46, 48, 50]


def test_fast_path_equals_loop_path(synth_work, tmp_path):
    kw = dict(freeze="backbone", augment=False, feature_dtype="float32", epochs=3)
    fast = train_run(_params(synth_work, tmp_path / "fast", fast=True, solver="sgd", **kw), progress=False, log=_quiet)
    loop = train_run(_params(synth_work, tmp_path / "loop", fast=False, **kw), progress=False, log=_quiet)
    a = torch.load(fast / "model.pt", weights_only=True)
    b = torch.load(loop / "model.pt", weights_only=True)
    assert torch.allclose(a["fc.weight"], b["fc.weight"], atol=1e-5)
    assert torch.allclose(a["fc.bias"], b["fc.bias"], atol=1e-5)
    # and the head did move away from its initialisation
    torch.manual_seed(0)
    from melanoma.train.models import build_model
    init = build_model("resnet18", weights="none", freeze="backbone").state_dict()
    assert not torch.allclose(a["fc.weight"], init["fc.weight"])
    pa = pd.read_parquet(fast / "predictions.parquet")
    pb = pd.read_parquet(loop / "predictions.parquet")
    np.testing.assert_allclose(pa["p_melanoma"], pb["p_melanoma"], atol=1e-4)


def test_loop_path_deterministic_and_resumable(synth_work, tmp_path):
    kw = dict(model="meshnet", freeze="none", epochs=3)
    full = train_run(_params(synth_work, tmp_path / "full", **kw), progress=False, log=_quiet)
    again = train_run(_params(synth_work, tmp_path / "again", **kw), progress=False, log=_quiet)
    p_full = pd.read_parquet(full / "predictions.parquet")
    pd.testing.assert_frame_equal(p_full.drop(columns="run_id"),
                                  pd.read_parquet(again / "predictions.parquet").drop(columns="run_id"))
    # killed after epoch 1 (checkpoint left behind, no run.json), then resumed
    part = train_run(_params(synth_work, tmp_path / "part", **kw), progress=False, log=_quiet, stop_after=1)
    assert (part / "checkpoint.pt").is_file() and not (part / "run.json").is_file()
    logs = []
    train_run(_params(synth_work, tmp_path / "part", **kw), progress=False, log=logs.append)
    assert any("resuming after epoch 1" in l for l in logs)
    pd.testing.assert_frame_equal(p_full.drop(columns="run_id"),
                                  pd.read_parquet(part / "predictions.parquet").drop(columns="run_id"))
    hist = pd.read_csv(part / "history.csv")
    assert list(hist["epoch"]) == [1, 2, 3]
    assert not (part / "checkpoint.pt").exists()


def test_run_outputs(synth_work, tmp_path):
    import json

    out = train_run(_params(synth_work, tmp_path / "r", eval_sets=["isic2017", "isic2018"], freeze="backbone",
                            epochs=2), progress=False, log=_quiet)
    for f in ("params.yaml", "model.pt", "history.csv", "predictions.parquet", "run.json"):
        assert (out / f).is_file(), f
    pred = pd.read_parquet(out / "predictions.parquet")
    assert set(pred["eval_set"]) == {"isic2017", "isic2018"}
    assert set(pred["split"]) == {"val", "test"}
    assert pred["p_melanoma"].between(0, 1).all()
    run = json.loads((out / "run.json").read_text())
    assert run["trainable"]["n_trainable"] == 512 * 2 + 2  # the resnet18 head only
    assert run["synthetic"] is True
    assert set(run["manifests"]) == {"isic2017", "isic2018"}


def test_learns_with_demo_settings(synth_work, tmp_path):
    """ImageNet EfficientNet-Lite0 (offline weights) + linear head beats chance clearly."""
    from melanoma.evaluate.metrics import auc

    out = train_run(_params(synth_work, tmp_path / "lite0", model="efficientnet_lite0", weights="imagenet",
                            freeze="backbone", train="B,C", eval_sets=["isic2017", "isic2018"],
                            image_size=128, epochs=15), progress=False, log=_quiet)
    hist = pd.read_csv(out / "history.csv")
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]
    pred = pd.read_parquet(out / "predictions.parquet")
    val = pred[pred["split"] == "val"]
    assert auc(val["label"].to_numpy(), val["p_melanoma"].to_numpy()) > 0.7


@pytest.mark.parametrize("field,value,match", [
    ("model", "resnet999", "TrainParams.model: unknown model"),
    ("train", "A-Q", "TrainParams.train"),
    ("epochs", -3, "TrainParams.epochs"),
    ("freeze", "all", "TrainParams.freeze"),
    ("eval_sets", ["nowhere"], "TrainParams.eval_sets"),
    ("views", -1, "TrainParams.views"),
    ("solver", "adam", "TrainParams.solver"),
    ("reg_grid", [0.1, -1], "TrainParams.reg_grid"),
    ("reg_grid", [], "TrainParams.reg_grid"),
])
def test_bad_params_name_the_field(synth_work, tmp_path, field, value, match):
    with pytest.raises(ParamError, match=match):
        _params(synth_work, tmp_path / "x", **{field: value})


def test_missing_work_folder(tmp_path):
    with pytest.raises(ParamError, match="work folder"):
        _params(tmp_path / "nowhere", tmp_path / "x")


def test_unknown_param(tmp_path):
    with pytest.raises(ParamError, match="unknown field"):
        TrainParams.from_dict({"modle": "resnet18"})


def test_lbfgs_probe_is_sklearns_logistic_regression_at_the_chosen_C(synth_work, tmp_path):
    """The default fast-path head: standardised L2 logistic regression, C chosen by validation loss,
    folded into the network's own Linear head (so predictions come from the torch model)."""
    import json

    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from melanoma.train import features as F
    from melanoma.train.run import load_data

    grid = [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0]
    p = _params(synth_work, tmp_path / "probe", model="efficientnet_lite0", weights="imagenet", freeze="backbone",
                image_size=64, augment=False, reg_grid=grid, feature_dtype="float32")
    assert p.head_solver == "lbfgs"
    out = train_run(p, progress=False, log=_quiet)
    run = json.loads((out / "run.json").read_text())
    hist = pd.read_csv(out / "history.csv")
    assert run["probe"]["solver"] == "lbfgs" and run["probe"]["C_grid"] == grid
    assert list(hist["C"]) == grid
    k = int(hist["val_loss"].idxmin())
    assert run["probe"]["C"] == grid[k] and run["best_epoch"] == k + 1
    assert run["probe"]["at_edge"] == (k in (0, len(grid) - 1))
    # independent: sklearn pipeline on the same features, same C, balanced classes
    combo, ev, _ = load_data(p)
    kw = dict(model=p.model, weights=p.weights, size=p.image_size)
    X, y = F.gather(p.work, combo.train, **kw), combo.train["label"].to_numpy()
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=grid[k], class_weight="balanced", max_iter=5000,
                                                             tol=1e-8)).fit(X, y)
    Xv = F.gather(p.work, combo.val, **kw)
    assert hist["val_loss"][k] == pytest.approx(log_loss(combo.val["label"], ref.predict_proba(Xv)[:, 1]), abs=1e-3)
    pred = pd.read_parquet(out / "predictions.parquet")
    p_ref = ref.predict_proba(F.gather(p.work, ev, **kw))[:, 1]
    np.testing.assert_allclose(pred["p_melanoma"], p_ref, atol=1e-2)   # both solvers stop at a tolerance
    # the Linear head holds it: logit_1 - logit_0 is the decision function
    z = ref.decision_function(F.gather(p.work, ev, **kw))
    np.testing.assert_allclose(pred["logit_1"] - pred["logit_0"], z, atol=0.05 * np.abs(z).max())


def test_lbfgs_probe_reports_a_choice_at_the_edge(synth_work, tmp_path):
    import json

    logs = []
    out = train_run(_params(synth_work, tmp_path / "edge", model="efficientnet_lite0", weights="imagenet",
                            freeze="backbone", image_size=64, augment=False, reg_grid=[1e-7, 1e-6]),
                    progress=False, log=logs.append)
    run = json.loads((out / "run.json").read_text())
    assert run["probe"]["at_edge"] is True      # both candidates are edges of a 2-value grid
    assert any("edge of the grid" in l for l in logs)


def test_lbfgs_needs_the_fast_path(synth_work, tmp_path):
    with pytest.raises(ParamError, match="TrainParams.solver: lbfgs .* needs the fast path"):
        _params(synth_work, tmp_path / "x", model="meshnet", freeze="none", solver="lbfgs")
    assert _params(synth_work, tmp_path / "y", model="meshnet", freeze="none").head_solver == "sgd"


def test_external_release_is_scored_whole_with_the_combinations_validation(tmp_path_factory):
    """PH2 outside the training combination has no test split: all 200 images are test rows, and its
    threshold/temperature come from the combination's validation split (stated in run.json)."""
    import json

    from melanoma.data.ingest import ingest_all
    from melanoma.data.synthetic import write_replicas

    data = tmp_path_factory.mktemp("ph2data")
    small = tmp_path_factory.mktemp("isicdata")
    write_replicas(data, scale=10 / 3, only=["ph2"])              # PH2's real size: 200 images, 40 melanoma
    write_replicas(small, scale=0.3, only=["isic2016", "isic2017"])
    work = tmp_path_factory.mktemp("ph2work")
    ingest_all(data, work, progress=False)
    ingest_all(small, work, progress=False)
    out = train_run(_params(work, tmp_path_factory.mktemp("r") / "B", model="efficientnet_lite0",
                            weights="imagenet", freeze="backbone", image_size=64, augment=False,
                            eval_sets=["isic2017", "ph2"]), progress=False, log=_quiet)
    pred = pd.read_parquet(out / "predictions.parquet")
    ph2 = pred[pred["eval_set"] == "ph2"]
    test = ph2[ph2["split"] == "test"]
    assert len(test) == 200 and int(test["label"].sum()) == 40 and set(test["dataset"]) == {"ph2"}
    val = ph2[ph2["split"] == "val"]
    assert set(val["dataset"]) == {"isic2017"}                   # the combination's validation split
    run = json.loads((out / "run.json").read_text())
    assert len(val) == run["n_val"]
    src = run["eval_sources"]["ph2"]
    assert src["whole"] is True and "whole release (200 labelled images)" in src["test"]
    assert "training combination's validation split" in src["val"]
    assert run["eval_sources"]["isic2017"] == {"val": "own validation split", "test": "official test split",
                                               "whole": False}
    # inside the combination, PH2 is not external: its 80:20 split is for training, nothing is tested
    out2 = train_run(_params(work, tmp_path_factory.mktemp("r2") / "BG", model="efficientnet_lite0",
                             weights="imagenet", freeze="backbone", image_size=64, augment=False, train="B,G",
                             eval_sets=["isic2017", "ph2"]), progress=False, log=_quiet)
    p2 = pd.read_parquet(out2 / "predictions.parquet")
    assert (p2[p2["eval_set"] == "ph2"]["split"] == "val").all()
    from melanoma.evaluate.reject import reject_run

    r = reject_run(out, B=20)
    assert r["eval_sets"]["ph2"]["n_test"] == 200
    assert r["eval_sets"]["ph2"]["val_source"].startswith("the training combination's")
    assert reject_run(out2, B=20)["eval_sets"]["ph2"]["skipped"].startswith("no labelled test rows")

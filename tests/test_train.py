"""The training recipe: learning, determinism, resume, and fast path == loop path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from melanoma.params import ParamError, TrainParams, epochs_for
from melanoma.train import epoch_order, train_run


def _params(work, out, **kw):
    d = dict(work=str(work), out=str(out), model="resnet18", weights="none", train="B",
             eval_sets=["isic2017"], image_size=64, epochs=3, cache_size=256)
    d.update(kw)
    return TrainParams.from_dict(d)


def _quiet(*a, **k):
    pass


def test_epochs_schedule():
    assert [epochs_for(n) for n in range(1, 11)] == [30, 34, 36, 38, 40, 42, 44, 46, 48, 50]


def test_oversampling_balances_classes():
    y = np.array([0] * 90 + [1] * 10)
    draws = np.concatenate([y[epoch_order(y, e, 0)] for e in range(20)])
    assert 0.45 < draws.mean() < 0.55
    assert (epoch_order(y, 3, 0) == epoch_order(y, 3, 0)).all()
    assert not (epoch_order(y, 3, 0) == epoch_order(y, 4, 0)).all()
    assert sorted(epoch_order(y, 0, 0, oversample=False)) == list(range(100))


def test_fast_path_equals_loop_path(synth_work, tmp_path):
    kw = dict(freeze="backbone", augment=False, feature_dtype="float32", epochs=3)
    fast = train_run(_params(synth_work, tmp_path / "fast", fast=True, **kw), progress=False, log=_quiet)
    loop = train_run(_params(synth_work, tmp_path / "loop", fast=False, **kw), progress=False, log=_quiet)
    a = torch.load(fast / "model.pt", weights_only=True)
    b = torch.load(loop / "model.pt", weights_only=True)
    assert torch.allclose(a["fc.weight"], b["fc.weight"], atol=1e-5)
    assert torch.allclose(a["fc.bias"], b["fc.bias"], atol=1e-5)
    # and the head did move away from its initialisation
    torch.manual_seed(0)
    from melanoma.models import build_model
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
    from melanoma.metrics import auc

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

"""melanoma.train.run: a run's data, its checkpoints, its outputs and run.json's provenance."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from melanoma.provenance import versions
from melanoma.train import run as R
from melanoma.train.params import TrainParams
from melanoma.train.recipe import train_run

from tests.tinywork import CACHE, standard_work

REPO = Path(__file__).resolve().parents[2]


def _params(work, out, **kw):
    d = dict(work=str(work), out=str(out), model="meshnet", weights="none", freeze="backbone", solver="sgd",
             train="A", eval_sets=["isic2017", "ph2"], image_size=32, cache_size=CACHE, epochs=2, device="cpu")
    d.update(kw)
    return TrainParams.from_dict(d)


def _quiet(*a, **k):
    pass


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return standard_work(tmp_path_factory.mktemp("run_work"))


@pytest.fixture(scope="module")
def finished(work, tmp_path_factory):
    p = _params(work, tmp_path_factory.mktemp("runs") / "meshnet__A")
    return p, train_run(p, progress=False, log=_quiet)


def _sha16(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


# ----------------------------------------------------------------------------- provenance


def test_run_json_records_provenance(work, finished):
    p, out = finished
    run = json.loads((out / "run.json").read_text())
    assert run["run_id"] == "meshnet__A" and run["model"] == "meshnet" and run["train"] == "A"
    assert run["datasets"] == ["isic2016"] and run["eval_sets"] == ["isic2017", "ph2"]
    assert run["versions"] == versions() and run["versions"]["torch"] == torch.__version__
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert run["git_commit"] == head
    assert run["manifests"] == {ds: _sha16(work / ds / "manifest.parquet") for ds in ("isic2016", "isic2017", "ph2")}
    assert run["params_key"] == R.params_key(p) and run["synthetic"] is True
    m = pd.read_parquet(work / "isic2016" / "manifest.parquet")
    assert run["n_train"] == int((m["split"] == "train").sum()) == 12 and run["n_val"] == 6
    assert run["n_train_melanoma"] == int(m[m["split"] == "train"]["label"].sum())
    assert run["removed_for_leakage"] == {"train": 0, "val": 0}
    hist = pd.read_csv(out / "history.csv")
    assert run["best_epoch"] == int(hist.loc[hist["val_loss"].idxmin(), "epoch"])
    assert run["best_score"] == pytest.approx(hist["val_loss"].min())
    assert run["trainable"]["n_trainable"] == 21 * 2 + 2 and run["path"] == "fast" and run["device"] == "cpu"
    assert {"data", "total"} <= set(run["timings_s"])
    assert (out / "leakage.parquet").is_file() and not (out / "checkpoint.pt").exists()
    assert TrainParams.from_yaml(out / "params.yaml") == p


def test_predictions_are_the_softmax_of_the_logits(finished):
    _, out = finished
    pred = pd.read_parquet(out / "predictions.parquet")
    assert list(pred.columns) == ["run_id", "eval_set", "dataset", "split", "image_id", "label", "p_melanoma",
                                  "logit_0", "logit_1"]
    np.testing.assert_allclose(pred["p_melanoma"], 1 / (1 + np.exp(pred["logit_0"] - pred["logit_1"])), rtol=1e-6)
    assert set(pred["run_id"]) == {"meshnet__A"}


def test_an_external_set_is_scored_whole_with_the_combinations_validation(work, finished):
    p, out = finished
    pred = pd.read_parquet(out / "predictions.parquet")
    ph2 = pred[pred["eval_set"] == "ph2"]
    assert (ph2[ph2["split"] == "test"]["dataset"] == "ph2").all() and (ph2["split"] == "test").sum() == 14
    assert set(ph2[ph2["split"] == "val"]["dataset"]) == {"isic2016"} and (ph2["split"] == "val").sum() == 6
    b = pred[pred["eval_set"] == "isic2017"]
    assert b.groupby("split").size().to_dict() == {"test": 8, "val": 8} and set(b["dataset"]) == {"isic2017"}
    run = json.loads((out / "run.json").read_text())
    assert run["eval_sources"]["isic2017"] == {"val": "own validation split", "test": "official test split",
                                               "whole": False}
    src = run["eval_sources"]["ph2"]
    assert src["whole"] is True and src["test"].startswith("the whole release (14 labelled images)")
    assert src["val"].startswith("the training combination's validation split (6 images of A)")


def test_the_key_changes_with_what_changes_results_only(work, tmp_path):
    base = _params(work, tmp_path / "a")
    key = R.params_key(base)
    for same in (dict(workers=2), dict(device="cuda")):
        assert R.params_key(_params(work, tmp_path / "a", **same)) == key, same
    assert R.params_key(_params(work, tmp_path / "elsewhere")) == key
    changed = [dict(lr=0.01), dict(seed=1), dict(train="B"), dict(epochs=3), dict(image_size=64),
               dict(eval_sets=["isic2017"]), dict(leakage="keep"), dict(model="meshnet_s4"), dict(oversample=False)]
    keys = {R.params_key(_params(work, tmp_path / "a", **c)) for c in changed}
    assert len(keys) == len(changed) and key not in keys


def test_is_finished_checks_parameters_code_and_data(work, finished, tmp_path):
    p, out = finished
    assert R.is_finished(p)
    assert not R.is_finished(_params(work, out, lr=0.5))                       # other parameters
    assert R.is_finished(_params(work, out, workers=1))                         # results do not depend on it
    assert not R.is_finished(_params(work, tmp_path / "never"))                 # no run.json
    # a copy of the run with another commit, or made from another manifest, is not finished
    copy = tmp_path / "copy"
    copy.mkdir()
    run = json.loads((out / "run.json").read_text())
    pc = _params(work, copy)
    for edit in ({"git_commit": "0" * 40}, {"manifests": {**run["manifests"], "ph2": "0" * 16}}, {"manifests": {}}):
        (copy / "run.json").write_text(json.dumps({**run, **edit}))
        assert not R.is_finished(pc), edit
    (copy / "run.json").write_text(json.dumps(run))
    assert R.is_finished(pc)


def test_a_reingested_manifest_unfinishes_the_run(tmp_path):
    w = standard_work(tmp_path / "w")
    p = _params(w, tmp_path / "r", train="B", eval_sets=["isic2017"], epochs=1)
    train_run(p, progress=False, log=_quiet)
    assert R.is_finished(p)
    m = pd.read_parquet(w / "isic2017" / "manifest.parquet")
    m.iloc[:-1].to_parquet(w / "isic2017" / "manifest.parquet", index=False)
    assert not R.is_finished(p)


def test_file_sha_and_device():
    assert R.file_sha(Path(__file__)) == _sha16(Path(__file__))
    assert R.file_sha(Path("/nonexistent/manifest.parquet")) == ""
    assert R.resolve_device("cpu") == torch.device("cpu")
    assert R.resolve_device("cuda:1") == torch.device("cuda", 1)


def test_auto_device_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert R.resolve_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert R.resolve_device().type == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert R.resolve_device().type == "cpu"


def test_git_commit_outside_git_is_empty(monkeypatch):
    def no_git(*a, **k):
        raise FileNotFoundError("git")
    monkeypatch.setattr(R.subprocess, "run", no_git)
    assert R.git_commit() == ""


# ----------------------------------------------------------------------------- epochs and checkpoints


def _epoch(r, e, loss, auc=0.5):
    """Record epoch ``e`` as a training path would: an optimiser step, then end_epoch."""
    r.opt.step()
    r.end_epoch(e, 0.1, 1.0, 0.5, 10, {"val_loss": loss, "val_accuracy": 0.5, "val_auc": auc}, 1.0)


def test_end_epoch_keeps_the_best_state_and_checkpoints(work, tmp_path):
    r = R.Run(_params(work, tmp_path / "r", epochs=3), log=_quiet)
    head = r.model.classifier
    states = []
    for e, loss in enumerate([0.5, 0.3, 0.4]):
        with torch.no_grad():
            head.bias.fill_(float(e))
        states.append(head.bias.clone())
        _epoch(r, e, loss)
    assert r.best_score == 0.3 and torch.equal(r.best_state["classifier.bias"], states[1])
    ck = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    assert ck["epoch"] == 3 and ck["key"] == R.params_key(r.p) and len(ck["history"]) == 3
    assert [row[ck["history_cols"].index("val_loss")] for row in ck["history"]] == [0.5, 0.3, 0.4]
    r.use_best()
    assert torch.equal(head.bias, states[1])


def test_select_auc_takes_the_highest_and_passes_over_nan(work, tmp_path):
    r = R.Run(_params(work, tmp_path / "r", epochs=4, select="val_auc"), log=_quiet)
    for e, auc in enumerate([float("nan"), 0.6, 0.7, 0.65]):
        _epoch(r, e, 1.0, auc)
    assert r.best_score == 0.7


def test_a_checkpoint_of_other_parameters_is_not_resumed(work, tmp_path):
    r = R.Run(_params(work, tmp_path / "r"), log=_quiet)
    _epoch(r, 0, 0.5)
    logs = []
    again = R.Run(_params(work, tmp_path / "r"), log=logs.append)
    assert again.resume() == 1 and "[train] resuming after epoch 1" in logs
    logs.clear()
    other = R.Run(_params(work, tmp_path / "r", lr=0.5), log=logs.append)
    assert other.resume() == 0 and "[train] checkpoint belongs to other parameters; starting over" in logs


@pytest.mark.parametrize("content", ["garbage", "inconsistent", "missing_keys"])
def test_an_unusable_checkpoint_is_moved_aside(work, tmp_path, content):
    out = tmp_path / "r"
    r = R.Run(_params(work, out), log=_quiet)
    _epoch(r, 0, 0.5)
    ck_path = out / "checkpoint.pt"
    if content == "garbage":
        ck_path.write_bytes(b"not a checkpoint")
    else:
        ck = torch.load(ck_path, weights_only=True)
        if content == "inconsistent":
            ck["epoch"] = 2                                     # says 2 epochs, holds 1 history row
        else:
            del ck["opt"]
        torch.save(ck, ck_path)
    logs = []
    fresh = R.Run(_params(work, out), log=logs.append)
    before = {k: v.clone() for k, v in fresh.model.state_dict().items()}
    assert fresh.resume() == 0
    assert not ck_path.exists()
    aside = list(out.glob("checkpoint.corrupt-*.pt"))
    assert len(aside) == 1 and fresh.extra["checkpoint_moved_aside"]["file"] == str(aside[0])
    assert any("moved aside" in m and "training starts again from epoch 1" in m for m in logs)
    assert all(torch.equal(before[k], v) for k, v in fresh.model.state_dict().items())  # nothing half-loaded


def test_one_class_training_data_is_refused(tmp_path):
    from tests.tinywork import release

    release(tmp_path / "w", "isic2017", {"train": (4, 0), "val": (2, 1), "test": (2, 1)}, seed=0, ids="ISIC_{:07d}")
    with pytest.raises(ValueError, match="training data of 'B' has only one class; cannot train a classifier"):
        R.Run(_params(tmp_path / "w", tmp_path / "r", train="B", eval_sets=["isic2017"]), log=_quiet)

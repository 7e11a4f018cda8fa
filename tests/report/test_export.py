"""ONNX export and the web metadata: parity with torch, model.json's contract, the site folder."""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from melanoma.report.export import (CLASSES, DEFAULT_THRESHOLD, ORT_FILES, PAGE_FILES, assemble_site,
                             check_parity, preprocess_spec, rejection_threshold, run_test_metrics)
from melanoma.train.models import model_config

MODEL_JSON_KEYS = {
    "format_version", "model", "run_id", "train", "train_label", "datasets", "weights", "freeze",
    "n_params", "synthetic", "onnx", "input_size", "preprocess", "classes", "output",
    "decision_threshold", "threshold", "threshold_unit", "threshold_source", "threshold_eval_set", "threshold_facts", "conformal",
    "test_metrics", "metrics_source", "eval_sets", "parity", "git_commit",
}


def _strict_json(path: Path):
    """json.loads that refuses NaN/Infinity, as the browser's JSON.parse does."""
    def bad(c):
        raise ValueError(f"{path} holds {c}: not valid JSON for a browser")
    return json.loads(path.read_text(), parse_constant=bad)


def _copy_run(run: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for f in ("params.yaml", "model.pt", "run.json", "predictions.parquet"):
        shutil.copy(run / f, dst / f)
    return dst


def test_export_writes_onnx_and_model_json(web_run, web_model):
    onnx_path, meta_path = web_model / "model.onnx", web_model / "model.json"
    meta = _strict_json(meta_path)
    assert set(meta) == MODEL_JSON_KEYS
    assert meta["model"] == "meshnet" and meta["train"] == "B" and meta["synthetic"] is True
    assert meta["classes"] == CLASSES == ["non-melanoma", "melanoma"]
    assert meta["input_size"] == 64
    assert meta["onnx"]["input_shape"] == [1, 3, 64, 64]
    assert meta["onnx"]["bytes"] == onnx_path.stat().st_size
    assert meta["onnx"]["sha256"] == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    pre = meta["preprocess"]
    cfg = model_config("meshnet")
    assert (pre["crop"], pre["resize"], pre["cache_shorter"]) == (64, round(64 * 256 / 224), 256)
    assert pre["mean"] == list(cfg.mean) and pre["std"] == list(cfg.std)
    assert isinstance(pre["cache_vertical_first"], bool)
    # no rejection.json in the run: the documented fallback, and model.json says so
    assert meta["threshold"] == DEFAULT_THRESHOLD == 0.5
    assert "default" in meta["threshold_source"] and meta["threshold_eval_set"] is None
    # no metrics.json: test metrics computed from predictions.parquet
    assert set(meta["test_metrics"]) == {"isic2017"}
    assert "predictions.parquet" in meta["metrics_source"]
    assert meta["parity"]["max_abs_logit_diff"] < 1e-4
    for f in (onnx_path, meta_path):  # readable by a web server running as another user
        assert stat.S_IMODE(f.stat().st_mode) & 0o044 == 0o044


def test_onnx_parity_with_torch(web_run, web_model):
    assert check_parity(web_run, web_model / "model.onnx", n=8) < 1e-4


def test_onnx_scores_like_the_run(web_run, web_model):
    """The exported model reproduces the run's own test predictions (same cache, same transform)."""
    import onnxruntime as ort
    import pandas as pd
    import yaml

    from melanoma.data.cache import ImageCache
    from melanoma.data.dedup import eval_frame
    from melanoma.train.transforms import eval_transform

    meta = json.loads((web_model / "model.json").read_text())
    pre = meta["preprocess"]
    pred = pd.read_parquet(web_run / "predictions.parquet")
    params = yaml.safe_load((web_run / "params.yaml").read_text())
    ev = eval_frame(params["work"], params["eval_sets"]).reset_index(drop=True).head(6)
    cache = ImageCache(Path(params["work"]) / "cache", pre["cache_shorter"])
    tf = eval_transform(pre["crop"], pre["resize"], mean=pre["mean"], std=pre["std"])
    sess = ort.InferenceSession(str(web_model / "model.onnx"), providers=["CPUExecutionProvider"])
    for _, row in ev.iterrows():
        x = tf(cache.get(row["content_hash"])).numpy()[None]
        logits = sess.run(None, {"input": x})[0][0]
        want = pred[(pred["image_id"] == row["image_id"]) & (pred["split"] == row["split"])
                    & (pred["eval_set"] == row["dataset"])]
        np.testing.assert_allclose(logits, want[["logit_0", "logit_1"]].to_numpy()[0], atol=1e-4)


def test_threshold_and_metrics_from_rejection_and_metrics_json(web_run, tmp_path):
    from melanoma.cli import main

    run = _copy_run(web_run, tmp_path / "run")
    (run / "rejection.json").write_text(json.dumps({"eval_sets": {
        "isic2017": {"threshold": 0.31, "coverage": 0.9, "val_coverage": 0.85, "fraction": 0.15, "flags": [],
                     "methods": {"conformal": {"alpha": 0.1, "q": [0.7, 0.75], "min_prob": [0.3, 0.25],
                                               "n_cal": [40, 10], "class_coverage": {}}}},
        "isic2018": {"threshold": 0.7}}}))
    (run / "metrics.json").write_text(json.dumps({"eval_sets": {"isic2017": {"test": {
        "auc": 0.75, "accuracy": 0.6, "sensitivity": float("nan"), "specificity": 0.5, "n": 30,
        "ci": {"auc": {"low": 0.6, "high": 0.9}}}}}}, allow_nan=True))
    assert main(["export", str(run), "--out", str(tmp_path / "model")]) == 0
    meta = _strict_json(tmp_path / "model" / "model.json")   # NaN became null
    assert meta["threshold"] == 0.31 and meta["threshold_eval_set"] == "isic2017"
    assert "validation split of isic2017" in meta["threshold_source"]
    assert meta["threshold_facts"] == {"fraction": 0.15, "val_coverage": 0.85, "test_coverage": 0.9, "flags": []}
    assert meta["conformal"]["min_prob"] == [0.3, 0.25] and meta["conformal"]["eval_set"] == "isic2017"
    assert meta["test_metrics"]["isic2017"]["auc"] == 0.75
    assert meta["test_metrics"]["isic2017"]["sensitivity"] is None
    assert meta["test_metrics"]["isic2017"]["auc_ci"] == [0.6, 0.9]
    assert meta["metrics_source"].startswith("metrics.json")


def test_rejection_threshold_rules(tmp_path):
    assert rejection_threshold(tmp_path)[0] == DEFAULT_THRESHOLD          # no file
    path = tmp_path / "rejection.json"
    path.write_text(json.dumps({"eval_sets": {"kaggle": {"skipped": "one class"},
                                              "derm7pt": {"threshold": 0.2}}}))
    assert rejection_threshold(tmp_path)[::2] == (0.2, "derm7pt")         # skipped sets are passed over
    path.write_text(json.dumps({"eval_sets": {"a": {"threshold": 0.2}, "b": {"threshold": 0.4}}}))
    assert rejection_threshold(tmp_path, ["b", "a"])[::2] == (0.4, "b")    # the run's order first
    path.write_text(json.dumps({"web_threshold": 0.45, "eval_sets": {"a": {"threshold": 0.2}}}))
    thr, src, es = rejection_threshold(tmp_path)
    assert (thr, es) == (0.45, None) and "web_threshold" in src
    path.write_text(json.dumps({"eval_sets": {"a": {"threshold": None}}}))
    thr, src, _ = rejection_threshold(tmp_path)
    assert thr == DEFAULT_THRESHOLD and "no finite threshold" in src
    # a flagged result gives way to an unflagged one; when all are flagged the source says so
    low = {"code": "low-coverage", "text": "test coverage 0.10 below 0.7"}
    path.write_text(json.dumps({"eval_sets": {"a": {"threshold": 0.2, "flags": [low]}, "b": {"threshold": 0.4}}}))
    assert rejection_threshold(tmp_path, ["a", "b"])[::2] == (0.4, "b")
    path.write_text(json.dumps({"eval_sets": {"a": {"threshold": 0.2, "flags": [low]}}}))
    thr, src, es = rejection_threshold(tmp_path)
    assert (thr, es) == (0.2, "a") and "FLAGGED: test coverage 0.10" in src
    # a coverage-mode fraction is not an entropy: never used as the page's threshold
    path.write_text(json.dumps({"mode": "coverage", "eval_sets": {"a": {"threshold": 0.1}}}))
    assert rejection_threshold(tmp_path)[0] == DEFAULT_THRESHOLD


def test_metrics_without_any_source(tmp_path):
    metrics, source = run_test_metrics(tmp_path)
    assert metrics == {} and source.startswith("none")


def test_preprocess_spec_follows_params():
    spec = preprocess_spec({"model": "mobilenet_v3_small", "image_size": 96, "resize": 128, "cache_size": 300})
    assert (spec["crop"], spec["resize"], spec["cache_shorter"]) == (96, 128, 300)
    spec = preprocess_spec({"model": "efficientnet_lite0", "image_size": 224})
    assert spec["resize"] == 256 and spec["mean"] == [127 / 255] * 3
    with pytest.raises(ValueError, match="centre crop"):
        preprocess_spec({"model": "meshnet", "image_size": 64, "resize": 60})


def test_export_refuses_an_unfinished_run(tmp_path, capsys):
    from melanoma.cli import main
    from melanoma.report.export import export_run

    with pytest.raises(FileNotFoundError, match="not a finished run"):
        export_run(tmp_path, tmp_path / "out")
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "not a finished run" in capsys.readouterr().err


def test_assemble_site(web_model, tmp_path):
    site = assemble_site(tmp_path / "site", web_model)
    want = set(PAGE_FILES) | set(ORT_FILES) | {"model.onnx", "model.json"}
    assert {p.name for p in site.iterdir()} == want
    assert all(stat.S_IMODE((site / f).stat().st_mode) & 0o044 == 0o044 for f in want)
    # the page's own files name no other origin (the runtime and the model come from this folder)
    for f in PAGE_FILES:
        text = (site / f).read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, f
    with pytest.raises(FileNotFoundError, match="melanoma export"):
        assemble_site(tmp_path / "site2", tmp_path / "nothing")

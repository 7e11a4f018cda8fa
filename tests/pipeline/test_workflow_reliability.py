"""The workflow on a small *real-layout* grid (generated MED-NODE and Kaggle releases) under a path
with spaces, quotes and parentheses: it runs; changed data is re-ingested and retrained; a failed
run is retried with `melanoma retry`; the built book declares THEBE_JS_URL once per page."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.releases import make_kaggle, make_mednode

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
MELANOMA = Path(sys.executable).parent / "melanoma"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not SNAKEMAKE.exists(), reason="snakemake is not installed")]

GRID = """
name: reliab
data: {root}/data dir
work: {root}/work
results: {root}/results
models: [efficientnet_lite0]
combinations: [I, J]
eval_sets: [KaggleMB]
train: {{weights: imagenet, freeze: backbone, epochs: 3, image_size: 64, seed: 0}}
calibrate: {{bins: 5, bootstrap: 20}}
reject: {{mode: absolute, thresholds: "0:0.2:0.05", min_coverage: 0.5, bootstrap: 20}}
"""
I, J = "efficientnet_lite0__I", "efficientnet_lite0__J"


def _snakemake(wf, *extra, target=True):
    cmd = [str(SNAKEMAKE)] + ([str(wf["summary"])] if target else []) + [
        "-s", str(REPO / "workflow" / "Snakefile"), "--config", f"grid={wf['grid']}", "--cores", "2",
        "--keep-going", "--rerun-incomplete", *extra]
    return subprocess.run(cmd, cwd=REPO, env=wf["env"], capture_output=True, text=True, timeout=1200)


def _ok(r):
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def _nothing_to_do(wf) -> bool:
    r = _ok(_snakemake(wf, "-n"))
    return "Nothing to be done" in r.stdout + r.stderr


def _status(wf, rid, step="train"):
    return json.loads((wf["results"] / "runs" / rid / f"status-{step}.json").read_text())


@pytest.fixture(scope="module")
def wf(tmp_path_factory):
    root = tmp_path_factory.mktemp("wf") / "my runs (copy) it's"
    make_mednode(root / "data dir" / "mednode", n=12)
    make_kaggle(root / "data dir" / "kaggle", n=12)
    grid = root / "grid.yaml"
    grid.write_text(GRID.format(root=root))
    wf = {"root": root, "grid": grid, "results": root / "results", "work": root / "work",
          "summary": root / "results" / "summary.parquet",
          "env": dict(os.environ, MELANOMA_BOOK=str(root / "book"), PYTHONUNBUFFERED="1")}
    wf["first"] = _ok(_snakemake(wf, "--quiet"))
    return wf


def test_grid_under_a_path_with_spaces_and_quotes(wf):
    runs = pd.read_parquet(wf["results"] / "runs.parquet")
    assert sorted(runs["run_id"]) == [I, J] and (runs["status_reject"] == "ok").all()
    for ds in ("mednode", "kaggle"):
        stamp = json.loads((wf["work"] / ds / "release.json").read_text())
        assert stamp["sha256"] == json.loads((wf["work"] / ds / "report.json").read_text())["fingerprint"]["sha256"]
    assert _nothing_to_do(wf)  # the fingerprints are stable: a second run has nothing to do


def test_changed_data_is_reingested_and_retrained(wf):
    base = wf["root"] / "data dir" / "mednode" / "complete_mednode_dataset"
    run_i, run_j = (wf["results"] / "runs" / r / "run.json" for r in (I, J))
    before_i, before_j = json.loads(run_i.read_text()), run_j.stat().st_mtime_ns
    (base / "naevus" / "nae000.jpg").unlink()                                   # an image deleted
    shutil.move(base / "naevus" / "nae001.jpg", base / "melanoma" / "nae001.jpg")  # a label changed
    _ok(_snakemake(wf, "--quiet"))
    m = pd.read_parquet(wf["work"] / "mednode" / "manifest.parquet")
    assert len(m) == 23 and int(m["label"].sum()) == 13
    after_i = json.loads(run_i.read_text())
    assert after_i["manifests"]["mednode"] != before_i["manifests"]["mednode"]
    assert after_i["n_train"] + after_i["n_val"] == 23
    assert run_j.stat().st_mtime_ns == before_j  # the run that does not use MED-NODE is kept
    assert _nothing_to_do(wf)


def test_retry_reruns_a_failed_run(wf):
    """A training job also calibrates and rejects its runs, so `melanoma retry` reruns the run's
    training job: a run that failed in training is trained again; a run that failed after training
    (here in calibration) keeps its trained model and is only calibrated and rejected again."""
    run_i, run_j = (wf["results"] / "runs" / r for r in (I, J))
    # J fails in training: it cannot write its parameters (its run.json removed first: a training
    # job keeps a run that finished with the same parameters instead of training it again)
    (run_j / "run.json").unlink()
    (run_j / "params.yaml").unlink()
    (run_j / "params.yaml").mkdir()
    # I fails after training: calibration cannot write metrics.json
    (run_i / "metrics.json").unlink()
    (run_i / "metrics.json").mkdir()
    trained_i = (run_i / "run.json").stat().st_mtime_ns
    _ok(_snakemake(wf, "--quiet", "--forcerun", str(run_j / "status-train.json"), str(run_i / "status-train.json")))
    assert _status(wf, J)["status"] == "failed" and _status(wf, J, "reject")["status"] == "skipped"
    assert [_status(wf, I, s)["status"] for s in ("train", "calibrate", "reject")] == ["ok", "failed", "skipped"]
    assert (run_i / "run.json").stat().st_mtime_ns == trained_i  # kept, not retrained
    (run_j / "params.yaml").rmdir()  # fixed
    (run_i / "metrics.json").rmdir()
    # what the README used to say (delete the status file, rerun) does nothing ...
    (run_j / "status-train.json").unlink()
    assert _nothing_to_do(wf)
    # ... `melanoma retry` reruns the runs' training jobs (train if needed, calibrate, reject) and
    # everything after them, up to the book
    r = subprocess.run([str(MELANOMA), "retry", J, I, "--grid", str(wf["grid"]), "--cores", "2"], cwd=REPO,
                       env=wf["env"], capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"{J}: was train not run" in r.stdout and f"{J}: now train ok, calibrate ok, reject ok" in r.stdout
    assert f"{I}: was train ok, calibrate failed, reject skipped; retrying" in r.stdout
    assert f"{I}: now train ok, calibrate ok, reject ok" in r.stdout
    assert (run_i / "run.json").stat().st_mtime_ns == trained_i  # the retry did not retrain I either
    assert (run_j / "run.json").is_file() and (run_i / "metrics.json").is_file()
    runs = pd.read_parquet(wf["results"] / "runs.parquet").set_index("run_id")
    for rid in (I, J):
        assert runs.loc[rid, "status_reject"] == "ok" and runs.loc[rid, "failed_step"] == "", rid
    assert (wf["root"] / "book" / "_build" / "html" / "index.html").is_file()


def test_book_pages_declare_thebe_once(wf):
    pages = sorted((wf["root"] / "book" / "_build" / "html").glob("*.html"))
    assert len(pages) >= 5
    for page in pages:
        assert page.read_text().count("const THEBE_JS_URL") <= 1, page.name

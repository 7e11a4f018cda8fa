"""Shared fixtures: the real samples (skipped when absent) and one synthetic work folder."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REALDATA = ROOT.parent / "shared" / "realdata"


def prediction_rows(eval_set, split, y, d):
    """Hand-made prediction rows with logits (-d/2, d/2), so p = softmax(logits)[1] = sigmoid(d)."""
    import numpy as np
    import pandas as pd

    y = np.asarray(y, dtype=int)
    d = np.asarray(d, dtype=float)
    return pd.DataFrame({
        "run_id": "handmade", "eval_set": eval_set, "split": split,
        "image_id": [f"{eval_set}_{split}_{i}" for i in range(len(y))],
        "label": y, "p_melanoma": np.exp(-np.logaddexp(0.0, -d)), "logit_0": -d / 2, "logit_1": d / 2,
    })


def logit_scores(rng, y, strength=5.0, noise=3.0):
    """Logit differences: about 5 % errors, about 70 % of the entropies below 0.2 bit (defaults)."""
    import numpy as np

    return np.where(np.asarray(y) == 1, strength, -strength) + rng.normal(0, noise, len(y))


def realdata(sub: str) -> Path:
    p = REALDATA / sub
    if not p.is_dir():
        pytest.skip(f"real samples not present at {p}")
    return p


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    """SYNTHETIC replicas of all 11 releases (small scale), written once per test session."""
    from melanoma.data.synthetic import write_replicas

    out = tmp_path_factory.mktemp("synthetic")
    write_replicas(out, scale=0.5, seed=0)
    return out


@pytest.fixture(scope="session")
def synth_work(synth_data, tmp_path_factory) -> Path:
    """The synthetic replicas ingested (manifests + image cache)."""
    from melanoma.data.ingest import ingest_all

    work = tmp_path_factory.mktemp("work")
    ingest_all(synth_data, work, progress=False)
    return work


@pytest.fixture(scope="session")
def web_run(synth_work, tmp_path_factory) -> Path:
    """A tiny finished run for the web model's export and browser tests: MeshNet, 64 px, 1 epoch."""
    from melanoma.train.params import TrainParams
    from melanoma.train.recipe import train_run

    out = tmp_path_factory.mktemp("web_run") / "meshnet__B"
    p = TrainParams.from_dict(dict(work=str(synth_work), out=str(out), model="meshnet", weights="none",
                                   freeze="none", train="B", eval_sets=["isic2017"], image_size=64,
                                   epochs=1, cache_size=256))
    return train_run(p, progress=False, log=lambda *a, **k: None)


@pytest.fixture(scope="session")
def web_model(web_run, tmp_path_factory) -> Path:
    """``web_run`` exported: a folder with model.onnx and model.json."""
    from melanoma.report.export import export_run

    out = tmp_path_factory.mktemp("web_model")
    export_run(web_run, out)
    return out


@pytest.fixture(scope="session")
def tiny_local_run(tmp_path_factory) -> Path:
    """tests/tiny_grid.py's grid run locally through Snakemake, uninterrupted, to the book (the
    reference that the SIGKILL/resume test and the SLURM test compare their summaries with)."""
    import subprocess

    from .tiny_grid import SNAKEMAKE, env_for, local_cmd, write_grid

    if not SNAKEMAKE.exists():
        pytest.skip("snakemake is not installed")
    root = tmp_path_factory.mktemp("wf_full")
    g = write_grid(root, "tiny")
    r = subprocess.run(local_cmd(g), cwd=ROOT, env=env_for(root), capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return root

"""The resident loop path: equal to the DataLoader path, and a group equal to separate runs."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from melanoma.train.group import train_members
from melanoma.train.params import ParamError, TrainParams
from melanoma.train.recipe import train_run


def _p(work, out, **kw):
    d = dict(work=str(work), out=str(out), model="resnet18", weights="none", freeze="conv", train="B",
             eval_sets=["isic2017"], image_size=48, epochs=2, cache_size=256, loader="resident")
    d.update(kw)
    return TrainParams.from_dict(d)


def _quiet(*a, **k):
    pass


def _same(a, b, tol=1e-5):
    pa, pb = pd.read_parquet(a / "predictions.parquet"), pd.read_parquet(b / "predictions.parquet")
    assert len(pa) == len(pb) > 0
    sa = torch.load(a / "model.pt", weights_only=True)
    sb = torch.load(b / "model.pt", weights_only=True)
    dw = max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa)
    dp = float((pa["p_melanoma"] - pb["p_melanoma"]).abs().max())
    assert dw <= tol and dp <= tol, (dw, dp)
    ha, hb = pd.read_csv(a / "history.csv"), pd.read_csv(b / "history.csv")
    assert (ha["val_loss"] - hb["val_loss"]).abs().max() <= tol


def test_resident_without_augmentation_equals_the_dataloader_path(synth_work, tmp_path):
    dl = train_run(_p(synth_work, tmp_path / "dl", loader="dataloader", augment=False), progress=False, log=_quiet)
    res = train_run(_p(synth_work, tmp_path / "res", augment=False), progress=False, log=_quiet)
    _same(dl, res)
    assert TrainParams.from_yaml(res / "params.yaml").loader == "resident"


def test_group_equals_separate_runs_and_resumes(synth_work, tmp_path):
    combos = ["B", "E", "A-C"]
    solo = [train_run(_p(synth_work, tmp_path / f"solo_{c}", train=c, epochs=e), progress=False, log=_quiet)
            for c, e in zip(combos, (2, 3, 2))]
    ps = [_p(synth_work, tmp_path / f"grp_{c}", train=c, epochs=e) for c, e in zip(combos, (2, 3, 2))]
    part = train_members(ps, progress=False, log=_quiet, stop_after=1)  # as if killed after epoch 1
    assert all((d / "checkpoint.pt").is_file() and not (d / "run.json").exists() for d in part)
    logs = []
    grp = train_members(ps, progress=False, log=logs.append)
    assert sum("resuming after epoch 1" in m for m in logs) == 3
    for a, b in zip(solo, grp):
        _same(a, b)
        assert pd.read_json(b / "run.json", typ="series")["group"]["size"] == 3
    assert len(pd.read_csv(grp[1] / "history.csv")) == 3  # the longer run went on alone
    logs.clear()
    (grp[0] / "run.json").unlink()  # as if the job died before run 0 wrote its outputs
    torch.save({"key": "other"}, grp[0] / "checkpoint.pt")
    train_members(ps, progress=False, log=logs.append)
    assert sum("already finished" in m for m in logs) == 2 and (grp[0] / "run.json").is_file()
    _same(solo[0], grp[0])
    # a run.json made from other data (a re-ingested manifest) is not kept
    run = json.loads((grp[1] / "run.json").read_text())
    run["manifests"] = {ds: "0" * 16 for ds in run["manifests"]}
    (grp[1] / "run.json").write_text(json.dumps(run))
    logs.clear()
    train_members(ps, progress=False, log=logs.append)
    assert sum("already finished" in m for m in logs) == 2
    assert json.loads((grp[1] / "run.json").read_text())["manifests"] != run["manifests"]


def test_group_refuses_incompatible_runs(synth_work, tmp_path):
    with pytest.raises(ValueError, match="must share 'image_size'"):
        train_members([_p(synth_work, tmp_path / "a"), _p(synth_work, tmp_path / "b", image_size=32)],
                      progress=False, log=_quiet)
    with pytest.raises(ValueError, match="distinct run directories"):
        train_members([_p(synth_work, tmp_path / "a"), _p(synth_work, tmp_path / "a", train="E")],
                      progress=False, log=_quiet)
    with pytest.raises(ParamError, match="loader"):
        _p(synth_work, tmp_path / "c", loader="gpu")
    with pytest.raises(ValueError, match="need loader='resident'"):
        train_members([_p(synth_work, tmp_path / "a", loader="dataloader"),
                       _p(synth_work, tmp_path / "b", loader="dataloader", train="E")], progress=False, log=_quiet)


def test_a_group_of_fast_path_runs_trains_them_in_turn(synth_work, tmp_path):
    kw = dict(freeze="backbone", image_size=32, loader="dataloader")
    ps = [_p(synth_work, tmp_path / c, train=c, **kw) for c in ("B", "E")]
    logs = []
    outs = train_members(ps, progress=False, log=logs.append)
    for o, c in zip(outs, ("B", "E")):
        run = pd.read_json(o / "run.json", typ="series")
        assert run["path"] == "fast" and run["train"] == c
    solo = train_run(_p(synth_work, tmp_path / "solo", train="E", **kw), progress=False, log=_quiet)
    _same(outs[1], solo, tol=0)


def test_a_single_dataloader_run_trains_alone_and_is_kept_once_finished(synth_work, tmp_path):
    """The workflow's solo training job goes through train_members too: a loop-path DataLoader
    run trains as train_run trains it, and a rerun of the job (killed while it evaluated) keeps it."""
    p = _p(synth_work, tmp_path / "solo", loader="dataloader", train="E")
    logs = []
    (out,) = train_members([p], progress=False, log=logs.append)
    run = pd.read_json(out / "run.json", typ="series")
    assert run["path"] == "loop" and run["loader"] == "dataloader"
    mtime = (out / "run.json").stat().st_mtime_ns
    logs.clear()
    assert train_members([p], progress=False, log=logs.append) == [out]
    assert (out / "run.json").stat().st_mtime_ns == mtime and any("kept" in m for m in logs), logs


def test_group_checks_all_its_images_against_free_memory_at_once(synth_work, tmp_path, monkeypatch):
    from melanoma.train import resident

    monkeypatch.setattr(resident, "available_bytes", lambda device: 10_000)
    with pytest.raises(resident.ResidentMemoryError, match=r"resident images of 2 run\(s\) of resnet18"):
        train_members([_p(synth_work, tmp_path / "a"), _p(synth_work, tmp_path / "b", train="E")],
                      progress=False, log=_quiet)

"""melanoma.train.params: validation without side effects, once per run; which runs may train together."""

from __future__ import annotations

from pathlib import Path

import pytest

from melanoma.train import params as P
from melanoma.train.params import ParamError, TrainParams, can_share_a_job, check_together, job_key


def _d(work, out, **kw):
    d = dict(work=str(work), out=str(out), model="resnet18", weights="none", freeze="backbone",
             train="B", eval_sets=["isic2017"], image_size=32, epochs=1)
    d.update(kw)
    return d


def test_validate_returns_a_normalised_copy_and_leaves_the_caller_alone(tmp_path):
    p = TrainParams(**_d(tmp_path, tmp_path / "r", eval_sets="ISIC2017+B,isic2017", reg_grid=0.5))
    v = p.validate()
    assert v.eval_sets == ["isic2017"] and v.reg_grid == [0.5]
    assert p.eval_sets == "ISIC2017+B,isic2017" and p.reg_grid == 0.5  # the caller's object as it was
    assert v is not p and v.validate() == v  # idempotent


def test_validate_without_the_work_folder(tmp_path):
    p = TrainParams(**_d(tmp_path / "missing", tmp_path / "r", eval_sets="B"))
    with pytest.raises(ParamError, match="work folder"):
        p.validate()
    assert p.validate(require_work=False).eval_sets == ["isic2017"]
    with pytest.raises(ParamError, match="TrainParams.epochs"):  # every other field is still checked
        TrainParams(**_d(tmp_path / "missing", tmp_path / "r", epochs=-3)).validate(require_work=False)


def test_checked_validates_once_then_only_after_a_change(tmp_path, monkeypatch):
    calls = []
    real = TrainParams.validate
    monkeypatch.setattr(TrainParams, "validate", lambda self, **kw: calls.append(1) or real(self, **kw))
    p = TrainParams.from_dict(_d(tmp_path, tmp_path / "r"))
    assert len(calls) == 1
    assert p.checked() is p and p.checked() is p and len(calls) == 1
    p.epochs = 2  # changed after validation: checked again, and an invalid change is caught
    assert p.checked() is not p and len(calls) == 2
    p.epochs = -1
    with pytest.raises(ParamError, match="epochs"):
        p.checked()
    fresh = TrainParams(**_d(tmp_path, tmp_path / "r"))  # never validated
    assert fresh.checked() is not fresh


def test_a_run_validates_its_parameters_once(synth_work, tmp_path, monkeypatch):
    """from_dict at the edge; train_members → train_runs → Run do not validate again."""
    from melanoma.train.group import train_members

    calls = []
    real = TrainParams.validate
    monkeypatch.setattr(TrainParams, "validate", lambda self, **kw: calls.append(1) or real(self, **kw))
    p = TrainParams.from_dict(_d(synth_work, tmp_path / "r", views=0))
    train_members([p], progress=False, log=lambda *a, **k: None)
    assert len(calls) == 1 and (tmp_path / "r" / "run.json").is_file()


def test_weights_and_freeze_are_defined_once():
    from melanoma.train import models

    assert not hasattr(P, "WEIGHTS") and not hasattr(P, "FREEZE")
    assert set(models.WEIGHTS) == {"imagenet", "none"} and set(models.FREEZE) == {"conv", "backbone", "none"}


def test_one_definition_of_runs_trained_together(tmp_path):
    a = TrainParams.from_dict(_d(tmp_path, tmp_path / "a", train="B", epochs=1))
    b = TrainParams.from_dict(_d(tmp_path, tmp_path / "b", train="E", epochs=3))
    assert job_key(a) == job_key(b) and can_share_a_job(a)
    check_together([a, b])
    c = TrainParams.from_dict(_d(tmp_path, tmp_path / "c", lr=0.01))
    assert job_key(c) != job_key(a)
    with pytest.raises(ValueError, match="must share 'lr'"):
        check_together([a, c])
    loop = [TrainParams.from_dict(_d(tmp_path, tmp_path / x, freeze="conv", loader=ld))
            for x, ld in (("d", "dataloader"), ("e", "dataloader"), ("f", "resident"))]
    assert not can_share_a_job(loop[0]) and can_share_a_job(loop[2])
    check_together(loop[:1])  # alone, any path
    with pytest.raises(ValueError, match="need loader='resident'"):
        check_together(loop[:2])
    with pytest.raises(ValueError, match="distinct run directories"):
        check_together([a, TrainParams.from_dict(_d(tmp_path, tmp_path / "a", train="E"))])


def test_the_grid_packs_jobs_by_the_same_definition(tmp_path):
    """Every job of the demo grid passes check_together; runs of one model in different jobs
    differ in their job key or exceed the group size."""
    from melanoma.pipeline.grid import expand, groups, load_grid

    g = load_grid(Path(__file__).resolve().parents[2] / "params" / "demo.yaml", work=str(tmp_path))
    runs = expand(g)
    jobs = groups(g, runs)
    assert jobs
    for ids in jobs.values():
        ps = [runs[i] for i in ids]
        check_together(ps)
        assert len({job_key(p) for p in ps}) == 1 and all(can_share_a_job(p) for p in ps)

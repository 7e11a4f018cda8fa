"""Where things go (melanoma.home) and the notebooks' one default recipe (melanoma.defaults)."""

from __future__ import annotations

from pathlib import Path

import pytest

from melanoma import defaults, home

REPO = Path(__file__).resolve().parents[1]


def test_home_is_the_repository_unless_melanoma_home_is_set(monkeypatch, tmp_path):
    monkeypatch.delenv("MELANOMA_HOME", raising=False)
    assert home.repository() == REPO and home.home() == REPO and home.sources() == REPO
    monkeypatch.chdir(tmp_path)  # the kernel's folder does not matter
    assert home.resolve("work/runs/x") == REPO / "work" / "runs" / "x"
    monkeypatch.setenv("MELANOMA_HOME", str(tmp_path / "h"))
    assert home.home() == tmp_path / "h"
    assert home.resolve("") == tmp_path / "h" and home.resolve("", "work") == tmp_path / "h" / "work"
    assert home.resolve("runs/a") == tmp_path / "h" / "runs" / "a"
    assert home.resolve("/abs/x") == Path("/abs/x")
    assert home.resolve("~/x") == Path.home() / "x"
    assert home.sources() == REPO  # the sources stay where the package is
    assert defaults.work_dir() == tmp_path / "h" / "work"


def test_find_file_tries_the_current_folder_then_the_project(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert home.find_file("params/demo.yaml") == REPO / "params" / "demo.yaml"
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "demo.yaml").write_text("name: mine\n")
    assert home.find_file("params/demo.yaml") == tmp_path / "params" / "demo.yaml"
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml not found in the current folder .* nor in "):
        home.find_file("nope.yaml", "grid file")


def _fake_manifests(work: Path, *names: str, synthetic: bool = True) -> None:
    for n in names:
        (work / n).mkdir(parents=True, exist_ok=True)
        (work / n / "manifest.parquet").write_bytes(b"")
        (work / n / "report.json").write_text('{"synthetic": %s}' % ("true" if synthetic else "false"))


def test_no_synthetic_data_is_mixed_into_a_real_work_folder(tmp_path):
    _fake_manifests(tmp_path / "w", "isic2017", synthetic=False)
    with pytest.raises(FileNotFoundError, match=r"no manifest for isic2018 .* holds real releases: ingest"):
        defaults.ensure_data(tmp_path / "w", "ISIC2017,ISIC2018")
    assert not (tmp_path / "w" / "synthetic").exists()
    assert defaults.ensure_data(tmp_path / "w", "B") == tmp_path / "w"  # present: nothing to do


def test_a_named_run_folder_must_hold_a_finished_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a finished run .* leave run_dir empty"):
        defaults.ensure_run(tmp_path / "typo")
    assert not (tmp_path / "typo").exists()  # nothing trained into a folder the user named


def test_train_params_one_recipe_and_where_runs_go(tmp_path):
    w = tmp_path / "w"
    _fake_manifests(w, "isic2017", "isic2018", "isic2016")
    (p,) = defaults.train_params(w)
    assert p.out == str(w / "runs" / "example") and p.work == str(w)
    assert (p.model, p.train, p.eval_sets, p.image_size, p.epochs) == ("efficientnet_lite0", "B",
                                                                       ["isic2017", "isic2018"], 128, None)
    (q,) = defaults.train_params(w, train="A")  # another recipe never lands in the default run's folder
    assert q.out == str(w / "runs" / "efficientnet_lite0__A")
    (r,) = defaults.train_params(w, "mine", epochs=3)
    assert r.out == str(home.home() / "mine") and r.epochs == 3
    with pytest.raises(TypeError, match="unknown value"):
        defaults.train_params(w, epoch=3)
    pf = tmp_path / "p.yaml"
    from melanoma.io import write_yaml

    write_yaml(pf, {**p.to_dict(), "train": "A"})
    (s,) = defaults.train_params(params_file=str(pf))  # the workflow's file wins over the values
    assert s.train == "A" and s.out == p.out

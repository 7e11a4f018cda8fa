"""Where things go (melanoma.home) and the notebooks' one default recipe (melanoma.pipeline.defaults)."""

from __future__ import annotations

from pathlib import Path

import pytest

from melanoma import home
from melanoma.pipeline import defaults

REPO = Path(__file__).resolve().parents[2]


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


def test_doctests_of_home_and_provenance():
    import doctest

    from melanoma import provenance

    assert doctest.testmod(home).failed == 0 and doctest.testmod(provenance).failed == 0


def test_notebook_helpers_for_tables_and_learning_curves():
    """The blocks the notebooks no longer hold: the learning curves figure and the confusion table."""
    import pandas as pd

    from melanoma.evaluate.tables import confusion_table
    from melanoma.report import plots

    h = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [0.7, 0.5, 0.4], "val_loss": [0.7, 0.6, 0.65],
                      "train_accuracy": [0.5, 0.7, 0.8], "val_accuracy": [0.5, 0.6, 0.6], "val_auc": [0.5, 0.7, 0.7]})
    fig = plots.learning_curves({"a": h, "b": h}, best={"a": 2}, tag=" (SYNTHETIC)")
    assert len(fig.axes) == 4 and fig.axes[0].get_title() == "a: loss (SYNTHETIC)"
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == \
        ["train accuracy", "validation accuracy", "validation AUC"]
    assert len(fig.axes[2].get_legend().get_texts()) == 2  # no checkpoint line for b
    with pytest.raises(ValueError, match=r"histories\['a'\] is missing keys \['val_auc'\]"):
        plots.learning_curves({"a": h.drop(columns="val_auc")})
    pred = pd.DataFrame({"run_id": "r", "eval_set": "isic2017", "split": ["val"] * 4 + ["test", "val"],
                         "label": [1, 1, 0, 0, 1, -1], "p_melanoma": [0.9, 0.2, 0.1, 0.6, 0.9, 0.9]})
    t = confusion_table(pred)
    assert t.loc[("r", "isic2017", "melanoma"), "melanoma"] == 1 and t.values.sum() == 4
    with pytest.raises(ValueError, match="threshold must be in"):
        confusion_table(pred, threshold=1.5)

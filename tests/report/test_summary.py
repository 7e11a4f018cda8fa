"""melanoma.report.summary: a grid's runs aggregated into summary.parquet / runs.parquet, the
SIIM-ISIC submission and its score, and the formatting helpers of the book's tables."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from melanoma.pipeline.grid import load_grid
from melanoma.report import summary as S

from tests.gridruns import ISIC2020_IDS, write_grid


@pytest.fixture(scope="module")
def grid_file(tmp_path_factory):
    return write_grid(tmp_path_factory.mktemp("summary_grid"))


@pytest.fixture(scope="module")
def aggregated(grid_file):
    grid = load_grid(grid_file)
    summary, runs = S.aggregate(grid)
    return grid, summary, runs


def _pred(grid, rid):
    return pd.read_parquet(grid.results / "runs" / rid / "predictions.parquet")


def _nan(df):
    """Missing values as NaN (parquet gives None for a missing value of an object column)."""
    return df.astype(object).where(df.notna(), np.nan)


def test_files_are_written(aggregated):
    grid, summary, runs = aggregated
    pd.testing.assert_frame_equal(_nan(pd.read_parquet(grid.results / "summary.parquet")), _nan(summary))
    pd.testing.assert_frame_equal(_nan(pd.read_parquet(grid.results / "runs.parquet")), _nan(runs))


def test_runs_table_has_every_run_of_the_grid_with_its_statuses(aggregated):
    grid, _, runs = aggregated
    r = runs.set_index("run_id")
    assert list(runs["run_id"]) == ["meshnet__B", "meshnet__AB", "resnet18__B", "resnet18__AB"]
    assert list(runs["train"]) == ["B", "A,B", "B", "A,B"]
    ok = r.loc["meshnet__B"]
    assert (ok["status_train"], ok["status_calibrate"], ok["status_reject"], ok["failed_step"]) == ("ok", "ok", "ok", "")
    assert ok["train_seconds"] == 1.5 and ok["notebook"] == str(grid.results / "runs" / "meshnet__B" / "02_train.ipynb")
    bad = r.loc["resnet18__B"]
    assert (bad["status_train"], bad["failed_step"], bad["error"]) == ("failed", "train", "RuntimeError: out of memory")
    assert bad["notebook"] == str(grid.results / "runs" / "resnet18__B" / "02_train.ipynb")
    never = r.loc["resnet18__AB"]
    assert (never["status_train"], never["status_reject"], never["failed_step"]) == ("not run", "not run", "")
    assert math.isnan(never["train_seconds"])


def test_only_finished_runs_have_summary_rows(aggregated):
    _, summary, _ = aggregated
    assert set(summary["run_id"]) == {"meshnet__B", "meshnet__AB"}
    assert set(summary[summary["run_id"] == "meshnet__AB"]["train"]) == {"A,B"}
    assert set(summary["train_datasets"]) == {"isic2017", "isic2016+isic2017"}


def test_before_rows_are_the_test_metrics_of_the_predictions(aggregated):
    from sklearn.metrics import roc_auc_score

    grid, summary, _ = aggregated
    for rid in ("meshnet__B", "meshnet__AB"):
        pred = _pred(grid, rid)
        for es in ("isic2017", "isic2018"):
            t = pred[(pred["eval_set"] == es) & (pred["split"] == "test") & (pred["label"] >= 0)]
            y, p = t["label"].to_numpy(), t["p_melanoma"].to_numpy()
            yhat = (p > 0.5).astype(int)
            b = summary[(summary["run_id"] == rid) & (summary["eval_set"] == es) & (summary["phase"] == "before")]
            assert len(b) == 1
            b = b.iloc[0]
            assert b["n"] == len(y) and b["n_melanoma"] == y.sum() and b["coverage"] == 1.0
            assert b["auc"] == pytest.approx(roc_auc_score(y, p))
            assert b["accuracy"] == pytest.approx((yhat == y).mean())
            assert b["precision"] == pytest.approx(yhat[y == 1].sum() / yhat.sum())
            assert b["tp"] + b["fn"] == y.sum() and b["melanoma_caught"] == b["tp"]
            assert b["auc_low"] <= b["auc"] <= b["auc_high"]
            assert b["eval_name"] == {"isic2017": "ISIC2017", "isic2018": "ISIC2018"}[es]


def test_after_rows_carry_the_rejection(aggregated):
    grid, summary, _ = aggregated
    rej = json.loads((grid.results / "runs" / "meshnet__B" / "rejection.json").read_text())["eval_sets"]["isic2018"]
    a = summary[(summary["run_id"] == "meshnet__B") & (summary["eval_set"] == "isic2018") & (summary["phase"] == "after")]
    a = a.iloc[0]
    assert a["coverage"] == pytest.approx(rej["coverage"]) and a["threshold"] == pytest.approx(rej["threshold"])
    assert a["n"] == rej["n_retained"] and a["n_retained"] == rej["n_retained"]
    assert a["melanoma_caught"] + a["melanoma_missed"] + a["melanoma_referred"] == a["n_melanoma"]
    methods = summary[(summary["run_id"] == "meshnet__B") & (summary["eval_set"] == "isic2018")
                      & summary["phase"].str.startswith("method_")]
    assert sorted(methods["phase"]) == ["method_conformal", "method_entropy", "method_sgr"]
    variant = summary[(summary["run_id"] == "meshnet__B") & (summary["phase"] == "after_temperature")]
    assert set(variant["eval_set"]) == {"isic2017", "isic2018"}


def test_a_skipped_rejection_keeps_its_before_numbers_and_says_why(aggregated):
    _, summary, _ = aggregated
    ph2 = summary[(summary["run_id"] == "meshnet__B") & (summary["eval_set"] == "ph2")]
    assert set(ph2["phase"]) == {"before", "after"}
    assert ph2["flagged"].all() and set(ph2["flags"]) == {"skipped"}
    assert ph2["rejection_note"].iloc[0].startswith("rejection skipped: the validation split has one class only")
    before, after = (ph2[ph2["phase"] == p].iloc[0] for p in ("before", "after"))
    assert before["n"] == 40 and not math.isnan(before["auc"]) and math.isnan(after["auc"])


def test_the_siim_isic_submission_and_its_score(aggregated):
    from sklearn.metrics import roc_auc_score

    grid, summary, _ = aggregated
    truth = pd.read_csv(grid.data_root / "isic2020" / "ISIC_2020_Test_GroundTruth_SYNTHETIC.csv")
    lb = summary[summary["phase"] == "leaderboard"].set_index("run_id")
    assert sorted(lb.index) == ["meshnet__AB", "meshnet__B"]
    assert "isic2020" not in set(summary[summary["phase"] == "before"]["eval_set"])  # no labelled test rows
    for rid in lb.index:
        sub = pd.read_csv(grid.results / "runs" / rid / "submission.csv")
        assert list(sub.columns) == ["image_name", "target"] and list(sub["image_name"]) == sorted(ISIC2020_IDS)
        pred = _pred(grid, rid)
        want = pred[pred["eval_set"] == "isic2020"].set_index("image_id")["p_melanoma"]
        np.testing.assert_allclose(sub["target"], want.loc[sub["image_name"]].to_numpy())
        m = truth.merge(sub, on="image_name", suffixes=("_true", ""))
        assert lb.loc[rid, "auc"] == pytest.approx(roc_auc_score(m["target_true"], m["target"]))
        assert lb.loc[rid, "n"] == 30 and lb.loc[rid, "n_melanoma"] == truth["target"].sum()
        assert lb.loc[rid, "score_source"] == "held-out labels of the SYNTHETIC ISIC 2020 replica"
    assert not (grid.results / "runs" / "resnet18__B" / "submission.csv").exists()


def test_scores_entered_from_kaggle_win_over_held_out_labels(aggregated, tmp_path, monkeypatch):
    grid, *_ = aggregated
    f = tmp_path / "leaderboard.yaml"
    f.write_text("grids:\n  g:\n    meshnet__B: {private: 0.81, public: 0.79}\n    meshnet__AB: 0.6\n")
    monkeypatch.setattr(S, "LEADERBOARD_YAML", f)
    summary, _ = S.aggregate(grid)
    lb = summary[summary["phase"] == "leaderboard"].set_index("run_id")
    assert (lb.loc["meshnet__B", "auc"], lb.loc["meshnet__B", "auc_public"]) == (0.81, 0.79)
    assert lb.loc["meshnet__AB", "auc"] == 0.6 and math.isnan(lb.loc["meshnet__AB", "auc_public"])
    assert set(lb["score_source"]) == {"Kaggle leaderboard, entered by the user in params/leaderboard.yaml"}


def test_report_prints_what_it_aggregated(grid_file, capsys):
    s = S.report(grid_file)
    out = capsys.readouterr().out
    assert out.startswith(f"g: 4 runs, 2 complete, 1 failed; {len(s)} summary rows → ")
    assert out.strip().endswith("summary.parquet")


# ----------------------------------------------------------------------------- formatting


def test_fmt_and_fmt_ci():
    assert S.fmt(0.0) == "0.0%" and S.fmt(1) == "100.0%" and S.fmt(0.8384, digits=0) == "84%"
    assert S.fmt(None) == "–" and S.fmt(float("nan"), pct=False) == "–" and S.fmt(np.float64("nan")) == "–"
    assert S.fmt(-0.0123, pct=False) == "-0.0123" and S.fmt(np.float64(0.25)) == "25.0%"
    assert S.fmt_ci(0.08321, 0.05, 0.1, pct=False) == "0.0832 [0.0500, 0.1000]"
    assert S.fmt_ci(0.5, 0.4, None) == "50.0%" and S.fmt_ci(float("nan"), 0.4, 0.6) == "–"


def test_fmt_of_a_float32_nan():
    assert S.fmt(np.float32("nan")) == "–" and S.fmt_ci(0.5, np.float32("nan"), 0.6) == "50.0%"
    assert S.fmt(np.float32(0.5)) == "50.0%"


def _row(model, train, es, value, phase="before", twin_of=""):
    return {"model": model, "train": train, "eval_set": es, "auc": value, "phase": phase, "twin_of": twin_of}


def test_metric_matrix_models_by_combinations_per_evaluation_set():
    s = pd.DataFrame([
        _row("resnet18", "A–D,I,J", "isic2017", 0.9), _row("resnet18", "B", "isic2017", 0.7),
        _row("meshnet", "A,B", "isic2017", 0.6), _row("meshnet", "B", "isic2017", 0.65),
        _row("meshnet", "B", "isic2017", 0.99, phase="after"),               # another phase
        _row("meshnet", "B", "isic2017", 0.1, twin_of="meshnet__B"),         # a leakage twin
        _row("meshnet", "B", "ph2", 0.55),
    ])
    m = S.metric_matrix(s, "auc")
    assert list(m) == ["ISIC2017", "PH2"]
    t = m["ISIC2017"]
    assert list(t.columns) == ["B", "A,B", "A–D,I,J"]                   # fewest datasets first
    assert list(t.index) == ["meshnet", "resnet18"]
    assert t.loc["meshnet", "B"] == 0.65 and t.loc["resnet18", "A–D,I,J"] == 0.9
    assert math.isnan(t.loc["resnet18", "A,B"]) and math.isnan(t.loc["meshnet", "A–D,I,J"])   # runs missing
    assert S.metric_matrix(s, "auc", phase="after")["ISIC2017"].loc["meshnet", "B"] == 0.99
    assert m["PH2"].shape == (1, 1)

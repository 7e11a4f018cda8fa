"""melanoma.evaluate.calibrate / reject / tables: metrics.json / rejection.json on a run directory built by hand (no training)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, brier_score_loss, precision_score, recall_score, roc_auc_score

from melanoma.cli import main
from melanoma.evaluate.calibrate import calibrate_run
from melanoma.evaluate.reject import LOW_TEST_COVERAGE, parse_thresholds, reject_run
from melanoma.evaluate.tables import flag_text, methods_table, reject_table
from melanoma.evaluate.uncertainty import entropy
from melanoma.io import write_json

from tests.conftest import logit_scores, prediction_rows
from tests.runs import make_run

B = 30  # bootstrap resamples: small, the tests check structure and counts, not interval widths
CONTRACT = ("precision", "sensitivity", "specificity", "f1", "accuracy", "auc", "ece", "brier")


_rows = prediction_rows
_scores = logit_scores


@pytest.fixture
def run_dir(tmp_path):
    return make_run(tmp_path / "run")


def _test_rows(run_dir, es):
    d = pd.read_parquet(run_dir / "predictions.parquet")
    d = d[(d.eval_set == es) & (d.split == "test") & (d.label >= 0)]
    return d.label.to_numpy(), d.p_melanoma.to_numpy()


def _val_rows(run_dir, es):
    d = pd.read_parquet(run_dir / "predictions.parquet")
    d = d[(d.eval_set == es) & (d.split == "val") & (d.label >= 0)]
    return d.label.to_numpy(), d.p_melanoma.to_numpy()


def _check_block(b):
    for k in CONTRACT:
        assert k in b, k
        assert k in b["ci"], k


# ----------------------------------------------------------------------------- metrics.json

def test_metrics_json_contract_and_sklearn(run_dir):
    r = calibrate_run(run_dir, B=B)
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["eval_sets"].keys() == r["eval_sets"].keys() == {"isic2017", "isic2018", "ph2", "isic2020"}
    assert {"run_id", "model", "train", "synthetic", "n_bins", "B", "eval_sets"} <= m.keys()
    assert m["synthetic"] is True and m["run_id"] == "handmade" and m["B"] == B and m["n_bins"] == 10
    for es in ("isic2017", "isic2018", "ph2"):
        e = m["eval_sets"][es]
        for block in ("test", "val", "before", "after"):
            if es == "ph2" and block == "after":
                continue
            _check_block(e[block])
        assert e["before"] == e["test"]
        rel = e["test"]["reliability"]
        assert sum(rel["count"]) == e["n"]["test"] and len(rel["confidence"]) == len(rel["accuracy"])
        # temperature scaling changes no prediction and no ranking
        if "skipped" not in e["after"]:
            for k in ("precision", "sensitivity", "specificity", "f1", "accuracy", "auc"):
                assert e["after"][k] == pytest.approx(e["before"][k])
            t = e["temperature"]
            assert t["T"] > 0 and t["fitted_on"] == "val"
            assert t["test"]["ece_before"] == pytest.approx(e["before"]["ece"])
            assert t["test"]["ece_after"] == pytest.approx(e["after"]["ece"])
            assert t["val"]["nll_after"] <= t["val"]["nll_before"] + 1e-9  # T minimises the val NLL
    assert m["eval_sets"]["isic2017"]["n_unlabelled"] == {"test": 7, "val": 0}
    assert m["eval_sets"]["isic2017"]["n"] == {"test": 120, "val": 80}
    # one-class validation: metrics still computed, temperature scaling reported as skipped
    ph2 = m["eval_sets"]["ph2"]
    assert "one class" in ph2["after"]["skipped"] and "skipped" in ph2["temperature"]
    assert math.isnan(ph2["val"]["auc"]) and ph2["val"]["warnings"]
    # only unlabelled test rows, no val: a reported skip
    e20 = m["eval_sets"]["isic2020"]
    assert "no labelled test rows (30 unlabelled)" in e20["skipped"]
    assert "skipped" in e20["before"] and "skipped" in e20["after"] and "skipped" in e20["val"]
    # independent cross-check with scikit-learn on the same test rows
    for es in ("isic2017", "isic2018"):
        y, p = _test_rows(run_dir, es)
        b = m["eval_sets"][es]["before"]
        yhat = (p > 0.5).astype(int)
        assert b["precision"] == pytest.approx(precision_score(y, yhat))
        assert b["sensitivity"] == pytest.approx(recall_score(y, yhat))
        assert b["specificity"] == pytest.approx(recall_score(1 - y, 1 - yhat))
        assert b["accuracy"] == pytest.approx(accuracy_score(y, yhat))
        assert b["auc"] == pytest.approx(roc_auc_score(y, p))
        assert b["brier"] == pytest.approx(brier_score_loss(y, p))
        assert b["ci"]["auc"]["low"] <= b["auc"] <= b["ci"]["auc"]["high"]


# ----------------------------------------------------------------------------- rejection.json

REJ_KEYS = ("threshold", "coverage", "before", "after", "fp", "fn", "fp_after", "fn_after", "fp_prevented",
            "fn_prevented", "fn_reduction_pct", "val_search", "curves", "aurc", "eaurc", "selective_risk")


N_CANDIDATES = {"absolute": 21, "coverage": 16, "relative": 16}   # 0…0.2 bits / r = 0.05…0.20


@pytest.mark.parametrize("mode", ["relative", "absolute", "coverage"])
def test_rejection_json_contract_and_accounting(run_dir, mode):
    r = reject_run(run_dir, mode=mode, B=B, min_coverage=0.5)
    j = json.loads((run_dir / "rejection.json").read_text())
    assert j["mode"] == mode and j["min_coverage"] == 0.5 and j["temperature"] is False
    assert j["primary"] == "raw"
    assert len(j["thresholds"]) == N_CANDIDATES[mode] and j["thresholds"][-1] == pytest.approx(0.2)
    assert "grid" not in j  # "grid" is the experiment file only
    for es in ("isic2017", "isic2018"):
        e = j["eval_sets"][es]
        for k in REJ_KEYS:
            assert k in e, k
        _check_block(e["before"])
        _check_block(e["after"])
        # both variants are always computed; the raw one is the primary here
        assert set(e["variants"]) == {"raw", "temperature"} and e["temperature"]["T"] > 0
        assert e["variants"]["raw"]["threshold"] == e["threshold"]
        assert e["variants"]["raw"]["coverage"] == e["coverage"]
        assert e["val_source"] == "own validation split" and e["test_source"] == "official test split"
        ref = e["referral"]
        assert ref["melanoma_caught"] + ref["melanoma_missed"] + ref["melanoma_referred"] == ref["n_melanoma"]
        assert ref["melanoma_missed"] == e["fn_after"] and ref["coverage"] == e["coverage"]
        n = e["n_test"]
        assert n == e["n"]["test"] == e["before"]["n"]
        # retained + rejected = all; coverage matches the retained count
        assert e["n_retained"] + e["n_rejected"] == n
        assert e["after"]["n"] == e["n_retained"]
        assert e["coverage"] == pytest.approx(e["n_retained"] / n)
        # prevented counts add up
        assert e["fp"] == e["fp_after"] + e["fp_prevented"]
        assert e["fn"] == e["fn_after"] + e["fn_prevented"]
        assert e["fp_prevented"] + e["fn_prevented"] + e["tp_rejected"] + e["tn_rejected"] == e["n_rejected"]
        if e["fn"]:
            assert e["fn_reduction_pct"] == pytest.approx(100 * e["fn_prevented"] / e["fn"])
        # the threshold is a candidate (relative: the entropy quantile of r on validation) with the
        # validation coverage floor respected
        if mode == "relative":
            assert e["fraction"] in j["thresholds"]
            yv, pv = _val_rows(run_dir, es)
            assert e["threshold"] == pytest.approx(np.sort(entropy(pv))[len(pv) - int(np.floor(e["fraction"] * len(pv) + 1e-9)) - 1])
            assert e["val_coverage"] >= 1 - e["fraction"] - 1e-12
        else:
            assert e["threshold"] in j["thresholds"]
        assert e["val_search"]["coverage"] >= 0.5 and e["val_search"]["min_coverage_met"] is True
        assert len(e["val_search"]["table"]["threshold"]) == N_CANDIDATES[mode]
        # independent recomputation of the retained set and the "after" metrics with sklearn
        y, p = _test_rows(run_dir, es)
        if mode in ("absolute", "relative"):
            keep = entropy(p) <= e["threshold"]
        else:
            keep = np.zeros(n, bool)
            keep[np.argsort(entropy(p), kind="stable")[: n - int(np.floor(e["threshold"] * n + 1e-9))]] = True
        assert keep.sum() == e["n_retained"]
        yk, pk = y[keep], p[keep]
        assert e["after"]["precision"] == pytest.approx(precision_score(yk, pk > 0.5))
        assert e["after"]["sensitivity"] == pytest.approx(recall_score(yk, pk > 0.5))
        assert e["after"]["auc"] == pytest.approx(roc_auc_score(yk, pk))
        assert e["after"]["brier"] == pytest.approx(brier_score_loss(yk, pk))
        assert e["aurc"]["low"] <= e["aurc"]["estimate"] <= e["aurc"]["high"]
        assert e["selective_risk"]["coverage"] == [0.8, 0.9, 1.0]
        assert e["selective_risk"]["risk"][-1] == pytest.approx(1 - e["before"]["accuracy"])
        assert e["min_coverage"] == 0.5
        assert e["curves"]["risk_coverage"]["split"] == "test" and e["curves"]["accuracy_rejection"]["split"] == "val"
        assert e["curves"]["risk_coverage"]["coverage"][-1] == pytest.approx(1.0)
        assert len(e["curves"]["accuracy_rejection"]["threshold"]) == 101
    # reported skips, never a crash
    assert "one class" in j["eval_sets"]["ph2"]["skipped"]
    assert "no labelled validation rows" in j["eval_sets"]["isic2020"]["skipped"]
    assert r["eval_sets"]["ph2"]["skipped"] == j["eval_sets"]["ph2"]["skipped"]


def test_threshold_never_reads_test_labels(run_dir):
    first = reject_run(run_dir, B=B, min_coverage=0.5)
    pred = pd.read_parquet(run_dir / "predictions.parquet")
    rng = np.random.default_rng(1)
    test = (pred.split == "test") & (pred.label >= 0)
    labels = pred.loc[test, "label"].to_numpy()
    labels = rng.permutation(labels)
    labels[:10] = 1 - labels[:10]  # shuffle and perturb
    pred.loc[test, "label"] = labels
    pred.to_parquet(run_dir / "predictions.parquet", index=False)
    second = reject_run(run_dir, B=B, min_coverage=0.5)
    for es in ("isic2017", "isic2018"):
        a, b = first["eval_sets"][es], second["eval_sets"][es]
        assert a["threshold"] == b["threshold"]
        assert a["coverage"] == b["coverage"]  # coverage depends on p only
        for k in ("coverage", "objective", "accuracy"):
            np.testing.assert_array_equal(a["val_search"]["table"][k], b["val_search"]["table"][k])
        assert a["before"]["accuracy"] != b["before"]["accuracy"]  # the test labels did change


def test_temperature_block_and_min_coverage(run_dir):
    r = reject_run(run_dir, B=B, temperature=True, min_coverage=0.5)
    e = r["eval_sets"]["isic2017"]
    t = e["temperature"]
    assert t["T"] > 0 and t["n_fit"] == 80
    assert t["test"]["brier_after"] == pytest.approx(e["before"]["brier"])  # test metrics use calibrated p
    assert json.loads((run_dir / "rejection.json").read_text())["temperature"] is True
    # the floor: without it the search may pick lower coverage, never higher objective among allowed
    bare = reject_run(run_dir, B=B, min_coverage=0.0)["eval_sets"]["isic2017"]["val_search"]
    floor = reject_run(run_dir, B=B, min_coverage=0.9)["eval_sets"]["isic2017"]["val_search"]
    assert bare["objective"] <= floor["objective"]
    assert floor["coverage"] >= 0.9 or not floor["min_coverage_met"]


def test_floor_out_of_reach_is_relaxed_and_reported(run_dir):
    # no entropy threshold <= 0.01 bit can keep 99 % of these validation images
    r = reject_run(run_dir, B=B, mode="absolute", thresholds="0:0.01:0.01", min_coverage=0.99)
    s = r["eval_sets"]["isic2017"]["val_search"]
    assert s["min_coverage_met"] is False and "relaxed" in s["note"]
    assert s["coverage"] == pytest.approx(np.nanmax(s["table"]["coverage"]))
    e = r["eval_sets"]["isic2017"]
    assert "floor-relaxed" in [f["code"] for f in e["flags"]]
    assert any("floor relaxed" in f for f in reject_table(r)["flags"].tolist())


def test_everything_rejected(tmp_path):
    """Validation has predictions with entropy exactly 0; test has none: threshold 0 rejects all."""
    rng = np.random.default_rng(0)
    yv = np.array([1, 0] * 10)
    dv = np.where(yv == 1, 800.0, -800.0)  # sigmoid saturates: p exactly 1 / 0
    yt = (rng.random(30) < 0.4).astype(int)
    pred = pd.concat([_rows("isic2017", "val", yv, dv), _rows("isic2017", "test", yt, _scores(rng, yt))])
    run = tmp_path / "run"
    run.mkdir()
    pred.to_parquet(run / "predictions.parquet", index=False)
    write_json(run / "run.json", {"run_id": "allrej", "synthetic": False})
    r = reject_run(run, mode="absolute", thresholds="0:0:1", B=B)
    e = r["eval_sets"]["isic2017"]
    assert e["threshold"] == 0.0 and e["val_search"]["coverage"] == 1.0
    assert e["coverage"] == 0.0 and e["n_retained"] == 0 and e["n_rejected"] == 30
    assert e["after"]["n"] == 0 and math.isnan(e["after"]["accuracy"])
    assert [f["code"] for f in e["flags"]] == ["low-coverage", "one-class-retained"]
    assert e["fp_prevented"] == e["fp"] and e["fn_prevented"] == e["fn"] and e["fp_after"] == e["fn_after"] == 0
    assert json.loads((run / "rejection.json").read_text())["synthetic"] is False
    # and everything rejected in coverage mode
    e = reject_run(run, mode="coverage", thresholds=[1.0], min_coverage=0, B=B)["eval_sets"]["isic2017"]
    assert e["val_search"]["note"] == "no candidate threshold retains any validation sample"


def test_no_candidate_retains_anything_is_a_skip(run_dir):
    r = reject_run(run_dir, mode="absolute", thresholds=[0.0], B=B)  # no entropy is exactly 0 here
    assert "no candidate threshold retains any validation sample" in r["eval_sets"]["isic2017"]["skipped"]


@pytest.mark.parametrize("text, message", [
    ("0:0.2", "START:STOP:STEP"),
    ("0:0.2:0.01:1", "START:STOP:STEP"),
    ("a:0.2:0.01", "START 'a' is not a number"),
    ("0:0.2:", "STEP '' is not a number"),
    ("-0.1:0.2:0.01", "START must be >= 0"),
    ("0.3:0.2:0.01", "smaller than START"),
    ("0:0.2:0", "STEP must be > 0"),
    ("0:0.2:-0.01", "STEP must be > 0"),
    ("0:inf:0.1", "finite"),
    ("0:1000:0.0001", "too many"),
])
def test_parse_thresholds_errors(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_thresholds(text)


def test_parse_thresholds_values():
    g = parse_thresholds("0:0.2:0.01")
    assert g.size == 21 and g[0] == 0 and g[-1] == 0.2
    assert parse_thresholds(" 0.05 : 0.15 : 0.05 ").tolist() == [0.05, 0.1, 0.15]
    assert parse_thresholds("0:0.3:0.1").tolist() == [0.0, 0.1, 0.2, 0.3]  # no float drift


def test_bad_arguments(run_dir, tmp_path):
    with pytest.raises(ValueError, match="coverage"):
        reject_run(run_dir, mode="coverage", thresholds="0:2:0.5", B=B)
    with pytest.raises(ValueError, match="mode"):
        reject_run(run_dir, mode="bits", B=B)
    with pytest.raises(ValueError, match="relative"):
        reject_run(run_dir, mode="relative", thresholds="0:1:0.5", B=B)
    with pytest.raises(ValueError, match="min_coverage"):
        reject_run(run_dir, min_coverage=1.5, B=B)
    with pytest.raises(ValueError, match="START:STOP:STEP"):
        reject_run(run_dir, thresholds="0-0.2", B=B)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        calibrate_run(tmp_path / "nope", B=B)
    (tmp_path / "half").mkdir()
    pd.read_parquet(run_dir / "predictions.parquet").to_parquet(tmp_path / "half" / "predictions.parquet")
    with pytest.raises(FileNotFoundError, match="run.json"):
        reject_run(tmp_path / "half", B=B)


# ----------------------------------------------------------------------------- CLI

def test_cli_calibrate_and_reject(run_dir, capsys):
    assert main(["calibrate", str(run_dir), "--bins", "15", "--bootstrap", str(B), "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "isic2017" in out and "metrics.json" in out and "SYNTHETIC" in out
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["n_bins"] == 15 and m["seed"] == 3
    assert main(["reject", str(run_dir), "--mode", "coverage", "--thresholds", "0:0.1:0.05", "--min-coverage", "0.7",
                 "--temperature", "--bootstrap", str(B)]) == 0
    out = capsys.readouterr().out
    assert "accuracy before → after" in out and "melanomas caught / missed / referred" in out and "skipped" in out
    j = json.loads((run_dir / "rejection.json").read_text())
    assert j["mode"] == "coverage" and j["thresholds"] == [0.0, 0.05, 0.1] and j["min_coverage"] == 0.7
    assert "temperature" in j["eval_sets"]["isic2017"]
    assert main(["reject", str(run_dir), "--bootstrap", str(B)]) == 0
    with pytest.raises(SystemExit) as exc:
        main(["reject", str(run_dir), "--thresholds", "0:x:1"])
    assert exc.value.code == 2
    assert "STOP 'x' is not a number" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # the old spelling: --grid names a grid file everywhere else
        main(["reject", str(run_dir), "--grid", "0:0.1:0.05"])
    assert exc.value.code == 2
    assert "now --thresholds 0:0.1:0.05" in capsys.readouterr().err
    assert main(["calibrate", str(run_dir / "missing")]) == 2


def test_absolute_thresholds_above_the_two_class_maximum_are_an_error(tmp_path):
    """A candidate above 1 bit (e.g. "0:1:0.02" misread as the number 60.02) retains everything."""
    run_dir = make_run(tmp_path / "run")
    with pytest.raises(ValueError, match="two-class maximum"):
        reject_run(run_dir, mode="absolute", thresholds=60.02, B=10)
    with pytest.raises(ValueError, match="fractions of the validation split"):
        reject_run(run_dir, thresholds=60.02, B=10)


def test_grid_is_not_a_reject_run_keyword(run_dir):
    """The candidates are ``thresholds``; "grid" names only the experiment file (params/*.yaml)."""
    with pytest.raises(TypeError, match="grid"):
        reject_run(run_dir, grid="0:0.2:0.01", B=B)


# ----------------------------------------------------------------------------- relative rule, flags

def test_default_rule_is_relative_and_keeps_the_seed_codes_thresholds(run_dir):
    r = reject_run(run_dir, B=B)
    assert r["mode"] == "relative" and r["thresholds"].tolist() == pytest.approx(np.arange(0.05, 0.2001, 0.01).tolist())
    for es in ("isic2017", "isic2018"):
        e = r["eval_sets"][es]
        assert 0.8 - 1e-12 <= e["val_coverage"] <= 0.95 + 1e-12   # r in 0.05..0.20 of validation
        assert e["threshold_unit"] == "bits" and 0 <= e["threshold"] <= 1


def test_a_shifted_test_split_is_flagged_low_coverage(tmp_path):
    """Validation confident, test uncertain: the entropy value from validation keeps little of test."""
    rng = np.random.default_rng(3)
    yv = (rng.random(100) < 0.3).astype(int)
    yt = (rng.random(100) < 0.3).astype(int)
    pred = pd.concat([_rows("isic2017", "val", yv, _scores(rng, yv, strength=6, noise=1)),
                      _rows("isic2017", "test", yt, _scores(rng, yt, strength=0.5, noise=1))])
    run = tmp_path / "run"
    run.mkdir()
    pred.to_parquet(run / "predictions.parquet", index=False)
    write_json(run / "run.json", {"run_id": "shift", "synthetic": True})
    e = reject_run(run, B=B)["eval_sets"]["isic2017"]
    assert e["val_coverage"] >= 0.8 and e["coverage"] < LOW_TEST_COVERAGE
    assert "low-coverage" in [f["code"] for f in e["flags"]]
    assert "test coverage" in flag_text(e["flags"])
    # a healthy result carries no flag
    ok = reject_run(make_run(tmp_path / "ok"), B=B)["eval_sets"]["isic2017"]
    assert ok["flags"] == [] and flag_text(ok["flags"]) == ""


def test_temperature_variant_is_the_same_rule_on_calibrated_probabilities(run_dir):
    raw = reject_run(run_dir, B=B)
    cal = reject_run(run_dir, B=B, temperature=True)
    assert cal["primary"] == "temperature"
    for es in ("isic2017", "isic2018"):
        a, b = raw["eval_sets"][es], cal["eval_sets"][es]
        # the same two variants whichever is primary
        for k in ("raw", "temperature"):
            assert a["variants"][k]["threshold"] == pytest.approx(b["variants"][k]["threshold"])
            assert a["variants"][k]["coverage"] == b["variants"][k]["coverage"]
        assert b["threshold"] == pytest.approx(a["variants"]["temperature"]["threshold"])
        # recompute the temperature variant's retained set from the logits
        d = pd.read_parquet(run_dir / "predictions.parquet")
        t = d[(d.eval_set == es) & (d.split == "test") & (d.label >= 0)]
        T = b["temperature"]["T"]
        pT = 1 / (1 + np.exp(-(t.logit_1 - t.logit_0).to_numpy() / T))
        assert (entropy(pT) <= b["threshold"]).mean() == pytest.approx(b["coverage"])


def test_val_and_test_sources_come_from_run_json(tmp_path):
    run = make_run(tmp_path / "run")
    info = json.loads((run / "run.json").read_text())
    info["eval_sources"] = {"isic2018": {"val": "the training combination's validation split (60 images of B)",
                                         "test": "the whole release (90 labelled images)", "whole": True}}
    write_json(run / "run.json", info)
    r = reject_run(run, B=B)
    assert r["eval_sets"]["isic2018"]["val_source"].startswith("the training combination's")
    assert r["eval_sets"]["isic2018"]["test_source"].startswith("the whole release")
    assert r["eval_sets"]["isic2017"]["val_source"] == "own validation split"


# ----------------------------------------------------------------------------- rules with a guarantee

def test_methods_side_by_side_and_conformal_as_primary(run_dir):
    r = reject_run(run_dir, B=B)
    e = r["eval_sets"]["isic2017"]
    assert set(e["methods"]) == {"entropy", "conformal", "sgr", "curves"}
    # the entropy method is the primary result's retained set
    assert e["methods"]["entropy"]["n_retained"] == e["n_retained"]
    conf = e["methods"]["conformal"]
    assert conf["alpha"] == 0.1 and conf["exchangeable"] is True
    assert set(conf["class_coverage"]) == {"melanoma", "benign"}
    # recompute the conformal sets from the validation rows with the exported thresholds
    yv, pv = _val_rows(run_dir, "isic2017")
    yt, pt = _test_rows(run_dir, "isic2017")
    mp = conf["min_prob"]
    S = np.stack([1 - pt >= mp[0] - 1e-12, pt >= mp[1] - 1e-12], 1)
    assert conf["class_coverage"]["melanoma"]["observed"] == pytest.approx(S[yt == 1, 1].mean())
    single = S.sum(1) == 1
    assert conf["n_retained"] == single.sum()
    # conformal as the primary: the main fields follow its singletons
    c = reject_run(run_dir, B=B, method="conformal", conformal_alpha=0.2)
    ce = c["eval_sets"]["isic2017"]
    assert c["method"] == "conformal" and ce["method"] == "conformal" and math.isnan(ce["threshold"])
    assert ce["n_retained"] == ce["methods"]["conformal"]["n_retained"] and ce["methods"]["conformal"]["alpha"] == 0.2
    assert ce["referral"]["melanoma_missed"] == ce["methods"]["conformal"]["melanoma_missed"]
    s = reject_run(run_dir, B=B, method="sgr", risk_target=0.3)
    se = s["eval_sets"]["isic2017"]
    if se["methods"]["sgr"]["met"]:
        assert se["threshold"] == se["methods"]["sgr"]["threshold"] and se["methods"]["sgr"]["bound"] <= 0.3
    else:
        assert "sgr-not-met" in [f["code"] for f in se["flags"]]
    with pytest.raises(ValueError, match="method"):
        reject_run(run_dir, B=B, method="bayes")
    with pytest.raises(ValueError, match="conformal_alpha"):
        reject_run(run_dir, B=B, conformal_alpha=1.5)


def test_external_calibration_has_no_guarantee(tmp_path):
    run = make_run(tmp_path / "run")
    info = json.loads((run / "run.json").read_text())
    info["eval_sources"] = {"isic2018": {"val": "the training combination's validation split (60 images of B)",
                                         "test": "official test split"}}
    write_json(run / "run.json", info)
    r = reject_run(run, B=B)
    assert r["eval_sets"]["isic2018"]["methods"]["conformal"]["exchangeable"] is False
    assert r["eval_sets"]["isic2017"]["methods"]["conformal"]["exchangeable"] is True
    t = methods_table(r)
    assert t[(t["eval set"] == "isic2018") & (t["method"] == "conformal")]["promise kept on test"].iloc[0] \
        .endswith("(no guarantee: calibrated on another split)")


def test_cli_reject_method_conformal(run_dir, capsys):
    assert main(["reject", str(run_dir), "--method", "conformal", "--alpha", "0.2", "--bootstrap", str(B)]) == 0
    out = capsys.readouterr().out
    assert "promise kept on test" in out and "conformal" in out
    j = json.loads((run_dir / "rejection.json").read_text())
    assert j["method"] == "conformal" and j["conformal_alpha"] == 0.2

"""Display tables of calibrate / reject results, for the CLI, notebooks 02–04 and the book.

Each function takes what :func:`melanoma.evaluate.calibrate.calibrate_run` or
:func:`melanoma.evaluate.reject.reject_run` returned (the contents of ``metrics.json`` /
``rejection.json``), or prediction rows, and returns a :class:`pandas.DataFrame` of formatted
values; nothing here computes a metric.
"""

from __future__ import annotations

import math

import pandas as pd

__all__ = [
    "flag_text",
    "reject_table",
    "methods_table",
    "calibrate_table",
    "metrics_table",
    "temperature_table",
    "thresholds_table",
    "rejection_counts_table",
    "variants_table",
    "confusion_table",
]


def flag_text(flags) -> str:
    """Flags as one short line (``""`` when there are none), for tables and captions."""
    return "; ".join(f["text"] for f in (flags or []))


def _f(x, fmt=".3f") -> str:
    return "nan" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


def _ci(block: dict, k: str) -> str:
    ci = block.get("ci", {}).get(k)
    s = _f(block.get(k))
    return f"{s} [{_f(ci['low'])}, {_f(ci['high'])}]" if ci else s


def reject_table(result: dict) -> pd.DataFrame:
    """One row per evaluation set: threshold, coverage (validation / test), accuracy and the
    sensitivity among the retained before → after, where the melanomas went, and the flags."""
    rows = []
    for es, e in result["eval_sets"].items():
        if "skipped" in e:
            rows.append({"eval set": es, "threshold": "", "coverage val / test": "", "accuracy before → after": "",
                         "sensitivity before → after": "", "melanomas caught / missed / referred": "",
                         "benign referred": "", "flags": f"skipped: {e['skipped']}"})
            continue
        r = e["referral"]
        frac = f" (r = {e['fraction']:.2f})" if math.isfinite(e.get("fraction", math.nan)) else ""
        rows.append({
            "eval set": es, "threshold": f"{_f(e['threshold'])}{frac}",
            "coverage val / test": f"{_f(e['val_coverage'], '.2f')} / {_f(e['coverage'], '.2f')} "
                                   f"({e['n_retained']}/{e['n_test']})",
            "accuracy before → after": f"{_f(e['before']['accuracy'])} → {_f(e['after']['accuracy'])}",
            "sensitivity before → after": f"{_f(e['before']['sensitivity'])} → {_f(r['sensitivity_retained'])}",
            "melanomas caught / missed / referred": f"{r['melanoma_caught']} / {r['melanoma_missed']} / "
                                                    f"{r['melanoma_referred']} of {r['n_melanoma']}",
            "benign referred": f"{r['benign_referred']} of {r['n_benign']}",
            "flags": flag_text(e["flags"]),
        })
    return pd.DataFrame(rows)


def methods_table(result: dict) -> pd.DataFrame:
    """Entropy rule vs conformal sets vs SGR per evaluation set: coverage, accuracy, melanomas
    given a confident benign label (miss rate), melanomas referred, and whether test kept the
    method's promise (entropy promises nothing)."""
    rows = []
    for es, e in result["eval_sets"].items():
        for name, m in (e.get("methods") or {}).items():
            if name == "curves":
                continue
            kept = {True: "yes", False: "NO", None: "no promise"}[m.get("kept")]
            if name == "sgr" and not m.get("met"):
                kept = "no threshold meets the target on validation"
            elif name == "conformal" and not m.get("exchangeable", True):
                kept += " (no guarantee: calibrated on another split)"
            rows.append({"eval set": es, "method": name,
                         "coverage": f"{_f(m['coverage'], '.2f')} ({m['n_retained']}/{m['n']})",
                         "accuracy": _f(m["accuracy"]),
                         "melanomas missed (confident benign)": f"{m['melanoma_missed']} of {m['n_melanoma']} "
                                                                f"({_f(m['miss_rate'], '.3f')})",
                         "melanomas referred": m["melanoma_referred"], "promise kept on test": kept})
    return pd.DataFrame(rows)


def calibrate_table(result: dict) -> pd.DataFrame:
    """One row per evaluation set: n, accuracy and AUC with CIs, ECE and Brier before → after, T."""
    rows = []
    for es, e in result["eval_sets"].items():
        if "skipped" in e:
            rows.append({"eval set": es, "n test": 0, "accuracy": "", "AUC": "", "ECE before → after": "",
                         "Brier before → after": "", "T": "", "note": f"skipped: {e['skipped']}"})
            continue
        b, a, t = e["before"], e["after"], e["temperature"]
        fitted = "skipped" not in a
        rows.append({
            "eval set": es, "n test": b["n"], "accuracy": _ci(b, "accuracy"), "AUC": _ci(b, "auc"),
            "ECE before → after": f"{_f(b['ece'])} → {_f(a['ece'])}" if fitted else _f(b["ece"]),
            "Brier before → after": f"{_f(b['brier'])} → {_f(a['brier'])}" if fitted else _f(b["brier"]),
            "T": _f(t["T"]) if fitted else "", "note": "" if fitted else a["skipped"],
        })
    return pd.DataFrame(rows)


def metrics_table(blocks: dict, metrics=("precision", "sensitivity", "specificity", "f1", "accuracy",
                                         "auc", "ece", "brier")) -> pd.DataFrame:
    """``{label: report block}`` → a table of "value [low, high]" strings, one row per label."""
    rows = []
    for label, b in blocks.items():
        if "skipped" in b:
            rows.append({"": label, **{m: "" for m in metrics}, "n": "", "note": b["skipped"]})
        else:
            rows.append({"": label, **{m: _ci(b, m) for m in metrics}, "n": b["n"], "note": ""})
    return pd.DataFrame(rows).set_index("")


def temperature_table(result: dict) -> pd.DataFrame:
    """Temperature scaling per evaluation set (a ``calibrate_run`` result): ``T`` and ECE, Brier
    and NLL before → after on the validation split it was fitted on and on the test split."""
    rows = []
    for es, e in result["eval_sets"].items():
        t = e.get("temperature", {"skipped": e.get("skipped", "")})
        if "skipped" in t:
            rows.append({"eval set": es, "T": None, "note": t["skipped"]})
            continue
        for split in ("val", "test"):
            rows.append({"eval set": es, "split": split, "T": t["T"],
                         **{k: t[split][k] for k in ("ece_before", "ece_after", "brier_before", "brier_after",
                                                     "nll_before", "nll_after")}})
    return pd.DataFrame(rows).round(4)


def _done(result: dict) -> dict:
    return {es: e for es, e in result["eval_sets"].items() if "skipped" not in e}


def thresholds_table(result: dict) -> pd.DataFrame:
    """The thresholds a ``reject_run`` chose on validation: value, fraction r, coverage on
    validation and test, the objective, ``T`` and the flags, one row per evaluation set."""
    return pd.DataFrame([
        {"eval set": es, f"threshold ({e['threshold_unit']})": e["threshold"], "r": e["fraction"],
         "val coverage": e["val_coverage"], "val n": e["val_search"]["n"], "val from": e["val_source"],
         "objective ½(ECE+Brier)": e["val_search"]["objective"], "test coverage": e["coverage"],
         "T": e.get("temperature", {}).get("T"), "flags": flag_text(e["flags"])}
        for es, e in _done(result).items()])


def rejection_counts_table(result: dict) -> pd.DataFrame:
    """False positives / negatives before and after rejection, AURC (with CI), E-AURC and the
    selective risk at fixed coverages, one row per evaluation set of a ``reject_run`` result."""
    return pd.DataFrame([
        {"eval set": es, "FP before": e["fp"], "FP after": e["fp_after"], "FP prevented": e["fp_prevented"],
         "FN before": e["fn"], "FN after": e["fn_after"], "FN prevented": e["fn_prevented"],
         "FN reduction %": e["fn_reduction_pct"], "correct rejected": e["correct_rejected"],
         "AURC": e["aurc"]["estimate"], "AURC CI": f"[{e['aurc']['low']:.3f}, {e['aurc']['high']:.3f}]",
         "E-AURC": e["eaurc"]["estimate"],
         **{f"risk @ {c:g}": r for c, r in zip(e["selective_risk"]["coverage"], e["selective_risk"]["risk"])}}
        for es, e in _done(result).items()]).round(4)


def variants_table(result: dict) -> pd.DataFrame:
    """The rejection rule on raw and on temperature-scaled probabilities, side by side: threshold,
    fraction, coverage (validation / test), accuracy after and flags, per evaluation set."""
    return pd.DataFrame([
        {"eval set": es, "probabilities": k,
         **{c: v.get(c) for c in ("threshold", "fraction", "val_coverage", "coverage")},
         "accuracy after": v.get("after", {}).get("accuracy"), "flags": flag_text(v.get("flags"))}
        for es, e in _done(result).items() for k, v in e["variants"].items()])


def confusion_table(predictions: pd.DataFrame, split: str = "val", threshold: float = 0.5) -> pd.DataFrame:
    """Truth × prediction counts at ``threshold`` on ``split`` of prediction rows (one or several
    runs: ``predictions.parquet``), per run and evaluation set; unlabelled rows are left out."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    rows = predictions[(predictions["split"] == split) & (predictions["label"] >= 0)]
    names = {1: "melanoma", 0: "non-melanoma"}
    return pd.crosstab([rows["run_id"], rows["eval_set"], rows["label"].map(names).rename("truth")],
                       (rows["p_melanoma"] > threshold).map({True: "melanoma", False: "non-melanoma"})
                       .rename("predicted"))

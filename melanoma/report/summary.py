"""Aggregate a grid's runs into ``results/<grid>/summary.parquet`` and the SIIM-ISIC submissions.

``summary.parquet`` has one row per run × evaluation set × phase (``before`` / ``after``
rejection, and ``after_temperature``: the same rule on temperature-scaled probabilities): every
metric, its bootstrap CI (``<metric>_low`` / ``<metric>_high``), the threshold (entropy, bits) and
the fraction ``r`` it rejected on validation, the coverage on validation and test, the melanoma
referral counts (caught / missed / referred, benign referred, sensitivity and specificity among
the retained), and the rejection's ``flags`` (``floor-relaxed``, ``low-coverage``,
``one-class-retained``, ``skipped``) with ``flagged`` and ``rejection_note``; and one
``method_<name>`` row per rejection method compared (entropy, conformal, sgr: coverage, accuracy,
melanoma miss rate with CIs, ``promise_kept``, ``exchangeable``, conformal class coverage and
slack, SGR target and bound). ``runs.parquet`` has one row per run with the status of each step
and the paths of its executed notebooks (failed runs included, so the book can list them).

SIIM-ISIC 2020 (Table 2): every run that scored ISIC 2020's unlabelled test split gets a
``submission.csv`` (``image_name,target``). Its AUC comes from ``params/leaderboard.yaml`` — scores
a user got back from Kaggle and typed in, marked as such — or, for the synthetic replica, from the
replica's held-out labels (``ISIC_2020_Test_GroundTruth_SYNTHETIC.csv``). Those rows have
``eval_set = "isic2020"``, ``phase = "leaderboard"``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from melanoma.data.registry import combo_label, get, parse_combo
from melanoma.io import read_json, read_yaml, write_parquet, write_text
from melanoma.pipeline.grid import KEEP_SUFFIX, REPO, Grid, load_grid

METRICS = ["precision", "sensitivity", "specificity", "f1", "accuracy", "balanced_accuracy", "auc",
           "ece", "brier", "nll", "macro_precision", "macro_f1"]
COUNTS = ["n", "n_melanoma", "tp", "fp", "tn", "fn"]
LEADERBOARD_YAML = REPO / "params" / "leaderboard.yaml"


def _num(x) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return float("nan")
    return v


def _status(run_dir: Path, step: str) -> dict:
    f = run_dir / f"status-{step}.json"
    return read_json(f) if f.is_file() else {"status": "not run"}


REFERRAL = ["n_melanoma", "melanoma_caught", "melanoma_missed", "melanoma_referred", "n_benign",
            "benign_cleared", "benign_false_alarm", "benign_referred", "sensitivity_retained",
            "specificity_retained"]
VARIANT_METRICS = ["accuracy", "sensitivity", "specificity", "auc", "ece", "brier"]
#: Per rejection method (``method_<name>`` rows, :func:`melanoma.evaluate.conformal.selective_stats`), with CIs.
METHOD_STATS = ["coverage", "accuracy", "sensitivity_retained", "specificity_retained", "miss_rate",
                "melanoma_referred_rate"]


def _flags(block: dict) -> tuple[str, str]:
    fl = block.get("flags") or []
    return ",".join(f["code"] for f in fl), "; ".join(f["text"] for f in fl)


def _referral_before(b: dict) -> dict:
    """Where the melanomas go without rejection: every positive is caught or missed."""
    n, n_mel = _num(b.get("n")), _num(b.get("n_melanoma"))
    tp, fn, tn, fp = (_num(b.get(k)) for k in ("tp", "fn", "tn", "fp"))
    return {"n_melanoma": n_mel, "melanoma_caught": tp, "melanoma_missed": fn, "melanoma_referred": 0.0,
            "n_benign": n - n_mel, "benign_cleared": tn, "benign_false_alarm": fp, "benign_referred": 0.0,
            "sensitivity_retained": _num(b.get("sensitivity")), "specificity_retained": _num(b.get("specificity"))}


def run_rows(grid: Grid, rid: str, run_dir: Path) -> list[dict]:
    """Summary rows of one finished run (empty if its reject step did not finish).

    Per evaluation set: ``before`` (all test images), ``after`` (the retained ones, by the run's
    primary rejection rule) and ``after_temperature`` (the same rule on temperature-scaled
    probabilities, fewer metrics). Every row of a (run, evaluation set) carries the rejection's
    ``flags`` (codes), ``flag_text`` and ``flagged``; a flagged or skipped rejection also fills
    ``rejection_note``, so no degenerate "after" number travels without its reason.
    """
    rej_f, met_f, run_f = run_dir / "rejection.json", run_dir / "metrics.json", run_dir / "run.json"
    if not (rej_f.is_file() and run_f.is_file()):
        return []
    run, rej = read_json(run_f), read_json(rej_f)
    met = read_json(met_f) if met_f.is_file() else {}
    base = _run_columns(grid, rid, run_dir, run, rej)
    rows = []
    rej_sets, met_sets = rej.get("eval_sets") or {}, met.get("eval_sets") or {}
    for es in list(dict.fromkeys(list(rej_sets) + list(met_sets))):
        block = rej_sets.get(es) or {}
        mblock = met_sets.get(es) or {}
        codes, text = _flags(block)
        note = text
        if block.get("skipped") or not block:
            # no threshold (e.g. a weak model whose validation entropies all exceed the candidates):
            # the metrics before rejection still come from metrics.json; "after" stays undefined
            if not isinstance(mblock, dict) or not mblock.get("test") or mblock.get("skipped"):
                continue
            note = f"rejection skipped: {block.get('skipped', 'no rejection.json entry')}"
            codes = codes or "skipped"
            block = {**block, "before": mblock["test"], "after": {}}
        common = dict(base, eval_set=es, eval_name=get(es).name, rejection_note=note, flags=codes,
                      flag_text=text or note, flagged=bool(codes),
                      val_source=block.get("val_source", ""), test_source=block.get("test_source", ""))
        rows += [_phase_row(common, phase, block, mblock) for phase in ("before", "after")]
        rows += [_method_row(common, name, m) for name, m in (block.get("methods") or {}).items()
                 if name != "curves"]
        other = "temperature" if rej.get("primary", "raw") == "raw" else "raw"
        v = (block.get("variants") or {}).get(other)
        if v:
            rows.append(_variant_row(common, other, v, block))
    return rows


def _run_columns(grid: Grid, rid: str, run_dir: Path, run: dict, rej: dict) -> dict:
    """The columns every row of a run shares: what was trained how, and the rejection rule."""
    datasets = run.get("datasets") or parse_combo(run["train"])
    params = read_yaml(run_dir / "params.yaml") if (run_dir / "params.yaml").is_file() else {}
    leak = params.get("leakage", "drop") if isinstance(params, dict) else "drop"
    probe = run.get("probe") or {}
    return {"grid": grid.name, "run_id": rid, "model": run["model"], "train": combo_label(datasets),
            "train_datasets": "+".join(datasets), "n_datasets": len(datasets),
            "synthetic": bool(run.get("synthetic", False)), "freeze": run.get("trainable", {}).get("freeze", ""),
            "best_epoch": run.get("best_epoch"), "leakage": leak,
            "twin_of": rid[: -len(KEEP_SUFFIX)] if rid.endswith(KEEP_SUFFIX) else "",
            "solver": probe.get("solver", "sgd"), "probe_C": _num(probe.get("C")),
            "probe_C_at_edge": bool(probe.get("at_edge", False)),
            "rejection_mode": rej.get("mode", ""), "rejection_primary": rej.get("primary", "raw"),
            "rejection_method": rej.get("method", "entropy")}


def _phase_row(common: dict, phase: str, block: dict, mblock) -> dict:
    """The ``before`` or ``after`` row of an evaluation set: metrics with CIs, counts, referral."""
    b = block.get(phase) or {}
    row = dict(common, phase=phase)
    for m in METRICS:
        row[m] = _num(b.get(m))
        ci = (b.get("ci") or {}).get(m) or {}
        row[f"{m}_low"], row[f"{m}_high"] = _num(ci.get("low")), _num(ci.get("high"))
    for c in COUNTS:
        row[c] = _num(b.get(c))
    row["threshold"] = _num(block.get("threshold"))
    row["fraction"] = _num(block.get("fraction"))
    row["coverage"] = 1.0 if phase == "before" else _num(block.get("coverage", float("nan")))
    row["test_coverage"] = _num(block.get("coverage", float("nan")))
    row["n_retained"] = row["n"]
    ref = _referral_before(b) if phase == "before" else (block.get("referral") or {})
    for k in REFERRAL:
        row[k] = _num(ref.get(k))
    for k in ("fp_prevented", "fn_prevented", "fn_reduction_pct", "fp_reduction_pct",
              "misdiagnoses_prevented", "min_coverage"):
        row[k] = _num(block.get(k))
    for k in ("aurc", "eaurc"):
        v = block.get(k)
        row[k] = _num(v.get("estimate") if isinstance(v, dict) else v)
        if isinstance(v, dict):
            row[f"{k}_low"], row[f"{k}_high"] = _num(v.get("low")), _num(v.get("high"))
    row["val_coverage"] = _num((block.get("val_search") or {}).get("coverage", block.get("val_coverage")))
    temp = (mblock.get("temperature") or {}) if isinstance(mblock, dict) else {}
    row["temperature"] = _num(temp.get("T") if isinstance(temp, dict) else temp)
    return row


def _method_row(common: dict, name: str, m: dict) -> dict:
    """The ``method_<name>`` row: one rejection rule's promise, coverage and referrals."""
    row = dict(common, phase=f"method_{name}", rejection_method=name, flags="", flag_text="",
               flagged=False, rejection_note="")
    for k in METHOD_STATS:
        row[k] = _num(m.get(k))
        ci = (m.get("ci") or {}).get(k) or {}
        row[f"{k}_low"], row[f"{k}_high"] = _num(ci.get("low")), _num(ci.get("high"))
    row["test_coverage"] = row["coverage"]
    row["n"], row["n_retained"] = _num(m.get("n")), _num(m.get("n_retained"))
    for k in ("n_melanoma", "melanoma_missed", "melanoma_referred", "benign_referred", "n_benign"):
        row[k] = _num(m.get(k))
    row["promise_kept"] = {True: "yes", False: "no"}.get(m.get("kept"), "")
    row["exchangeable"] = bool(m.get("exchangeable", True))
    if name == "conformal":
        row["conformal_alpha"] = _num(m.get("alpha"))
        for c in ("melanoma", "benign"):
            cc = (m.get("class_coverage") or {}).get(c) or {}
            row[f"class_coverage_{c}"] = _num(cc.get("observed"))
            row[f"class_coverage_{c}_slack"] = _num(cc.get("slack"))
    if name == "sgr":
        row["risk_target"], row["risk_bound"] = _num(m.get("target")), _num(m.get("bound"))
        row["threshold"], row["sgr_met"] = _num(m.get("threshold")), bool(m.get("met"))
        row["test_risk"] = _num(m.get("test_risk"))
    if name == "entropy":
        row["threshold"] = _num(m.get("threshold"))
    return row


def _variant_row(common: dict, other: str, v: dict, block: dict) -> dict:
    """The ``after_<other>`` row: the primary rule on the other probabilities (raw or temperature)."""
    vcodes, vtext = _flags(v)
    row = dict(common, phase=f"after_{other}", flags=vcodes or ("skipped" if "skipped" in v else ""),
               flag_text=vtext or v.get("skipped", ""), flagged=bool(vcodes) or "skipped" in v,
               rejection_note=vtext or v.get("skipped", ""))
    after = v.get("after") or {}
    for m in VARIANT_METRICS:
        row[m] = _num(after.get(m))
    row["threshold"], row["fraction"] = _num(v.get("threshold")), _num(v.get("fraction"))
    row["coverage"] = row["test_coverage"] = _num(v.get("coverage"))
    row["val_coverage"] = _num(v.get("val_coverage"))
    row["n"], row["n_retained"] = _num(v.get("n_retained")), _num(v.get("n_retained"))
    for k in REFERRAL:
        row[k] = _num((v.get("referral") or {}).get(k))
    row["temperature"] = _num(((block.get("temperature") or {}).get("T")))
    return row


def submission(grid: Grid, rid: str, run_dir: Path) -> pd.DataFrame | None:
    """Write ``submission.csv`` (``image_name,target``) for the SIIM-ISIC test split, if scored."""
    if not grid.submission:
        return None
    pf = run_dir / "predictions.parquet"
    if not pf.is_file():
        return None
    pred = pd.read_parquet(pf)
    sub = pred[(pred["eval_set"] == grid.submission) & (pred["split"] == "test")]
    if sub.empty:
        return None
    out = pd.DataFrame({"image_name": sub["image_id"].values, "target": sub["p_melanoma"].values})
    out = out.sort_values("image_name").reset_index(drop=True)
    write_text(run_dir / "submission.csv", out.to_csv(index=False))
    return out


def _held_out_labels(grid: Grid) -> pd.DataFrame | None:
    f = grid.data_root / "isic2020" / "ISIC_2020_Test_GroundTruth_SYNTHETIC.csv"
    return pd.read_csv(f) if f.is_file() else None


def leaderboard_rows(grid: Grid, subs: dict[str, pd.DataFrame], base_rows: dict[str, dict]) -> list[dict]:
    from melanoma.evaluate.metrics import auc

    rows = []
    entered = {}
    if LEADERBOARD_YAML.is_file():
        y = read_yaml(LEADERBOARD_YAML) or {}
        entered = (y.get("grids", {}) or {}).get(grid.name, {}) or {}
    truth = _held_out_labels(grid) if grid.is_synthetic else None
    for rid, sub in subs.items():
        base = base_rows.get(rid)
        if base is None:
            continue
        row = {k: base[k] for k in ("grid", "run_id", "model", "train", "train_datasets", "n_datasets",
                                    "synthetic", "freeze", "best_epoch")}
        row.update(eval_set=grid.submission, eval_name=get(grid.submission).name, phase="leaderboard")
        if rid in entered:
            e = entered[rid]
            row["auc"] = _num(e.get("private") if isinstance(e, dict) else e)
            row["auc_public"] = _num(e.get("public")) if isinstance(e, dict) else float("nan")
            row["score_source"] = "Kaggle leaderboard, entered by the user in params/leaderboard.yaml"
        elif truth is not None:
            m = sub.merge(truth, on="image_name", how="inner", suffixes=("", "_true"))
            row["auc"] = auc(m["target_true"].to_numpy(int), m["target"].to_numpy(float))
            row["n"] = len(m)
            row["n_melanoma"] = int(m["target_true"].sum())
            row["score_source"] = "held-out labels of the SYNTHETIC ISIC 2020 replica"
        else:
            row["auc"] = float("nan")
            row["score_source"] = "not scored: submit submission.csv to Kaggle, enter the score in params/leaderboard.yaml"
        rows.append(row)
    return rows


def aggregate(grid: Grid) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build and write ``summary.parquet`` and ``runs.parquet`` for ``grid``."""
    from melanoma.pipeline.grid import expand

    rows, runs, subs, base_rows = [], [], {}, {}
    for rid, p in expand(grid).items():
        rd = Path(p.out)
        st = {s: _status(rd, s) for s in ("train", "calibrate", "reject")}
        failed = next((s for s in ("train", "calibrate", "reject") if st[s].get("status") == "failed"), "")
        runs.append({"run_id": rid, "model": p.model, "train": combo_label(parse_combo(p.train)),
                     **{f"status_{s}": st[s].get("status", "") for s in st},
                     "failed_step": failed,
                     "error": st[failed].get("error", "") if failed else "",
                     "notebook": st[failed].get("notebook", "") if failed else
                     st["train"].get("notebook") or str(rd / "02_train.ipynb"),  # a grouped job's: shared
                     "run_dir": str(rd),
                     "train_seconds": _num(st["train"].get("seconds"))})  # a grouped job: the whole job's
        r = run_rows(grid, rid, rd)
        rows += r
        if r:
            base_rows[rid] = r[0]
        s = submission(grid, rid, rd)
        if s is not None:
            subs[rid] = s
    rows += leaderboard_rows(grid, subs, base_rows)
    summary = pd.DataFrame(rows)
    runs_df = pd.DataFrame(runs)
    write_parquet(grid.results / "summary.parquet", summary)
    write_parquet(grid.results / "runs.parquet", runs_df)
    return summary, runs_df


def report(grid_file: str | Path) -> pd.DataFrame:
    grid = load_grid(grid_file)
    summary, runs = aggregate(grid)
    ok = int((runs["status_reject"] == "ok").sum()) if len(runs) else 0
    print(f"{grid.name}: {len(runs)} runs, {ok} complete, "
          f"{int((runs['failed_step'] != '').sum()) if len(runs) else 0} failed; "
          f"{len(summary)} summary rows → {grid.results / 'summary.parquet'}")
    return summary


def fmt(x: float, pct: bool = True, digits: int = 1) -> str:
    """A metric for a table: ``83.8%`` (or ``0.0832`` with ``pct=False``); None or a NaN of any
    float type → ``–``."""
    if pd.isna(x):
        return "–"
    return f"{100 * x:.{digits}f}%" if pct else f"{x:.4f}"


def fmt_ci(x: float, lo: float, hi: float, pct: bool = True) -> str:
    s = fmt(x, pct)
    if s == "–" or any(pd.isna(v) for v in (lo, hi)):
        return s
    return f"{s} [{fmt(lo, pct)}, {fmt(hi, pct)}]"



def metric_matrix(summary: pd.DataFrame, metric: str, phase: str = "before") -> dict[str, pd.DataFrame]:
    """``metric`` of every run as a models × training-combinations table, one per evaluation set
    (keyed by the set's paper name); leakage twins (``leakage: keep``) are left out, a missing run
    is NaN. Columns run from the fewest to the most datasets."""
    s = summary[summary["phase"] == phase]
    if "twin_of" in s:
        s = s[s["twin_of"].fillna("") == ""]
    out = {}
    for es in s["eval_set"].drop_duplicates():
        t = s[s["eval_set"] == es].pivot_table(index="model", columns="train", values=metric, aggfunc="first")
        cols = sorted(t.columns, key=lambda c: (len(str(c).replace(",", "").replace("–", "")), str(c)))
        out[get(es).name] = t[cols].astype(float)
    return out

"""Aggregate a grid's runs into ``results/<grid>/summary.parquet`` and the SIIM-ISIC submissions.

``summary.parquet`` has one row per run × evaluation set × phase (``before`` / ``after``
rejection): every metric, its bootstrap CI (``<metric>_low`` / ``<metric>_high``), the threshold,
coverage and misdiagnosis counts. ``runs.parquet`` has one row per run with the status of each step
and the paths of its executed notebooks (failed runs included, so the book can list them).

SIIM-ISIC 2020 (Table 2): every run that scored ISIC 2020's unlabelled test split gets a
``submission.csv`` (``image_name,target``). Its AUC comes from ``params/leaderboard.yaml`` — scores
a user got back from Kaggle and typed in, marked as such — or, for the synthetic replica, from the
replica's held-out labels (``ISIC_2020_Test_GroundTruth_SYNTHETIC.csv``). Those rows have
``eval_set = "isic2020"``, ``phase = "leaderboard"``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .datasets import combo_label, get, parse_combo
from .grid import REPO, Grid, load_grid
from .io import read_json, read_yaml, write_parquet, write_text

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


def run_rows(grid: Grid, rid: str, run_dir: Path) -> list[dict]:
    """Summary rows of one finished run (empty if its reject step did not finish)."""
    rej_f, met_f, run_f = run_dir / "rejection.json", run_dir / "metrics.json", run_dir / "run.json"
    if not (rej_f.is_file() and run_f.is_file()):
        return []
    run, rej = read_json(run_f), read_json(rej_f)
    met = read_json(met_f) if met_f.is_file() else {}
    datasets = run.get("datasets") or parse_combo(run["train"])
    base = {"grid": grid.name, "run_id": rid, "model": run["model"], "train": combo_label(datasets),
            "train_datasets": "+".join(datasets), "n_datasets": len(datasets),
            "synthetic": bool(run.get("synthetic", False)), "freeze": run.get("trainable", {}).get("freeze", ""),
            "best_epoch": run.get("best_epoch")}
    rows = []
    rej_sets, met_sets = rej.get("eval_sets") or {}, met.get("eval_sets") or {}
    for es in list(dict.fromkeys(list(rej_sets) + list(met_sets))):
        block = rej_sets.get(es) or {}
        mblock = met_sets.get(es) or {}
        note = ""
        if block.get("skipped") or not block:
            # no threshold (e.g. a weak model whose validation entropies all exceed the grid):
            # the metrics before rejection still come from metrics.json; "after" stays undefined
            if not isinstance(mblock, dict) or not mblock.get("test") or mblock.get("skipped"):
                continue
            note = f"rejection skipped: {block.get('skipped', 'no rejection.json entry')}"
            block = {"before": mblock["test"], "after": {}}
        for phase in ("before", "after"):
            b = block.get(phase) or {}
            row = dict(base, eval_set=es, eval_name=get(es).name, phase=phase, rejection_note=note)
            for m in METRICS:
                row[m] = _num(b.get(m))
                ci = (b.get("ci") or {}).get(m) or {}
                row[f"{m}_low"], row[f"{m}_high"] = _num(ci.get("low")), _num(ci.get("high"))
            for c in COUNTS:
                row[c] = _num(b.get(c))
            row["threshold"] = _num(block.get("threshold"))
            row["coverage"] = 1.0 if phase == "before" else _num(block.get("coverage", float("nan")))
            row["n_retained"] = row["n"]
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
            rows.append(row)
    return rows


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
    from .metrics import auc

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
    from .grid import expand

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
    """A metric for a table: ``83.8%`` (or ``0.0832`` with ``pct=False``); NaN → ``–``."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{100 * x:.{digits}f}%" if pct else f"{x:.4f}"


def fmt_ci(x: float, lo: float, hi: float, pct: bool = True) -> str:
    s = fmt(x, pct)
    if s == "–" or any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (lo, hi)):
        return s
    return f"{s} [{fmt(lo, pct)}, {fmt(hi, pct)}]"


"""The book's tables and the text around them: Tables 1–3, leakage, runs, rejection and
guarantee tables, the banner, provenance and commands, and the paper's own tables.

Each is made from ``summary.parquet``, ``runs.parquet`` and the run folders (``metrics.json``,
``rejection.json``) and names the runs it came from. The book's notebook pages show them through
:mod:`melanoma.report.pages`; :mod:`melanoma.report.book` writes some into the book's ``_generated/``
pieces. Figures (and their captions) are :mod:`melanoma.report.figures`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.data.registry import get
from melanoma.io import read_json
from melanoma.pipeline.grid import REPO, Grid
from melanoma.report.summary import fmt, fmt_ci

TABLE1_METRICS = [("precision", "Precision"), ("specificity", "Specificity"), ("sensitivity", "Sensitivity"),
                  ("f1", "F-1"), ("accuracy", "Accuracy"), ("auc", "AUC-ROC")]


def md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(str(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(str(r[c]).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(lines) + "\n"


def shown_path(p) -> str:
    """A path as the book shows it: relative to the repository when it is near it, never a home or
    machine-specific absolute path otherwise (just its last two parts)."""
    p = Path(p).resolve()
    rel = os.path.relpath(p, REPO)
    return rel if not rel.startswith("../../") else str(Path("…", *p.parts[-2:]))


# ----------------------------------------------------------------------------- pieces

def banner(grid: Grid) -> str:
    if grid.is_synthetic:
        return ("```{warning}\n**SYNTHETIC DATA.** Every number and image in this build comes from "
                "procedurally generated replicas of the datasets (`melanoma synth`), not from patients. "
                "It demonstrates the pipeline end to end; it says nothing about real melanoma detection. "
                f"Grid: `{grid.path.name}`.\n```\n")
    return (f"```{{note}}\nBuilt from the real releases under `{shown_path(grid.data)}` with grid "
            f"`{grid.path.name}`.\n```\n")


def provenance(grid: Grid, summary: pd.DataFrame, runs: pd.DataFrame) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=REPO).stdout.strip() or "unknown"
    n_ok = int((runs["status_reject"] == "ok").sum()) if len(runs) else 0
    return (f"Grid **{grid.name}** (`{shown_path(grid.path)}`): "
            f"{len(runs)} runs ({n_ok} complete), {len(grid.models)} model(s) × "
            f"{len(grid.combinations)} combination(s), evaluation sets "
            f"{', '.join(get(e).name for e in grid.eval_sets)}; code at commit `{commit}`. "
            f"Results: `{shown_path(grid.results)}/summary.parquet` "
            f"({len(summary)} rows).\n\n"
            "Software: " + ", ".join(f"{k} {v}" for k, v in package_versions().items()) + ".\n")


#: The packages whose versions the book's provenance lists (with Python's).
VERSIONED = ("melanoma", "torch", "torchvision", "numpy", "pandas", "scikit-learn", "scipy", "crepes",
             "matplotlib", "seaborn", "onnx", "onnxruntime", "papermill", "snakemake", "jupyter-book")


def package_versions(names=VERSIONED) -> dict[str, str]:
    """``{"Python": "3.11.2", "torch": "2.5.1", ...}`` of the running environment (installed
    distributions only, read with importlib.metadata)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"Python": platform.python_version()}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def commands(grid: Grid) -> str:
    gf = shown_path(grid.path)
    return ("| output | command |\n|---|---|\n"
            f"| this book, from nothing | `make demo` (grid `params/demo.yaml`) |\n"
            f"| every run, the summary and the book | `snakemake -s workflow/Snakefile --config grid={gf} --cores all` |\n"
            "| the paper grid on real data | `DATA_ROOT=/data snakemake -s workflow/Snakefile --config grid=params/paper.yaml --cores all` |\n"
            "| one run | `melanoma train --work WORK --model M --train A-D,I,J --eval B,C,F,J --out RUN` |\n"
            "| its metrics / rejection | `melanoma calibrate RUN` / `melanoma reject RUN` |\n"
            f"| `summary.parquet` | `melanoma report --grid-file {gf}` |\n")


def datasets_table(grid: Grid) -> str:
    """Images per split of every ingested release (from ``WORK/<name>/report.json``)."""
    from melanoma.data.ingest import counts_table

    reports = {p.parent.name: read_json(p) for p in sorted(grid.work.glob("*/report.json"))}
    t = counts_table(reports).drop(columns=["synthetic"]) if reports else pd.DataFrame()
    return md_table(t) if len(t) else "_No dataset ingested._\n"


def leakage_table(grid: Grid) -> str:
    """Evaluation images with a copy in the grid's largest training pool, by kind of match."""
    from melanoma.data.combine import leakage_report

    biggest = max(grid.combinations, key=lambda c: len(c.split("+")))
    t = leakage_report(grid.work, biggest, grid.eval_sets)
    cols = ["eval_set", "eval_split", "n_eval", "n_eval_leaked", "n_train_dups", "by_id", "by_pixels",
            "by_near", "n_train", "n_train_after"]
    t = t[cols].rename(columns={"eval_set": "evaluation set", "eval_split": "split", "n_eval": "images",
                                "n_eval_leaked": "with a copy in training", "n_train_dups": "training copies",
                                "by_id": "same ISIC id", "by_pixels": "same pixels", "by_near": "near copy",
                                "n_train": "training pool before", "n_train_after": "after dedup"})
    return f"Training pool: **{get_label(biggest)}**.\n\n" + md_table(t)


def get_label(combo: str) -> str:
    from melanoma.data.registry import combo_label

    return combo_label(combo.split("+"))


def _both(a: float, b: float, pct: bool = True) -> str:
    return f"{fmt(a, pct)} / {fmt(b, pct)}"


def _ci(r: pd.Series, m: str, pct: bool = True) -> str:
    """``[low, high]`` of metric ``m`` in a summary row (its 95 % bootstrap CI), or ``–``."""
    lo, hi = r.get(f"{m}_low", np.nan), r.get(f"{m}_high", np.nan)
    if pd.isna(lo) or pd.isna(hi):
        return "–"
    return f"[{fmt(lo, pct)}, {fmt(hi, pct)}]"


def _both_ci(b: pd.Series, a: pd.Series, m: str) -> str:
    """``before / after`` with both 95 % bootstrap CIs on a second, smaller line."""
    return f"{_both(b[m], a[m])}<br><small>{_ci(b, m)} / {_ci(a, m)}</small>"


def _pair(s: pd.DataFrame, rid: str, es: str) -> tuple[pd.Series, pd.Series]:
    sel = s[(s["run_id"] == rid) & (s["eval_set"] == es)]
    return sel[sel["phase"] == "before"].iloc[0], sel[sel["phase"] == "after"].iloc[0]


def _cov(a: pd.Series) -> str:
    """Validation / test coverage of an after-rejection row, e.g. ``83% / 79%``."""
    if pd.isna(a.get("test_coverage", np.nan)):
        return "–"
    return f"{fmt(a.get('val_coverage', np.nan), digits=0)} / {fmt(a['test_coverage'], digits=0)}"


def _thr(a: pd.Series) -> str:
    if pd.isna(a["threshold"]):
        return "–"
    r = a.get("fraction", np.nan)
    return f"{a['threshold']:.3f}" + ("" if pd.isna(r) else f" (r = {r:.2f})")


def _flag_cell(a: pd.Series) -> str:
    return str(a.get("flag_text") or a.get("rejection_note") or "")


def ranked(summary: pd.DataFrame, es: str, top: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``before`` rows of ``es`` ranked by precision (then AUC): the ``top`` whose rejection is
    not flagged, and every flagged one (never ranked). Leakage twins (``leakage: keep``) are left
    out: they are the leakage experiment's control, not results."""
    s = summary[(summary["eval_set"] == es) & (summary["phase"] == "before")]
    if "twin_of" in s:  # a leakage twin (trained with leakage: keep) is a control, never a contender
        s = s[s["twin_of"].fillna("") == ""]
    flagged = s["flagged"].fillna(False).astype(bool) if "flagged" in s else pd.Series(False, index=s.index)
    order = ["precision", "auc"]
    ok = s[~flagged].sort_values(order, ascending=False, na_position="last").head(top)
    bad = s[flagged].sort_values(order, ascending=False, na_position="last")
    return ok, bad


def table1(grid: Grid, summary: pd.DataFrame, top: int = 3) -> tuple[pd.DataFrame, list, pd.DataFrame]:
    """Per evaluation set, the ``top`` runs by precision before rejection (the paper's ranking) among
    runs whose rejection result is not flagged; flagged results are returned apart (listed, never
    ranked). Every after-rejection number sits beside its validation / test coverage."""
    s = summary[summary["phase"].isin(["before", "after"])]
    out, chosen, flagged_rows = [], [], []
    for es in grid.eval_sets:
        ok, bad = ranked(s, es, top)
        for rows, sink in ((ok, out), (bad, flagged_rows)):
            for _, r in rows.iterrows():
                _, a = _pair(s, r["run_id"], es)
                row = {"Test set": get(es).name, "Network": r["model"], "Train sets": f"[{r['train']}]"}
                for m, label in TABLE1_METRICS:
                    row[f"{label} (before / after)"] = _both_ci(r, a, m)
                row["Threshold (bits)"] = _thr(a)
                row["Coverage val / test"] = _cov(a)
                if sink is flagged_rows:
                    row["Flag"] = _flag_cell(a)
                row["Run"] = f"`{r['run_id']}`"
                sink.append(row)
                if sink is out:
                    chosen.append((es, r["run_id"]))
    return pd.DataFrame(out), chosen, pd.DataFrame(flagged_rows)


def table3(summary: pd.DataFrame, chosen) -> pd.DataFrame:
    rows = []
    for es, rid in chosen:
        b, a = _pair(summary, rid, es)
        rows.append({"Test set": get(es).name, "Network": b["model"], "Train sets": f"[{b['train']}]",
                     "Brier before": fmt_ci(b["brier"], b["brier_low"], b["brier_high"], pct=False),
                     "ECE before": fmt_ci(b["ece"], b["ece_low"], b["ece_high"], pct=False),
                     "Brier after": fmt_ci(a["brier"], a["brier_low"], a["brier_high"], pct=False),
                     "ECE after": fmt_ci(a["ece"], a["ece_low"], a["ece_high"], pct=False),
                     "Coverage val / test": _cov(a),
                     "Run": f"`{rid}`"})
    return pd.DataFrame(rows)


def table2(summary: pd.DataFrame) -> str:
    lb = summary[summary["phase"] == "leaderboard"].sort_values("auc", ascending=False)
    if lb.empty:
        return "_No run scored the SIIM-ISIC 2020 test split._\n"
    t = pd.DataFrame({"Network": lb["model"], "Train sets": "[" + lb["train"] + "]",
                      "AUC-ROC": [fmt(v) for v in lb["auc"]], "Run": "`" + lb["run_id"] + "`"})
    sources = sorted(set(lb["score_source"]))
    return md_table(t) + "\nScore source: " + "; ".join(sources) + ".\n" + table2_notes(lb)


def table2_notes(lb: pd.DataFrame) -> str:
    """Words for what the leaderboard table cannot say alone, computed from its rows: how many images
    and melanomas the AUC is measured on, and every AUC below 50 % (worse than chance)."""
    notes = []
    if "n" in lb and lb["n"].notna().any():
        n, k = int(lb["n"].max()), int(lb["n_melanoma"].max())
        notes.append(f"Each AUC is measured on {n} held-out images, {k} of them melanomas"
                     + (" (SYNTHETIC labels)" if lb["synthetic"].fillna(False).all() else "") + ".")
    bad = lb[lb["auc"] < 0.5]
    for _, r in bad.iterrows():
        notes.append(f"**`{r['run_id']}`: AUC {fmt(r['auc'])}, below 50 % — worse than guessing**: the model "
                     "ranks these melanomas *below* the benign lesions. "
                     + ("This is a degenerate result of a tiny model trained on SYNTHETIC images "
                        "(it says nothing about the architecture on real data); read it as a failed run, "
                        "not as a ranking." if bool(r.get("synthetic")) else
                        "Check this run's training history before reading it as a ranking."))
    return ("\n" + "\n\n".join(notes) + "\n") if notes else ""


def read_rejection(grid: Grid, rid: str) -> dict:
    f = grid.results / "runs" / rid / "rejection.json"
    return read_json(f) if f.is_file() else {}


def rejection_blocks(rej: dict) -> dict[str, dict]:
    return {get(es).name: blk for es, blk in (rej.get("eval_sets") or {}).items()
            if isinstance(blk, dict) and not blk.get("skipped")}


def _low_entropy_share(rej: dict, bits: float = 0.2) -> str:
    """", e.g. in this run 6 % of the ISIC2017 validation predictions are at most 0.2 bits" from the
    run's accuracy–rejection curve (validation coverage at each entropy threshold)."""
    parts = []
    for es, b in (rej.get("eval_sets") or {}).items():
        c = ((b.get("curves") or {}) if isinstance(b, dict) else {}).get("accuracy_rejection") or {}
        t, cov = np.asarray(c.get("threshold", []), float), np.asarray(c.get("coverage", []), float)
        if t.size and np.any(np.isclose(t, bits)):
            parts.append(f"{get(es).name} {fmt(float(cov[np.isclose(t, bits)][0]), digits=0)}")
    if not parts:
        return ""
    return (f": in this run the share of validation predictions with entropy at most {bits:g} bits — all an "
            f"absolute threshold of {bits:g} could keep — is " + ", ".join(parts))


def rejection_rule(grid: Grid, rej: dict) -> str:
    """The rule the grid ran, in words, from the run's own rejection.json (not from the grid file)."""
    mode = rej.get("mode", "")
    g = np.asarray(rej.get("thresholds") or [], dtype=float)
    span = f"{g.min():g} … {g.max():g}" if g.size else "–"
    minc = rej.get("min_coverage", float("nan"))
    primary = "temperature-scaled" if rej.get("primary") == "temperature" else "raw (softmax)"
    if mode == "relative":
        rule = (f"**Rule: relative (the seed code's).** For each candidate r in {span} the threshold is the "
                "entropy that rejects the fraction r of the evaluation set's **validation** split (its most "
                "uncertain predictions); r is chosen by minimising ½(ECE + Brier) of the retained validation "
                "predictions; the chosen **entropy value** is then applied unchanged to the test split, whose "
                "coverage is measured, not assumed.")
    elif mode == "absolute":
        rule = (f"**Rule: absolute entropy (the paper's text).** Candidates are entropies {span} bits; among "
                f"those keeping at least {minc:g} of validation, the one minimising ½(ECE + Brier) of the "
                "retained validation predictions is applied unchanged to test (when none keeps that much, "
                "the floor is relaxed and the result flagged).")
    else:
        rule = (f"**Rule: coverage.** Candidates are fractions {span}; the chosen fraction of the most "
                "uncertain predictions is rejected in each split, test included.")
    return (rule + f" Probabilities: {primary}; the other variant is reported beside it. Entropy in bits "
            "(0 to 1 for two classes). A result is **flagged** — and never ranked in the tables — when the "
            f"validation coverage floor had to be relaxed, when it keeps less than "
            f"{rej.get('low_test_coverage', 0.7):g} of the test split, or when the retained test images lack "
            "one class.\n\n"
            "*Paper vs seed code.* The paper's text describes an entropy threshold between 0 and 0.2, chosen on "
            "validation by the mean of ECE and Brier, and speaks of \"rejecting up to 20 %\" of predictions. "
            "Its code (`shkimmie-umb/melanoma_detection`) uses *relative* thresholds: 0.05–0.20 are fractions "
            "of the samples rejected, not bits. Read as bits, the rule needs a very confident model"
            + _low_entropy_share(rej) + ". The default here follows the seed code (`reject.mode: "
            "relative`); `absolute` remains an option and is flagged when it degenerates. Two bugs of the "
            "seed code are not copied (Brier on the rejected subset; a constant ECE in the search).\n")


def featured_run(grid: Grid, chosen) -> str | None:
    """The run of Figs. 3 and 5 and the risk–coverage curves: the grid names it, else the top run
    (by precision) of the first evaluation set."""
    return grid.figures.get("rejection") or (chosen[0][1] if chosen else None)


def promise_summary(summary: pd.DataFrame) -> str:
    """Across every run × evaluation set of the grid: how often each method's promise held on test."""
    if "phase" not in summary:
        return ""
    m = summary[summary["phase"].astype(str).str.startswith("method_")]
    if m.empty:
        return ""
    rows = []
    for method, g in m.groupby("rejection_method", sort=False):
        exch = g[g["exchangeable"].fillna(True).astype(bool)] if "exchangeable" in g else g
        kept = (exch["promise_kept"] == "yes").sum()
        broken = (exch["promise_kept"] == "no").sum()
        rows.append({"Method": method, "Results (run × test set)": len(g),
                     "With a guarantee (own calibration split)": len(exch) if method != "entropy" else 0,
                     "Promise kept": int(kept) if method != "entropy" else "no promise",
                     "Broken": int(broken) if method != "entropy" else "–",
                     "Not applicable (SGR target not met)": int((g.get("sgr_met", pd.Series(True, index=g.index))
                                                                 .fillna(True) == False).sum())  # noqa: E712
                     if method == "sgr" else "–",
                     "Median coverage": fmt(float(g["coverage"].median())),
                     "Median melanoma miss rate": fmt(float(g["miss_rate"].median()))})
    return ("\n**Across the grid** (every run × test set; a conformal or SGR promise counts only where the "
            "calibration split is the test set's own):\n\n" + md_table(pd.DataFrame(rows)))


def referral_table(blocks: dict[str, dict]) -> str:
    rows = []
    for n, b in blocks.items():
        r = b["referral"]
        rows.append({"Test set": n, "Coverage val / test": f"{fmt(b['val_coverage'], digits=0)} / {fmt(b['coverage'], digits=0)}",
                     "Melanomas": r["n_melanoma"], "missed before": r["melanoma_missed_before"],
                     "missed after": r["melanoma_missed"], "referred": r["melanoma_referred"],
                     "caught": r["melanoma_caught"],
                     "Sensitivity before / retained": _both(b["before"]["sensitivity"], r["sensitivity_retained"]),
                     "Specificity before / retained": _both(b["before"]["specificity"], r["specificity_retained"]),
                     "Benign referred": f"{r['benign_referred']} of {r['n_benign']}",
                     "Flag": "; ".join(f["text"] for f in b.get("flags") or [])})
    return md_table(pd.DataFrame(rows)) if rows else ""


def variants_table(summary: pd.DataFrame, rid: str | None) -> str:
    """The same rule on raw and on temperature-scaled probabilities, side by side (one run)."""
    if not rid or "phase" not in summary:
        return "_No rejection results._\n"
    s = summary[summary["run_id"] == rid]
    other = [p for p in s["phase"].unique() if str(p).startswith("after_")]
    if s.empty or not other:
        return "_No temperature-scaled variant (no logits, or no run)._\n"
    rows = []
    for es in s["eval_set"].unique():
        for phase in ["after", *other]:
            a = s[(s["eval_set"] == es) & (s["phase"] == phase)]
            if a.empty:
                continue
            a = a.iloc[0]
            kind = {"after": "raw" if a.get("rejection_primary", "raw") == "raw" else "temperature-scaled"}.get(
                phase, "temperature-scaled" if phase == "after_temperature" else "raw")
            rows.append({"Test set": get(es).name, "Probabilities": kind,
                         "T": "–" if pd.isna(a.get("temperature", np.nan)) else f"{a['temperature']:.2f}",
                         "Threshold (bits)": _thr(a), "Coverage val / test": _cov(a),
                         "Accuracy after": fmt(a["accuracy"]), "Sensitivity retained": fmt(a["sensitivity_retained"]),
                         "Melanomas missed / referred": f"{a['melanoma_missed']:.0f} / {a['melanoma_referred']:.0f}"
                         if pd.notna(a["melanoma_missed"]) else "–",
                         "Flag": _flag_cell(a)})
    return (f"Run `{rid}`. Temperature scaling (T fitted by NLL on the same validation split) does not change the "
            "ranking by entropy, so the relative rule can only move through the choice of r; in bits, a "
            "threshold on calibrated probabilities means the same across models.\n\n" + md_table(pd.DataFrame(rows)))


def eval_sources_table(rej: dict) -> str:
    rows = [{"Evaluation set": get(es).name, "Validation (threshold, temperature)": b.get("val_source", ""),
             "Test (scored)": b.get("test_source", "") if not b.get("skipped") else f"skipped: {b['skipped']}"}
            for es, b in (rej.get("eval_sets") or {}).items()]
    return md_table(pd.DataFrame(rows)) if rows else "_No rejection results._\n"


def leakage_experiment(grid: Grid, summary: pd.DataFrame) -> str:
    """Runs trained twice — duplicates of evaluation images dropped (default) vs kept (the seed
    code's practice) — compared on every evaluation set whose test images have copies in the pool."""
    if "twin_of" not in summary or not (summary["twin_of"].fillna("") != "").any():
        return ("_This grid trains no leakage twin (grid key `leakage_keep`), so the effect of leakage is "
                "not measured here._\n")
    rows = []
    b = summary[summary["phase"] == "before"]
    for twin in sorted(b.loc[b["twin_of"].fillna("") != "", "run_id"].unique()):
        rid = twin[: -len("__keep")]
        lf = grid.results / "runs" / rid / "leakage.parquet"
        leak = pd.read_parquet(lf) if lf.is_file() else pd.DataFrame()
        for es in b.loc[b["run_id"] == rid, "eval_set"].unique():
            name = get(es).name
            lt = leak[(leak["eval_set"] == name) & (leak["eval_split"] == "test")] if len(leak) else leak
            n_leak = int(lt["n_eval_leaked"].sum()) if len(lt) else 0
            if n_leak == 0:
                continue
            d = b[(b["run_id"] == rid) & (b["eval_set"] == es)].iloc[0]
            k = b[(b["run_id"] == twin) & (b["eval_set"] == es)]
            if k.empty:
                continue
            k = k.iloc[0]
            rows.append({"Test set": name, "Network": d["model"], "Train sets": f"[{d['train']}]",
                         "Test images with a training copy": f"{n_leak} of {int(lt['n_eval'].sum())}",
                         "AUC, duplicates dropped": fmt_ci(d["auc"], d["auc_low"], d["auc_high"]),
                         "AUC, duplicates kept": fmt_ci(k["auc"], k["auc_low"], k["auc_high"]),
                         "Accuracy dropped / kept": _both(d["accuracy"], k["accuracy"]),
                         "Runs": f"`{rid}` / `{twin}`"})
    if not rows:
        return "_No evaluation set of the leakage twins has test images with copies in their training pool._\n"
    return ("Each run below was trained twice: with the default `leakage: drop` (training images that duplicate "
            "an evaluation image removed) and with `leakage: keep` (the seed code's practice). Only evaluation "
            "sets whose test images have copies in the training pool are listed; the difference is what "
            "leakage adds to the reported numbers.\n\n" + md_table(pd.DataFrame(rows)))


def aurc_table(summary: pd.DataFrame) -> str:
    if "aurc" not in summary:
        return "_No AURC results._\n"
    s = summary[summary["phase"] == "before"].sort_values(["eval_set", "aurc"])
    if s.empty:
        return "_No AURC results._\n"

    def col(name: str) -> pd.Series:  # CI columns are absent when no run had a bootstrap
        return s[name] if name in s else pd.Series(np.nan, index=s.index)

    t = pd.DataFrame({"Test set": [get(e).name for e in s["eval_set"]], "Network": s["model"],
                      "Train sets": "[" + s["train"] + "]",
                      "AURC": [fmt_ci(a, lo, hi, pct=False) for a, lo, hi in
                               zip(s["aurc"], col("aurc_low"), col("aurc_high"))],
                      "E-AURC": [fmt(v, pct=False) for v in col("eaurc")], "Run": "`" + s["run_id"] + "`"})
    return ("AURC (area under the risk–coverage curve, lower is better) and E-AURC (its excess over an "
            "oracle ordering), test splits, with 95 % bootstrap CIs.\n\n" + md_table(t))


def runs_table(runs: pd.DataFrame) -> str:
    if runs.empty:
        return "_No runs._\n"
    t = runs[["run_id", "model", "train", "status_train", "status_calibrate", "status_reject"]].copy()
    t["run_id"] = "`" + t["run_id"] + "`"
    out = md_table(t)
    failed = runs[runs["failed_step"] != ""]
    if len(failed):
        out += "\n**Failed runs** — the executed notebook shows the error:\n\n"
        for _, r in failed.iterrows():
            out += f"- `{r['run_id']}` failed at {r['failed_step']}: {r['error']} — `{shown_path(r['notebook'])}`\n"
    else:
        out += "\nNo run failed.\n"
    return out


def rejection_by_run(summary: pd.DataFrame) -> str:
    """Every run × evaluation set: threshold, coverage, accuracy before → after, flags."""
    if "phase" not in summary:
        return ""
    a = summary[summary["phase"] == "after"]
    if a.empty:
        return ""
    b = summary[summary["phase"] == "before"].set_index(["run_id", "eval_set"])
    rows = []
    for _, r in a.iterrows():
        before = b.loc[(r["run_id"], r["eval_set"])]
        rows.append({"Run": f"`{r['run_id']}`", "Test set": get(r["eval_set"]).name, "Threshold (bits)": _thr(r),
                     "Coverage val / test": _cov(r), "Accuracy before → after": f"{fmt(before['accuracy'])} → "
                     f"{fmt(r['accuracy'])}", "Flag": _flag_cell(r)})
    return "## Rejection per run\n\n" + md_table(pd.DataFrame(rows))


def paper_tables() -> dict[str, str]:
    """The paper's own Tables 1–3 (params/paper_results.yaml), for the paper grid's book."""
    from melanoma.io import read_yaml

    y = read_yaml(REPO / "params" / "paper_results.yaml")
    t1 = pd.DataFrame([{"Test set": r[0], "Network": r[1], "Train sets": f"[{r[2]}]",
                        **{f"{label} (before / after)": _both(*r[3 + i]) for i, (_, label) in enumerate(TABLE1_METRICS)},
                        "Threshold": r[9]} for r in y["table1"]])
    t2 = pd.DataFrame([{"Network": r[0], "Train sets": f"[{r[1]}]", "Private score (AUC-ROC)": fmt(r[2])}
                       for r in y["table2"]])
    t3 = pd.DataFrame([{"Test set": r[0], "Network": r[1], "Train sets": f"[{r[2]}]",
                        "Brier before": f"{r[3]:.4f}", "ECE before": f"{r[4]:.4f}",
                        "Brier after": f"{r[5]:.4f}", "ECE after": f"{r[6]:.4f}"} for r in y["table3"]])
    head = ("\n**Reported in the paper, on real data** — the paper's own numbers for comparing shapes, not "
            "results of this project (read from `params/paper_results.yaml`; models, datasets and sizes "
            "differ from this grid's):\n\n")
    return {"table1": head + md_table(t1), "table2": head + md_table(t2), "table3": head + md_table(t3)}

"""The book's figures: each function draws one with :mod:`melanoma.report.plots` and returns
``(Figure or None, caption in Markdown)``; the caption says, from the numbers, what the figure shows
and which run it came from.

The book's notebook pages show them (:mod:`melanoma.report.pages`); :func:`melanoma.report.book.figures`
writes them into ``_generated/`` for pages that include files.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from melanoma.data.registry import get
from melanoma.io import read_json
from melanoma.pipeline.grid import Grid
from melanoma.report.summary import fmt, fmt_ci
from melanoma.report.tables import md_table, promise_summary

def _syn(grid: Grid) -> str:
    return " (SYNTHETIC)" if grid.is_synthetic else ""


def _met(grid: Grid, rid: str) -> dict:
    f = grid.results / "runs" / rid / "metrics.json"
    return read_json(f) if f.is_file() else {}


def _flagged_names(blocks: dict[str, dict]) -> dict[str, str]:
    return {name: "; ".join(f["text"] for f in blk.get("flags") or []) for name, blk in blocks.items()
            if blk.get("flags")}


def _flag_sentence(flagged: dict[str, str]) -> str:
    if not flagged:
        return " No result of this run is flagged."
    return (" **Flagged** (read with care): " + "; ".join(f"{n}: {t}" for n, t in flagged.items()) + ".")


def samples(grid: Grid) -> tuple[object, str]:
    """Sample images per class of the SYNTHETIC replicas; never a real image (third-party medical
    images are not copied into the book)."""
    from melanoma.report.plots import sample_grid

    names = [p.parent.name for p in sorted(grid.work.glob("*/report.json"))]
    if not names:
        return None, "_No dataset ingested._\n"
    if not grid.is_synthetic:
        return None, ("_Real releases: their images are third-party medical images and are not copied into "
                      "this book._\n")
    frames = [pd.read_parquet(grid.work / d / "manifest.parquet") for d in names]
    fig = sample_grid(grid.work, pd.concat(frames, ignore_index=True), per_class=8, seed=0,
                      title=f"sample images{_syn(grid)}")
    return fig, "Sample images per dataset and class (top: melanoma, bottom: non-melanoma), SYNTHETIC replicas."


def fig3(grid: Grid, rid: str | None, rej: dict, blocks: dict) -> tuple[object, str]:
    """Fig. 3: accuracy of the retained vs the threshold, on each evaluation set's validation split."""
    from melanoma.report import plots

    tables = {name: blk["val_search"] for name, blk in blocks.items() if blk.get("val_search")}
    if not tables:
        return None, "_No rejection results._\n"
    fig = plots.accuracy_vs_threshold(tables, title=f"validation, {rid}{_syn(grid)}")
    met = {n: t for n, t in tables.items() if t.get("min_coverage_met", True)}
    axis = ("the fraction r of validation rejected" if rej.get("mode") == "relative"
            else "the entropy threshold (bits)" if rej.get("mode") == "absolute" else "the fraction rejected")
    floor = (f" Every chosen threshold kept at least {rej.get('min_coverage', 0):g} of validation."
             if len(met) == len(tables) else
             f" The validation coverage floor {rej.get('min_coverage', 0):g} was **not reachable** for "
             f"{', '.join(sorted(set(tables) - set(met)))} (floor relaxed; flagged).")
    chosen_txt = "; ".join(
        f"{n}: {b['threshold']:.3f} bits" + (f" (r = {b['fraction']:.2f})" if np.isfinite(b.get("fraction", np.nan)) else "")
        + f", validation coverage {b['val_coverage']:.2f}, test coverage {b['coverage']:.2f}"
        for n, b in blocks.items())
    return fig, (f"**Fig. 3.** Accuracy of the retained validation predictions vs {axis}, run `{rid}`, one line "
                 f"per evaluation set; the dot marks the candidate chosen by ½(ECE + Brier) on the retained.{floor} "
                 f"Chosen: {chosen_txt}.{_flag_sentence(_flagged_names(blocks))}")


def fig4(grid: Grid) -> tuple[object, str]:
    """Fig. 4: calibration curves on the first evaluation set's test split, one dataset vs combined."""
    from melanoma.report import plots

    single, combined = grid.figures.get("calibration_single"), grid.figures.get("calibration_combined")
    es = grid.eval_sets[0]
    curves = {}
    for label, frid in (("single", single), ("combined", combined)):
        if not frid:
            continue
        blk = (_met(grid, frid).get("eval_sets") or {}).get(es, {})
        rel = (blk.get("test") or blk.get("before") or {}).get("reliability")
        if rel:
            curves[f"{label}: {frid}"] = rel
    if not curves:
        return None, "_Calibration runs named in the grid's `figures` are missing._\n"
    fig = plots.reliability_diagram(curves, title=f"{get(es).name} test{_syn(grid)}")
    return fig, (f"**Fig. 4.** Calibration curves on the {get(es).name} test split (10 equal-width bins of the "
                 f"top-label confidence): a model trained on one dataset (`{single}`) vs on combined datasets "
                 f"(`{combined}`); the diagonal is perfect calibration.")


def fig5(grid: Grid, rid: str | None, blocks: dict) -> tuple[object, str]:
    """Fig. 5: where the melanomas went (referral accounting), the featured run; its table below."""
    from melanoma.report import plots

    if not blocks:
        return None, "_No rejection results._\n"
    recs = {n: {**b["referral"], "flag": "FLAGGED" if b.get("flags") else ""} for n, b in blocks.items()}
    fig = plots.referral_bar(recs, title=f"melanomas before / after rejection, {rid}{_syn(grid)}")
    parts = []
    for n, r in recs.items():
        parts.append(f"{n}: of {r['n_melanoma']} melanomas {r['melanoma_caught']} caught, "
                     f"{r['melanoma_missed']} missed (confident benign label; {r['melanoma_missed_before']} "
                     f"without rejection), {r['melanoma_referred']} referred as *Uncertain*; "
                     f"{r['benign_referred']} of {r['n_benign']} benign lesions referred; test coverage "
                     f"{r['coverage']:.2f}")
    return fig, (f"**Fig. 5.** Where the melanomas of each test split go without and with rejection, run `{rid}`. "
                 + "; ".join(parts) + "." + _flag_sentence(_flagged_names(blocks)))


def fig_risk_coverage(grid: Grid, rid: str | None, blocks: dict) -> tuple[object, str]:
    from melanoma.report import plots

    rcs = {name: blk["curves"]["risk_coverage"] for name, blk in blocks.items()
           if (blk.get("curves") or {}).get("risk_coverage")}
    if not rcs:
        return None, "_No risk–coverage curves._\n"
    pts = {n: (b["coverage"], 1 - b["after"]["accuracy"]) for n, b in blocks.items()
           if n in rcs and np.isfinite(b["after"].get("accuracy", np.nan))}
    fig = plots.risk_coverage(rcs, title=f"risk–coverage, {rid}{_syn(grid)}", points=pts)
    return fig, (f"Selective risk (error rate of the retained) vs coverage when rejecting by entropy, run `{rid}`, "
                 "test splits; the dot is where the threshold chosen on validation landed: "
                 + "; ".join(f"{n} coverage {c:.2f}, risk {r:.3f}" for n, (c, r) in pts.items()) + "."
                 + _flag_sentence(_flagged_names(blocks)))


def heatmaps(grid: Grid, summary: pd.DataFrame) -> tuple[object, str]:
    """AUC and ECE before rejection across models × training combinations, per evaluation set."""
    from melanoma.report import plots
    from melanoma.report.summary import metric_matrix

    tables = {m: metric_matrix(summary, m) for m in ("auc", "ece")}
    if not tables["auc"] or all(t.size <= 1 for t in tables["auc"].values()):
        return None, "_One model and one combination only: no grid to map._\n"
    figs = [plots.metric_heatmap(tables["auc"], "AUC-ROC", title=f"AUC-ROC, test splits, before rejection{_syn(grid)}"),
            plots.metric_heatmap(tables["ece"], "ECE", higher_is_better=False, pct=False,
                                 title=f"ECE, test splits, before rejection{_syn(grid)}")]
    best = []
    for es, t in tables["auc"].items():
        st = t.stack()
        if len(st):
            (m, c), v = st.idxmax(), st.max()
            best.append(f"{es}: {m} on [{c}] ({fmt(v)})")
    return figs, ("AUC-ROC (higher is better) and ECE (lower is better) of every run before rejection, one "
                  "panel per test set, models × training combinations (blank: no such run; leakage twins left "
                  "out). Highest AUC: " + "; ".join(best) + ".")


def _ci_cell(m: dict, k: str, pct: bool = True) -> str:
    ci = (m.get("ci") or {}).get(k) or {}
    return fmt_ci(m.get(k, np.nan), ci.get("low", np.nan), ci.get("high", np.nan), pct=pct)


def _kept_cell(m: dict) -> str:
    if m.get("met") is False:
        return "no threshold meets the target on validation"
    k = {True: "kept", False: "**broken**", None: "no promise"}[m.get("kept")]
    if m.get("exchangeable") is False:
        k += " (no guarantee: calibrated on another split)"
    return k


def guarantees(grid: Grid, summary: pd.DataFrame, rid: str | None,
               blocks: dict[str, dict]) -> tuple[str, object, str, str]:
    """Entropy rule vs conformal sets vs SGR: (text and table, figure or None, its caption, the
    across-the-grid table)."""
    from melanoma.evaluate.conformal import PROMISES
    from melanoma.report import plots

    rows, curves, points = [], {}, {}
    for name, b in blocks.items():
        ms = b.get("methods") or {}
        if not ms:
            continue
        for method in ("entropy", "conformal", "sgr"):
            m = ms.get(method)
            if not m:
                continue
            param = {"entropy": f"{m.get('threshold', np.nan):.3f} bits", "conformal": f"α = {m.get('alpha', np.nan):g}",
                     "sgr": f"target {m.get('target', np.nan):g}, δ = {m.get('delta', np.nan):g}"
                            + (f", bound {m['bound']:.3f}" if m.get("met") else "")}[method]
            extra = ""
            if method == "conformal":
                cc = m.get("class_coverage") or {}
                extra = "; ".join(f"{c} {v['observed']:.3f} (≥ {v['target'] - v['slack']:.3f})"
                                  for c, v in cc.items() if v.get("observed") == v.get("observed"))
            elif method == "sgr" and m.get("met"):
                extra = f"risk on test {m.get('test_risk', np.nan):.3f} (≤ {m.get('target', np.nan):g})"
            rows.append({"Test set": name, "Method": method, "Parameter": param,
                         "Coverage": _ci_cell(m, "coverage"), "Accuracy (retained)": _ci_cell(m, "accuracy"),
                         "Sensitivity (retained)": _ci_cell(m, "sensitivity_retained"),
                         "Melanomas with a confident benign label": f"{m['melanoma_missed']} of {m['n_melanoma']} — "
                         + _ci_cell(m, "miss_rate"),
                         "Melanomas referred": f"{m['melanoma_referred']} of {m['n_melanoma']}",
                         "Promise on test": _kept_cell(m) + (f": {extra}" if extra else "")})
        if ms.get("curves"):
            curves[name] = ms["curves"]
            points[name] = {k: (ms[k]["coverage"], ms[k]["miss_rate"]) for k in ("entropy", "conformal", "sgr")
                            if k in ms}
    if not rows:
        return "_No rejection results._\n", None, "", ""
    a = blocks[next(iter(blocks))].get("methods", {}).get("conformal", {}).get("alpha", np.nan)
    md = [f"Run `{rid}`, test splits; every rule fitted on the evaluation set's validation split only. "
          "What each method promises:\n",
          f"- **entropy rule** (the paper): {PROMISES['entropy']};",
          f"- **conformal sets** (class-conditional split conformal, α = {a:g}; `crepes`): {PROMISES['conformal']}. "
          "A prediction is confident when its set holds one class, *Uncertain* when it holds both (or none). "
          "The observed class coverage is checked against 1 - α minus its finite-sample slack (95 % of "
          "Beta-Binomial draws lie above it);",
          f"- **selective guaranteed risk** (Geifman & El-Yaniv 2017): {PROMISES['sgr']}.\n",
          md_table(pd.DataFrame(rows))]
    fig = (plots.miss_rate_vs_coverage(curves, points, title=f"melanoma miss rate vs coverage, {rid}{_syn(grid)}")
           if curves else None)
    cap = (f"Melanomas given a confident benign label (fraction of all melanomas) against coverage "
           f"on each test split, run `{rid}`, as each method's parameter varies (entropy rule: r "
           "0 … 0.9; conformal: α 0.01 … 0.5; SGR: target 0.02 … 0.5, where met); the dots are "
           "the operating points of the table above.")
    return "\n".join(md), fig, cap, promise_summary(summary)

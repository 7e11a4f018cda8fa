"""Render a grid's results into ``book/_generated/`` and build the Jupyter Book (1.x).

Every table and figure of the book is written here from ``summary.parquet``, ``runs.parquet`` and
the run folders (``metrics.json``, ``rejection.json``); the book's pages only ``{include}`` them,
and each names the runs it came from. Nothing is executed at build time and nothing is typed in.
The build is strict: ``jupyter-book build -W -n --keep-going book``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from .datasets import get
from .grid import REPO, Grid, load_grid
from .home import home, repository
from .io import read_json, write_text
from .report import fmt, fmt_ci

SOURCE = REPO / "book"
#: Where the book is rendered and built: the repository's book/ by default (HOME/book for a
#: non-editable install, never inside the installed package); tests and parallel grids set
#: MELANOMA_BOOK to another folder (the sources are copied there first).
BOOK = Path(os.environ.get("MELANOMA_BOOK") or (SOURCE if repository() else home() / "book")).resolve()
GEN = BOOK / "_generated"
TABLE1_METRICS = [("precision", "Precision"), ("specificity", "Specificity"), ("sensitivity", "Sensitivity"),
                  ("f1", "F-1"), ("accuracy", "Accuracy"), ("auc", "AUC-ROC")]


def _md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(str(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(str(r[c]).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _save(fig, name: str) -> str:
    fig.savefig(GEN / name, dpi=110)
    return name


def _figure_md(png: str, name: str, caption: str) -> str:
    return f"```{{figure}} /_generated/{png}\n:name: {name}\n:width: 100%\n\n{caption}\n```\n"


def _rel(p: Path) -> Path:
    try:
        return Path(p).resolve().relative_to(REPO)
    except ValueError:
        return Path(p)


def _shown_path(p) -> str:
    """A path as the book shows it: relative to the repository when it is near it, never a home or
    machine-specific absolute path otherwise (just its last two parts)."""
    p = Path(p).resolve()
    rel = os.path.relpath(p, REPO)
    return rel if not rel.startswith("../../") else str(Path("…", *p.parts[-2:]))


def _syn(grid: Grid) -> str:
    return " (SYNTHETIC)" if grid.is_synthetic else ""


# ----------------------------------------------------------------------------- pieces

def banner(grid: Grid) -> str:
    if grid.is_synthetic:
        return ("```{warning}\n**SYNTHETIC DATA.** Every number and image in this build comes from "
                "procedurally generated replicas of the datasets (`melanoma synth`), not from patients. "
                "It demonstrates the pipeline end to end; it says nothing about real melanoma detection. "
                f"Grid: `{grid.path.name}`.\n```\n")
    return (f"```{{note}}\nBuilt from the real releases under `{_shown_path(grid.data)}` with grid "
            f"`{grid.path.name}`.\n```\n")


def provenance(grid: Grid, summary: pd.DataFrame, runs: pd.DataFrame) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=REPO).stdout.strip() or "unknown"
    n_ok = int((runs["status_reject"] == "ok").sum()) if len(runs) else 0
    return (f"Grid **{grid.name}** (`{_rel(grid.path)}`): "
            f"{len(runs)} runs ({n_ok} complete), {len(grid.models)} model(s) × "
            f"{len(grid.combinations)} combination(s), evaluation sets "
            f"{', '.join(get(e).name for e in grid.eval_sets)}; code at commit `{commit}`. "
            f"Results: `{_rel(grid.results)}/summary.parquet` "
            f"({len(summary)} rows).\n")


def commands(grid: Grid) -> str:
    gf = _rel(grid.path)
    return ("| output | command |\n|---|---|\n"
            f"| this book, from nothing | `make demo` (grid `params/demo.yaml`) |\n"
            f"| every run, the summary and the book | `snakemake -s workflow/Snakefile --config grid={gf} --cores all` |\n"
            "| the paper grid on real data | `DATA_ROOT=/data snakemake -s workflow/Snakefile --config grid=params/paper.yaml --cores all` |\n"
            "| one run | `melanoma train --work WORK --model M --train A-D,I,J --eval B,C,F,J --out RUN` |\n"
            "| its metrics / rejection | `melanoma calibrate RUN` / `melanoma reject RUN` |\n"
            f"| `summary.parquet` | `melanoma report --grid-file {gf}` |\n")


def datasets_section(grid: Grid) -> None:
    from .datasets.ingest import counts_table
    from .plots import sample_grid

    reports = {p.parent.name: read_json(p) for p in sorted(grid.work.glob("*/report.json"))}
    t = counts_table(reports).drop(columns=["synthetic"]) if reports else pd.DataFrame()
    write_text(GEN / "datasets_table.md", _md_table(t) if len(t) else "_No dataset ingested._\n")
    frames = [pd.read_parquet(grid.work / d / "manifest.parquet") for d in reports]
    if frames and grid.is_synthetic:
        fig = sample_grid(grid.work, pd.concat(frames, ignore_index=True), per_class=8, seed=0,
                          title=f"sample images{_syn(grid)}")
        _save(fig, "samples.png")
        write_text(GEN / "samples.md", _figure_md(
            "samples.png", "fig-samples",
            "Sample images per dataset and class (top: melanoma, bottom: non-melanoma), SYNTHETIC replicas."))
    else:
        write_text(GEN / "samples.md", "_Real releases: their images are third-party medical images and are "
                                       "not copied into this book._\n" if frames else "_No dataset ingested._\n")


def leakage_section(grid: Grid) -> None:
    from .datasets.combine import leakage_report

    biggest = max(grid.combinations, key=lambda c: len(c.split("+")))
    t = leakage_report(grid.work, biggest, grid.eval_sets)
    cols = ["eval_set", "eval_split", "n_eval", "n_eval_leaked", "n_train_dups", "by_id", "by_pixels",
            "by_near", "n_train", "n_train_after"]
    t = t[cols].rename(columns={"eval_set": "evaluation set", "eval_split": "split", "n_eval": "images",
                                "n_eval_leaked": "with a copy in training", "n_train_dups": "training copies",
                                "by_id": "same ISIC id", "by_pixels": "same pixels", "by_near": "near copy",
                                "n_train": "training pool before", "n_train_after": "after dedup"})
    write_text(GEN / "leakage_table.md", f"Training pool: **{get_label(biggest)}**.\n\n" + _md_table(t))


def get_label(combo: str) -> str:
    from .datasets import combo_label

    return combo_label(combo.split("+"))


def _both(a: float, b: float, pct: bool = True) -> str:
    return f"{fmt(a, pct)} / {fmt(b, pct)}"


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
                    row[f"{label} (before / after)"] = _both(r[m], a[m])
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
    return _md_table(t) + "\nScore source: " + "; ".join(sources) + ".\n"


def _rej(grid: Grid, rid: str) -> dict:
    f = grid.results / "runs" / rid / "rejection.json"
    return read_json(f) if f.is_file() else {}


def _met(grid: Grid, rid: str) -> dict:
    f = grid.results / "runs" / rid / "metrics.json"
    return read_json(f) if f.is_file() else {}


def _blocks(rej: dict) -> dict[str, dict]:
    return {get(es).name: blk for es, blk in (rej.get("eval_sets") or {}).items()
            if isinstance(blk, dict) and not blk.get("skipped")}


def _flagged_names(blocks: dict[str, dict]) -> dict[str, str]:
    return {name: "; ".join(f["text"] for f in blk.get("flags") or []) for name, blk in blocks.items()
            if blk.get("flags")}


def _flag_sentence(flagged: dict[str, str]) -> str:
    if not flagged:
        return " No result of this run is flagged."
    return (" **Flagged** (read with care): " + "; ".join(f"{n}: {t}" for n, t in flagged.items()) + ".")


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
    g = np.asarray(rej.get("grid") or [], dtype=float)
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


def figures(grid: Grid, summary: pd.DataFrame, chosen) -> None:
    from . import plots

    syn = _syn(grid)
    # the run of Figs. 3 and 5 and the risk–coverage curves: the grid names it, else the top run
    # (by precision) of the first evaluation set
    rid = grid.figures.get("rejection") or (chosen[0][1] if chosen else None)
    rej = _rej(grid, rid) if rid else {}
    blocks = _blocks(rej)
    flagged = _flagged_names(blocks)
    write_text(GEN / "rejection_rule.md", rejection_rule(grid, rej) if rej else "_No rejection results._\n")

    # Fig. 3: accuracy of the retained vs the threshold, on each evaluation set's validation split
    tables = {name: blk["val_search"] for name, blk in blocks.items() if blk.get("val_search")}
    if tables:
        _save(plots.accuracy_vs_threshold(tables, title=f"validation, {rid}{syn}"),
              "fig3_accuracy_vs_threshold.png")
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
        write_text(GEN / "fig3_accuracy_vs_threshold.md", _figure_md(
            "fig3_accuracy_vs_threshold.png", "fig3",
            f"**Fig. 3.** Accuracy of the retained validation predictions vs {axis}, run `{rid}`, one line "
            f"per evaluation set; the dot marks the candidate chosen by ½(ECE + Brier) on the retained.{floor} "
            f"Chosen: {chosen_txt}.{_flag_sentence(flagged)}"))
    else:
        write_text(GEN / "fig3_accuracy_vs_threshold.md", "_No rejection results._\n")

    # Fig. 4: calibration curves, one dataset vs combined
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
    if curves:
        _save(plots.reliability_diagram(curves, title=f"{get(es).name} test{syn}"), "fig4_calibration.png")
        write_text(GEN / "fig4_calibration.md", _figure_md(
            "fig4_calibration.png", "fig4",
            f"**Fig. 4.** Calibration curves on the {get(es).name} test split (10 equal-width bins of the "
            f"top-label confidence): a model trained on one dataset (`{single}`) vs on combined datasets "
            f"(`{combined}`); the diagonal is perfect calibration."))
    else:
        write_text(GEN / "fig4_calibration.md", "_Calibration runs named in the grid's `figures` are missing._\n")

    # Fig. 5: where the melanomas went (referral accounting), same run
    if blocks:
        recs = {n: {**b["referral"], "flag": "FLAGGED" if b.get("flags") else ""} for n, b in blocks.items()}
        _save(plots.referral_bar(recs, title=f"melanomas before / after rejection, {rid}{syn}"),
              "fig5_misdiagnoses.png")
        parts = []
        for n, r in recs.items():
            parts.append(f"{n}: of {r['n_melanoma']} melanomas {r['melanoma_caught']} caught, "
                         f"{r['melanoma_missed']} missed (confident benign label; {r['melanoma_missed_before']} "
                         f"without rejection), {r['melanoma_referred']} referred as *Uncertain*; "
                         f"{r['benign_referred']} of {r['n_benign']} benign lesions referred; test coverage "
                         f"{r['coverage']:.2f}")
        write_text(GEN / "fig5_misdiagnoses.md", _figure_md(
            "fig5_misdiagnoses.png", "fig5",
            f"**Fig. 5.** Where the melanomas of each test split go without and with rejection, run `{rid}`. "
            + "; ".join(parts) + "." + _flag_sentence(flagged)) + "\n" + referral_table(blocks))
    else:
        write_text(GEN / "fig5_misdiagnoses.md", "_No rejection results._\n")

    rcs = {name: blk["curves"]["risk_coverage"] for name, blk in blocks.items()
           if (blk.get("curves") or {}).get("risk_coverage")}
    if rcs:
        pts = {n: (b["coverage"], 1 - b["after"]["accuracy"]) for n, b in blocks.items()
               if n in rcs and np.isfinite(b["after"].get("accuracy", np.nan))}
        _save(plots.risk_coverage(rcs, title=f"risk–coverage, {rid}{syn}", points=pts), "fig_risk_coverage.png")
        write_text(GEN / "fig_risk_coverage.md", _figure_md(
            "fig_risk_coverage.png", "fig-rc",
            f"Selective risk (error rate of the retained) vs coverage when rejecting by entropy, run `{rid}`, "
            "test splits; the dot is where the threshold chosen on validation landed: "
            + "; ".join(f"{n} coverage {c:.2f}, risk {r:.3f}" for n, (c, r) in pts.items()) + "."
            + _flag_sentence(flagged)))
    else:
        write_text(GEN / "fig_risk_coverage.md", "_No risk–coverage curves._\n")
    write_text(GEN / "rejection_variants.md", variants_table(summary, rid))
    write_text(GEN / "eval_sources.md", eval_sources_table(rej))
    guarantees_section(grid, summary, rid, blocks)


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


def guarantees_section(grid: Grid, summary: pd.DataFrame, rid: str | None, blocks: dict[str, dict]) -> None:
    """Entropy rule vs conformal sets vs SGR: what each promises, what test did, miss rate vs coverage."""
    from . import plots
    from .conformal import PROMISES

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
        write_text(GEN / "guarantees.md", "_No rejection results._\n")
        return
    a = blocks[next(iter(blocks))].get("methods", {}).get("conformal", {}).get("alpha", np.nan)
    md = [f"Run `{rid}`, test splits; every rule fitted on the evaluation set's validation split only. "
          "What each method promises:\n",
          f"- **entropy rule** (the paper): {PROMISES['entropy']};",
          f"- **conformal sets** (class-conditional split conformal, α = {a:g}; `crepes`): {PROMISES['conformal']}. "
          "A prediction is confident when its set holds one class, *Uncertain* when it holds both (or none). "
          "The observed class coverage is checked against 1 - α minus its finite-sample slack (95 % of "
          "Beta-Binomial draws lie above it);",
          f"- **selective guaranteed risk** (Geifman & El-Yaniv 2017): {PROMISES['sgr']}.\n",
          _md_table(pd.DataFrame(rows))]
    if curves:
        _save(plots.miss_rate_vs_coverage(curves, points, title=f"melanoma miss rate vs coverage, {rid}{_syn(grid)}"),
              "fig_guarantees.png")
        md.append(_figure_md("fig_guarantees.png", "fig-guarantees",
                             f"Melanomas given a confident benign label (fraction of all melanomas) against coverage "
                             f"on each test split, run `{rid}`, as each method's parameter varies (entropy rule: r "
                             "0 … 0.9; conformal: α 0.01 … 0.5; SGR: target 0.02 … 0.5, where met); the dots are "
                             "the operating points of the table above."))
    md.append(promise_summary(summary))
    write_text(GEN / "guarantees.md", "\n".join(md))


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
            "calibration split is the test set's own):\n\n" + _md_table(pd.DataFrame(rows)))


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
    return _md_table(pd.DataFrame(rows)) if rows else ""


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
            "threshold on calibrated probabilities means the same across models.\n\n" + _md_table(pd.DataFrame(rows)))


def eval_sources_table(rej: dict) -> str:
    rows = [{"Evaluation set": get(es).name, "Validation (threshold, temperature)": b.get("val_source", ""),
             "Test (scored)": b.get("test_source", "") if not b.get("skipped") else f"skipped: {b['skipped']}"}
            for es, b in (rej.get("eval_sets") or {}).items()]
    return _md_table(pd.DataFrame(rows)) if rows else "_No rejection results._\n"


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
            "leakage adds to the reported numbers.\n\n" + _md_table(pd.DataFrame(rows)))


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
            "oracle ordering), test splits, with 95 % bootstrap CIs.\n\n" + _md_table(t))


def runs_table(runs: pd.DataFrame) -> str:
    if runs.empty:
        return "_No runs._\n"
    t = runs[["run_id", "model", "train", "status_train", "status_calibrate", "status_reject"]].copy()
    t["run_id"] = "`" + t["run_id"] + "`"
    out = _md_table(t)
    failed = runs[runs["failed_step"] != ""]
    if len(failed):
        out += "\n**Failed runs** — the executed notebook shows the error:\n\n"
        for _, r in failed.iterrows():
            out += f"- `{r['run_id']}` failed at {r['failed_step']}: {r['error']} — `{r['notebook']}`\n"
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
    return "## Rejection per run\n\n" + _md_table(pd.DataFrame(rows))


def _facts_cov(f: dict) -> str:
    v, t = f.get("val_coverage"), f.get("test_coverage")
    if v is None or t is None:
        return "–"
    return f"{fmt(v, digits=0)} / {fmt(t, digits=0)}" + (f" (FLAGGED: {'; '.join(f['flags'])})" if f.get("flags") else "")


def webapp_section(grid: Grid) -> None:
    web = grid.results / "web"
    extra = GEN / "extra"
    if extra.exists():
        shutil.rmtree(extra)
    extra.mkdir(parents=True)
    if not (web / "model.json").is_file():
        write_text(GEN / "webapp.md", "_No model exported for the web page in this grid._\n")
        return
    from .export import assemble_site

    assemble_site(extra / "webapp", web)
    mj = read_json(web / "model.json")
    shot = web / "screenshot.png"
    md = ['<p><strong><a href="webapp/index.html">Open the web page</a></strong> '
          "(served with this book, works offline).</p>\n",
          "| model | training combination | input | ONNX size | entropy threshold | its coverage val / test |",
          "|---|---|---|---|---|---|",
          f"| `{mj.get('model')}` | [{mj.get('train_label', mj.get('train', ''))}] | "
          f"{mj.get('input_size', '')} px | {mj['onnx']['bytes'] / 1024:.0f} KB | "
          f"{mj.get('threshold', float('nan')):.3f} bits ({mj.get('threshold_source', '')}) | "
          f"{_facts_cov(mj.get('threshold_facts') or {})} |\n"]
    if shot.is_file():
        shutil.copy(shot, GEN / "fig2_webapp.png")
        md.append(_figure_md("fig2_webapp.png", "fig2",
                             "**Fig. 2.** The page in headless Chromium, scoring a synthetic image offline "
                             "(screenshot taken by `tests/test_web.py` / the workflow)."))
    else:
        md.append("_Fig. 2 (screenshot) is made by the browser test; it was not available for this build._\n")
    write_text(GEN / "webapp.md", "\n".join(md))


def performance_section() -> None:
    res = REPO / "benchmarks" / "RESULTS.md"
    text = res.read_text() if res.is_file() else "_No benchmark results yet: run `make bench`._\n"
    # demote headings so the page keeps one title
    text = "\n".join(("#" + l) if l.startswith("#") else l for l in text.splitlines()) + "\n"
    write_text(GEN / "performance.md", text)


def paper_tables() -> dict[str, str]:
    """The paper's own Tables 1–3 (params/paper_results.yaml), for the paper grid's book."""
    from .io import read_yaml

    y = read_yaml(REPO / "params" / "paper_results.yaml")
    t1 = pd.DataFrame([{"Test set": r[0], "Network": r[1], "Train sets": f"[{r[2]}]",
                        **{f"{label} (before / after)": _both(*r[3 + i]) for i, (_, label) in enumerate(TABLE1_METRICS)},
                        "Threshold": r[9]} for r in y["table1"]])
    t2 = pd.DataFrame([{"Network": r[0], "Train sets": f"[{r[1]}]", "Private score (AUC-ROC)": fmt(r[2])}
                       for r in y["table2"]])
    t3 = pd.DataFrame([{"Test set": r[0], "Network": r[1], "Train sets": f"[{r[2]}]",
                        "Brier before": f"{r[3]:.4f}", "ECE before": f"{r[4]:.4f}",
                        "Brier after": f"{r[5]:.4f}", "ECE after": f"{r[6]:.4f}"} for r in y["table3"]])
    head = "\n**Reported in the paper** (for comparison; `params/paper_results.yaml`):\n\n"
    return {"table1": head + _md_table(t1), "table2": head + _md_table(t2), "table3": head + _md_table(t3)}


# ----------------------------------------------------------------------------- driver

def _copy_sources() -> None:
    if BOOK == SOURCE.resolve():
        return
    BOOK.mkdir(parents=True, exist_ok=True)
    for f in SOURCE.iterdir():
        if f.is_file() and f.suffix in (".md", ".yml"):
            shutil.copy(f, BOOK / f.name)
    shutil.copytree(SOURCE / "_static", BOOK / "_static", dirs_exist_ok=True)


def render(grid: Grid) -> None:
    from .plots import framework_diagram

    _copy_sources()
    if GEN.exists():
        shutil.rmtree(GEN)  # nothing stale from an earlier grid survives
    GEN.mkdir(parents=True)
    summary = pd.read_parquet(grid.results / "summary.parquet")
    runs = pd.read_parquet(grid.results / "runs.parquet")
    write_text(GEN / "banner.md", banner(grid))
    write_text(GEN / "provenance.md", provenance(grid, summary, runs))
    write_text(GEN / "commands.md", commands(grid))
    _save(framework_diagram(), "fig1_framework.png")
    datasets_section(grid)
    leakage_section(grid)
    t1, chosen, t1_flagged = table1(grid, summary)
    syn_note = "\n_All numbers: SYNTHETIC data._\n" if grid.is_synthetic else ""
    flagged_md = ("\n**Flagged results, not ranked** (their after-rejection numbers describe a degenerate "
                  "rejection; the flag says why):\n\n" + _md_table(t1_flagged)) if len(t1_flagged) else \
        "\nNo rejection result of this grid is flagged.\n"
    write_text(GEN / "table1.md", (_md_table(t1) if len(t1) else "_No unflagged results._\n") + flagged_md + syn_note)
    t3 = table3(summary, chosen)
    write_text(GEN / "table3.md", (_md_table(t3) if len(t3) else "_No results._\n") + syn_note)
    write_text(GEN / "table2.md", table2(summary) + syn_note)
    if grid.name == "paper":  # the paper's own numbers beside ours
        for key, text in paper_tables().items():
            f = GEN / f"{key}.md"
            write_text(f, f.read_text() + text)
    figures(grid, summary, chosen)
    write_text(GEN / "aurc_table.md", aurc_table(summary))
    write_text(GEN / "leakage_experiment.md", leakage_experiment(grid, summary))
    write_text(GEN / "runs_table.md", runs_table(runs) + "\n" + rejection_by_run(summary))
    webapp_section(grid)
    performance_section()


def build(strict: bool = True) -> Path:
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(BOOK)]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    subprocess.run(cmd, check=True)
    return BOOK / "_build" / "html" / "index.html"


def make_book(grid_file: str | Path, strict: bool = True) -> Path:
    grid = load_grid(grid_file)
    render(grid)
    index = build(strict)
    print(f"book: {index}")
    return index

"""The book (Jupyter Book 1.x): its tables, figures and captions, and the build.

Every table and figure of the book is made here from ``summary.parquet``, ``runs.parquet`` and
the run folders (``metrics.json``, ``rejection.json``), and each names the runs it came from.
The chapters that show results are notebooks (``notebooks/book/*.ipynb``) that call these through
:mod:`melanoma.report.pages`; :func:`render` executes them with papermill (one kernel) into the book with
their code folded, copies the featured run's executed 01–04 notebooks into the appendix, and
writes the Markdown pages' pieces into ``_generated/``. Nothing is executed at build time and
nothing is typed in. The build is strict: ``jupyter-book build -W -n --keep-going book``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.data.registry import get
from melanoma.home import book_dir
from melanoma.io import read_json, write_text
from melanoma.pipeline.grid import REPO, Grid, load_grid
from melanoma.report.summary import fmt, fmt_ci

SOURCE = REPO / "book"
#: Where the book is rendered and built (melanoma.home.book_dir).
BOOK = book_dir()
GEN = BOOK / "_generated"
TABLE1_METRICS = [("precision", "Precision"), ("specificity", "Specificity"), ("sensitivity", "Sensitivity"),
                  ("f1", "F-1"), ("accuracy", "Accuracy"), ("auc", "AUC-ROC")]


def md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(str(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(str(r[c]).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _save(fig, name: str) -> str:
    fig.savefig(GEN / name, dpi=110, bbox_inches="tight")
    return name


def _figure_md(png: str, name: str, caption: str) -> str:
    return f"```{{figure}} /_generated/{png}\n:name: {name}\n:width: 100%\n\n{caption}\n```\n"


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
    return (f"Grid **{grid.name}** (`{_shown_path(grid.path)}`): "
            f"{len(runs)} runs ({n_ok} complete), {len(grid.models)} model(s) × "
            f"{len(grid.combinations)} combination(s), evaluation sets "
            f"{', '.join(get(e).name for e in grid.eval_sets)}; code at commit `{commit}`. "
            f"Results: `{_shown_path(grid.results)}/summary.parquet` "
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
    gf = _shown_path(grid.path)
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


def _met(grid: Grid, rid: str) -> dict:
    f = grid.results / "runs" / rid / "metrics.json"
    return read_json(f) if f.is_file() else {}


def rejection_blocks(rej: dict) -> dict[str, dict]:
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


# Each figure: (Figure or None, caption in Markdown). The book's notebook pages show them
# (melanoma.report.pages); figures() writes them into _generated/ for pages that include files.

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


def figures(grid: Grid, summary: pd.DataFrame, chosen) -> None:
    """Every figure of the results chapter into ``_generated/`` (PNG + a Markdown figure with its
    caption), and the tables that go with them."""
    rid = featured_run(grid, chosen)
    rej = read_rejection(grid, rid) if rid else {}
    blocks = rejection_blocks(rej)
    write_text(GEN / "rejection_rule.md", rejection_rule(grid, rej) if rej else "_No rejection results._\n")
    for name, key, (fig, cap) in (("fig3_accuracy_vs_threshold", "fig3", fig3(grid, rid, rej, blocks)),
                                  ("fig4_calibration", "fig4", fig4(grid)),
                                  ("fig5_misdiagnoses", "fig5", fig5(grid, rid, blocks)),
                                  ("fig_risk_coverage", "fig-rc", fig_risk_coverage(grid, rid, blocks))):
        md = _figure_md(_save(fig, f"{name}.png"), key, cap) if fig is not None else cap
        if key == "fig5" and fig is not None:
            md += "\n" + referral_table(blocks)
        write_text(GEN / f"{name}.md", md)
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


def guarantees_section(grid: Grid, summary: pd.DataFrame, rid: str | None, blocks: dict[str, dict]) -> None:
    head, fig, cap, tail = guarantees(grid, summary, rid, blocks)
    md = [head]
    if fig is not None:
        md.append(_figure_md(_save(fig, "fig_guarantees.png"), "fig-guarantees", cap))
    md.append(tail)
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
            out += f"- `{r['run_id']}` failed at {r['failed_step']}: {r['error']} — `{_shown_path(r['notebook'])}`\n"
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
    from melanoma.report.export import assemble_site

    assemble_site(extra / "webapp", web)
    mj = read_json(web / "model.json")
    shot = web / "screenshot.png"
    if not shot.is_file() and grid.is_synthetic:
        _take_screenshot(grid, web, shot)
    md = ['<p><strong><a href="webapp/index.html">Open the web page</a></strong> '
          "(served with this book, works offline).</p>\n",
          "The page needs a web server (browsers do not run its model from a `file://` address): "
          "`make serve` (or `melanoma serve`) serves this book on localhost and prints the address; opened "
          "as a file, the page says so.\n",
          "| model | training combination | input | ONNX size | entropy threshold | its coverage val / test |",
          "|---|---|---|---|---|---|",
          f"| `{mj.get('model')}` | [{mj.get('train_label', mj.get('train', ''))}] | "
          f"{mj.get('input_size', '')} px | {mj['onnx']['bytes'] / 1024:.0f} KB | "
          f"{mj.get('threshold', float('nan')):.3f} bits ({mj.get('threshold_source', '')}) | "
          f"{_facts_cov(mj.get('threshold_facts') or {})} |\n"]
    if shot.is_file() and grid.is_synthetic:  # a real-data grid's page would show a real image
        shutil.copy(shot, GEN / "fig2_webapp.png")
        md.append(_figure_md("fig2_webapp.png", "fig2",
                             "**Fig. 2.** The page in headless Chromium, scoring a synthetic image offline "
                             "(screenshot taken by `tests/report/test_web.py` / the workflow)."))
    else:
        md.append("_Fig. 2 (a screenshot of the page scoring an image) needs Debian's Chromium, which this "
                  "machine lacks: install it (`make browser`, as root: `apt-get install -y chromium`), then "
                  f"rebuild the book (`melanoma book --grid {_shown_path(grid.path)}`): the book step takes the "
                  "missing screenshot._\n" if grid.is_synthetic else
                  "_Fig. 2 is not shown for a real-data grid: the screenshot would show a patient's image._\n")
    write_text(GEN / "webapp.md", "\n".join(md))


def _take_screenshot(grid: Grid, web: Path, shot: Path) -> None:
    """Fig. 2 when the workflow's export step could not take it (Chromium installed since): the page
    scoring the first melanoma of the first evaluation set's SYNTHETIC test split."""
    from melanoma.report.browser import CHROMIUM, first_test_melanoma, screenshot_checked

    if not CHROMIUM.is_file():
        return
    try:
        screenshot_checked(web, first_test_melanoma(grid.work, grid.eval_sets[0]), shot)
    except Exception as e:  # the book still builds, and says how to get Fig. 2
        print(f"WARNING: no Fig. 2: the screenshot failed ({type(e).__name__}: {e})", file=sys.stderr)


def performance_section() -> None:
    res = REPO / "benchmarks" / "RESULTS.md"
    text = res.read_text() if res.is_file() else "_No benchmark results yet: run `make bench`._\n"
    # demote headings so the page keeps one title
    text = "\n".join(("#" + l) if l.startswith("#") else l for l in text.splitlines()) + "\n"
    text = scrub_paths(text)
    write_text(GEN / "performance.md", text)


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


# ----------------------------------------------------------------------------- driver

#: The chapters that show results: notebooks/book/<page>.ipynb, executed into BOOK/<page>.ipynb.
PAGES = ("datasets", "results", "leaderboard", "runs")
PAGE_SOURCES = REPO / "notebooks" / "book"
#: The appendix "How one run is made": the featured run's executed notebooks, BOOK/run/<step>.
RUN_STEPS = ("01_ingest", "02_train", "03_calibrate", "04_reject")
_REPO_DIRS = "benchmarks|params|results|work|notebooks|book|workflow|melanoma|tests|web"


def scrub_paths(text: str) -> str:
    """``text`` without absolute machine paths: this repository's (or another clone's) become
    relative (``benchmarks/RESULTS.md``), its neighbours ``../shared/...``, temporary folders
    ``TMP/...`` and the home folder ``~``."""
    import re

    text = text.replace(str(REPO) + "/", "").replace(str(REPO), ".")
    # the shared neighbour first: its parent may itself hold a folder named like one of ours (/ci/work/shared)
    text = re.sub(rf"(?<![\w.~/-]){re.escape(str(REPO.parent / 'shared'))}/", "../shared/", text)
    text = re.sub(rf"(?<![\w.~-])/(?:[\w.@+-]+/)+?(?=(?:{_REPO_DIRS})/)", "", text)
    text = re.sub(rf"(?<![\w.~/-]){re.escape(str(REPO.parent))}/", "../", text)
    text = re.sub(r"(?<![\w.~-])/tmp/", "TMP/", text)
    home = str(Path.home())
    return text.replace(home + "/", "~/") if home not in ("/", "") else text


def _copy_sources() -> None:
    if BOOK == SOURCE.resolve():
        return
    BOOK.mkdir(parents=True, exist_ok=True)
    for f in SOURCE.iterdir():
        if f.is_file() and f.suffix in (".md", ".yml"):
            shutil.copy(f, BOOK / f.name)
    shutil.copytree(SOURCE / "_static", BOOK / "_static", dirs_exist_ok=True)


def _write_notebook(nb, path: Path, grid: Grid | None = None) -> None:
    """An executed notebook into the book, atomically, without absolute paths (and, for a real-data
    grid, without any image output: a notebook may show dataset images)."""
    import nbformat

    if grid is not None and not grid.is_synthetic:
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                data = out.get("data") or {}
                if any(k.startswith("image/") for k in data):
                    out["data"] = {"text/plain": "[image not shown: a real-data grid's book shows no image]"}
    _scrub_notebook(nb)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, nbformat.writes(nb))
    for other in path.parent.glob(path.stem + ".*"):  # a page is either a notebook or a note
        if other != path and other.suffix in (".md", ".ipynb"):
            other.unlink()


def _scrub_notebook(nb) -> None:
    """:func:`scrub_paths` on a notebook's text (sources, text outputs, tracebacks, papermill's
    metadata), never on image data."""
    import json

    for cell in nb.cells:
        cell.source = scrub_paths(cell.source)
        for out in cell.get("outputs", []):
            if "text" in out:
                out["text"] = scrub_paths(out["text"])
            if "traceback" in out:
                out["traceback"] = [scrub_paths(t) for t in out["traceback"]]
            if "evalue" in out:
                out["evalue"] = scrub_paths(out["evalue"])
            for k, v in (out.get("data") or {}).items():
                if k.startswith("text/") or k.endswith("json"):
                    out["data"][k] = (scrub_paths(v) if isinstance(v, str) else
                                      json.loads(scrub_paths(json.dumps(v))))
    if "papermill" in nb.metadata:
        nb.metadata["papermill"] = json.loads(scrub_paths(json.dumps(nb.metadata["papermill"])))


def fold(nb) -> None:
    """Code cells folded (``hide-input``: the output shows, the code is one click away); the
    parameter cells (papermill's injected one names machine paths) removed."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tags = list(cell.metadata.get("tags", []))
        if {"parameters", "injected-parameters"} & set(tags):
            tags = [t for t in tags if t != "hide-input"] + ["remove-cell"]
        elif "hide-input" not in tags and "remove-cell" not in tags:
            tags.append("hide-input")
        cell.metadata["tags"] = list(dict.fromkeys(tags))


def execute_pages(grid: Grid, pages=PAGES) -> dict[str, dict]:
    """Execute the book's notebook pages with papermill, all in one kernel (``nbrun``'s steps), into
    ``BOOK/<page>.ipynb`` with their code folded. A page that fails stops the book, naming its
    executed notebook."""
    import nbformat

    from melanoma.pipeline.nbrun import Step, run_steps

    out = GEN / "pages"
    steps = [Step(PAGE_SOURCES / f"{p}.ipynb", out / f"{p}.ipynb", out / f"{p}.status.json",
                  {"grid_file": str(grid.path)}, cwd=REPO) for p in pages]
    results = dict(zip(pages, run_steps(steps)))
    failed = {p: r for p, r in results.items() if r["status"] != "ok"}
    if failed:
        raise RuntimeError("book pages failed: " + "; ".join(f"{p}: {r['error']} (see {r['notebook']})"
                                                             for p, r in failed.items()))
    for p in pages:
        nb = nbformat.read(out / f"{p}.ipynb", as_version=4)
        fold(nb)
        _write_notebook(nb, BOOK / f"{p}.ipynb", grid)
    return results


def _found(grid: Grid, path: str | Path) -> Path | None:
    """A notebook path recorded in a status file, or the same file under this grid's results folder
    (a results folder copied or moved since)."""
    p = Path(path)
    if p.is_file():
        return p
    for k in (1, 2, 3):
        q = grid.results.joinpath(*p.parts[-k:])
        if q.is_file():
            return q
    return None


def run_notebooks(grid: Grid, rid: str) -> dict[str, Path | None]:
    """The executed 01–04 notebooks of run ``rid``: the ingest of the first release it trains on,
    its training job's notebook (a grouped job's trains several runs), its calibrate and reject."""
    from melanoma.data.registry import parse_combo

    rd = grid.results / "runs" / rid
    rj = read_json(rd / "run.json") if (rd / "run.json").is_file() else {}
    train = rj.get("train") or (rid.split("__")[1] if "__" in rid else "")
    ingest = None
    try:
        order = [*parse_combo(train), *grid.eval_sets]
    except Exception:  # an unreadable combination: the evaluation sets' ingest
        order = list(grid.eval_sets)
    for ds in order:
        ingest = _found(grid, grid.results / "ingest" / f"{ds}.ipynb")
        if ingest:
            break
    st = read_json(rd / "status-train.json") if (rd / "status-train.json").is_file() else {}
    train_nb = _found(grid, st["notebook"]) if st.get("notebook") else _found(grid, rd / "02_train.ipynb")
    return {"01_ingest": ingest, "02_train": train_nb,
            "03_calibrate": _found(grid, rd / "03_calibrate.ipynb"), "04_reject": _found(grid, rd / "04_reject.ipynb")}


def howto_section(grid: Grid, rid: str | None) -> None:
    """The appendix: the featured run's executed notebooks, as they ran (code shown), in BOOK/run/."""
    import nbformat

    found = run_notebooks(grid, rid) if rid else dict.fromkeys(RUN_STEPS)
    titles = {"01_ingest": "01 · Ingest", "02_train": "02 · Train", "03_calibrate": "03 · Calibrate",
              "04_reject": "04 · Reject"}
    lines = []
    for step in RUN_STEPS:
        src = found.get(step)
        if src is None:
            write_text(BOOK / "run" / f"{step}.md", f"# {titles[step]}\n\n_Not available: run `{rid}` has no "
                       f"executed `{step}` notebook in this grid's results._\n")
            for other in (BOOK / "run").glob(f"{step}.ipynb"):
                other.unlink()
            lines.append(f"- {titles[step]}: not available")
            continue
        nb = nbformat.read(src, as_version=4)
        if not nb.cells or nb.cells[0].cell_type != "markdown" or not nb.cells[0].source.startswith("# "):
            nb.cells.insert(0, nbformat.v4.new_markdown_cell(f"# {titles[step]}"))
        _write_notebook(nb, BOOK / "run" / f"{step}.ipynb", grid)
        lines.append(f"- {titles[step]}: `{_shown_path(src)}`")
    write_text(GEN / "howto.md",
               (f"The run shown is `{rid}` (the run of Figs. 3 and 5). " if rid else "No run to show. ")
               + "Each page below is the notebook the workflow executed for it (papermill), with its "
               "parameters (the cell tagged `injected-parameters`) and outputs as they were:\n\n"
               + "\n".join(lines) + "\n")


def render(grid: Grid) -> None:
    """Everything the book shows, from the grid's outputs: the Markdown pages' pieces into
    ``_generated/``, the notebook pages executed into the book, the appendix's notebooks copied."""
    from melanoma.report.plots import framework_diagram

    _copy_sources()
    if GEN.exists():
        shutil.rmtree(GEN)  # nothing stale from an earlier grid survives
    GEN.mkdir(parents=True)
    if BOOK != SOURCE.resolve():  # an older book's Markdown page of the same name would shadow a notebook
        for p in PAGES:
            (BOOK / f"{p}.md").unlink(missing_ok=True)
    summary = pd.read_parquet(grid.results / "summary.parquet")
    runs = pd.read_parquet(grid.results / "runs.parquet")
    write_text(GEN / "banner.md", banner(grid))
    write_text(GEN / "provenance.md", provenance(grid, summary, runs))
    write_text(GEN / "commands.md", commands(grid))
    _save(framework_diagram(), "fig1_framework.png")
    _, chosen, _ = table1(grid, summary)
    howto_section(grid, featured_run(grid, chosen))
    webapp_section(grid)
    performance_section()
    execute_pages(grid)


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

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
from .io import read_json, write_text
from .report import fmt, fmt_ci

SOURCE = REPO / "book"
#: Where the book is rendered and built: the repository's book/ by default; tests and parallel
#: grids set MELANOMA_BOOK to another folder (the sources are copied there first).
BOOK = Path(os.environ.get("MELANOMA_BOOK", SOURCE)).resolve()
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


def _syn(grid: Grid) -> str:
    return " (SYNTHETIC)" if grid.is_synthetic else ""


# ----------------------------------------------------------------------------- pieces

def banner(grid: Grid) -> str:
    if grid.is_synthetic:
        return ("```{warning}\n**SYNTHETIC DATA.** Every number and image in this build comes from "
                "procedurally generated replicas of the datasets (`melanoma synth`), not from patients. "
                "It demonstrates the pipeline end to end; it says nothing about real melanoma detection. "
                f"Grid: `{grid.path.name}`.\n```\n")
    return (f"```{{note}}\nBuilt from the real releases under `{grid.data}` with grid "
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
    if frames:
        fig = sample_grid(grid.work, pd.concat(frames, ignore_index=True), per_class=8, seed=0,
                          title=f"sample images{_syn(grid)}")
        _save(fig, "samples.png")


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


def table1(grid: Grid, summary: pd.DataFrame, top: int = 3) -> pd.DataFrame:
    """Per evaluation set, the ``top`` runs by precision before rejection (the paper's ranking)."""
    s = summary[summary["phase"].isin(["before", "after"])]
    out, chosen = [], []
    for es in grid.eval_sets:
        b = s[(s["eval_set"] == es) & (s["phase"] == "before")].sort_values(
            ["precision", "auc"], ascending=False, na_position="last").head(top)
        for _, r in b.iterrows():
            a = s[(s["run_id"] == r["run_id"]) & (s["eval_set"] == es) & (s["phase"] == "after")].iloc[0]
            row = {"Test set": get(es).name, "Network": r["model"], "Train sets": f"[{r['train']}]"}
            for m, label in TABLE1_METRICS:
                row[f"{label} (before / after)"] = _both(r[m], a[m])
            row["Threshold"] = "–" if pd.isna(a["threshold"]) else f"{a['threshold']:.2f}"
            row["Coverage"] = fmt(a["coverage"])
            row["Run"] = f"`{r['run_id']}`"
            out.append(row)
            chosen.append((es, r["run_id"]))
    return pd.DataFrame(out), chosen


def table3(summary: pd.DataFrame, chosen) -> pd.DataFrame:
    rows = []
    for es, rid in chosen:
        b = summary[(summary["run_id"] == rid) & (summary["eval_set"] == es) & (summary["phase"] == "before")].iloc[0]
        a = summary[(summary["run_id"] == rid) & (summary["eval_set"] == es) & (summary["phase"] == "after")].iloc[0]
        rows.append({"Test set": get(es).name, "Network": b["model"], "Train sets": f"[{b['train']}]",
                     "Brier before": fmt_ci(b["brier"], b["brier_low"], b["brier_high"], pct=False),
                     "ECE before": fmt_ci(b["ece"], b["ece_low"], b["ece_high"], pct=False),
                     "Brier after": fmt_ci(a["brier"], a["brier_low"], a["brier_high"], pct=False),
                     "ECE after": fmt_ci(a["ece"], a["ece_low"], a["ece_high"], pct=False),
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


def figures(grid: Grid, summary: pd.DataFrame, chosen) -> None:
    from . import plots

    syn = _syn(grid)
    # the run of Figs. 3 and 5 and the risk–coverage curves: the grid names it, else the top run
    # (by precision) of the first evaluation set
    rid = grid.figures.get("rejection") or (chosen[0][1] if chosen else None)
    rej = _rej(grid, rid) if rid else {}
    blocks = {get(es).name: blk for es, blk in (rej.get("eval_sets") or {}).items()
              if isinstance(blk, dict) and not blk.get("skipped")}

    # Fig. 3: accuracy of the retained vs the threshold, on each evaluation set's validation split
    tables = {name: blk["val_search"] for name, blk in blocks.items() if blk.get("val_search")}
    if tables:
        _save(plots.accuracy_vs_threshold(tables, title=f"validation, {rid}{syn}"),
              "fig3_accuracy_vs_threshold.png")
        write_text(GEN / "fig3_accuracy_vs_threshold.md", _figure_md(
            "fig3_accuracy_vs_threshold.png", "fig3",
            f"**Fig. 3.** Accuracy of the retained validation predictions vs the entropy threshold, run "
            f"`{rid}`, one line per evaluation set; the dot marks the threshold chosen (mean of ECE and "
            "Brier minimal on the retained, at least the minimum coverage)."))
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

    # Fig. 5 and risk–coverage, same run
    recs = blocks
    rcs = {name: blk["curves"]["risk_coverage"] for name, blk in blocks.items()
           if (blk.get("curves") or {}).get("risk_coverage")}
    if recs:
        _save(plots.misdiagnoses_bar(recs, title=f"false diagnoses, {rid}{syn}"), "fig5_misdiagnoses.png")
        tot = sum(int(b.get("fp_prevented", 0)) + int(b.get("fn_prevented", 0)) for b in recs.values())
        fnb = sum(int(b.get("fn", b.get("fn_before", 0))) for b in recs.values())
        fnp = sum(int(b.get("fn_prevented", 0)) for b in recs.values())
        write_text(GEN / "fig5_misdiagnoses.md", _figure_md(
            "fig5_misdiagnoses.png", "fig5",
            f"**Fig. 5.** False positives and false negatives on each test split before and after "
            f"rejection, run `{rid}`: {tot} misdiagnoses moved to *Uncertain*, "
            f"{fnp} of {fnb} false negatives ({fmt(fnp / fnb) if fnb else '–'})."))
    else:
        write_text(GEN / "fig5_misdiagnoses.md", "_No rejection results._\n")
    if rcs:
        _save(plots.risk_coverage(rcs, title=f"risk–coverage, {rid}{syn}"), "fig_risk_coverage.png")
        write_text(GEN / "fig_risk_coverage.md", _figure_md(
            "fig_risk_coverage.png", "fig-rc",
            f"Selective risk (error rate of the retained) vs coverage when rejecting by entropy, run `{rid}`, "
            "test splits."))
    else:
        write_text(GEN / "fig_risk_coverage.md", "_No risk–coverage curves._\n")


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
          "| model | training combination | input | ONNX size | entropy threshold |",
          "|---|---|---|---|---|",
          f"| `{mj.get('model')}` | [{mj.get('train_label', mj.get('train', ''))}] | "
          f"{mj.get('input_size', '')} px | {mj['onnx']['bytes'] / 1024:.0f} KB | "
          f"{mj.get('threshold', float('nan')):.3f} bits ({mj.get('threshold_source', '')}) |\n"]
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
    t1, chosen = table1(grid, summary)
    syn_note = "\n_All numbers: SYNTHETIC data._\n" if grid.is_synthetic else ""
    write_text(GEN / "table1.md", (_md_table(t1) if len(t1) else "_No results._\n") + syn_note)
    t3 = table3(summary, chosen)
    write_text(GEN / "table3.md", (_md_table(t3) if len(t3) else "_No results._\n") + syn_note)
    write_text(GEN / "table2.md", table2(summary) + syn_note)
    if grid.name == "paper":  # the paper's own numbers beside ours
        for key, text in paper_tables().items():
            f = GEN / f"{key}.md"
            write_text(f, f.read_text() + text)
    figures(grid, summary, chosen)
    write_text(GEN / "aurc_table.md", aurc_table(summary))
    write_text(GEN / "runs_table.md", runs_table(runs))
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

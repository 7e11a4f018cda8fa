"""The main job: a grid (default: the embedded synthetic demo) from nothing to the built book.

``make demo`` / ``melanoma demo`` run Snakemake on ``params/demo.yaml`` (all cores, keep going,
redo incomplete jobs), then print the per-dataset counts, the leakage table and the headline
results, each read back from the workflow's outputs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from .grid import REPO, load_grid


def _show(title: str, df: pd.DataFrame) -> None:
    print(f"\n== {title}")
    with pd.option_context("display.width", 200, "display.max_columns", 50, "display.max_colwidth", 40):
        print(df.to_string(index=False))


def snakemake_cmd(grid_file: str | Path, cores: int | None = None, extra: list[str] = ()) -> list[str]:
    exe = Path(sys.executable).parent / "snakemake"
    return [str(exe), "-s", str(REPO / "workflow" / "Snakefile"), "--config", f"grid={grid_file}",
            "--cores", str(cores or os.cpu_count() or 1), "--keep-going", "--rerun-incomplete",
            "--printshellcmds", *extra]


def unlock(grid_file: str | Path) -> None:
    """Remove the lock a killed Snakemake leaves behind (it refuses to start otherwise).
    Only safe when no other Snakemake is working on the same grid, as ``melanoma demo`` assumes."""
    cmd = snakemake_cmd(grid_file, 1)[:5] + ["--unlock", "--quiet"]
    subprocess.run(cmd, cwd=REPO, capture_output=True)


def run_grid(grid_file: str | Path = "params/demo.yaml", cores: int | None = None,
             extra: list[str] = ()) -> int:
    unlock(grid_file)
    cmd = snakemake_cmd(grid_file, cores, extra)
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=REPO).returncode


def run_demo(grid_file: str | Path = "params/demo.yaml", cores: int | None = None) -> dict:
    from .datasets.combine import leakage_report
    from .datasets.ingest import counts_table
    from .io import read_json

    t0 = time.perf_counter()
    rc = run_grid(grid_file, cores)
    wall = time.perf_counter() - t0
    grid = load_grid(REPO / grid_file)
    reports = {p.parent.name: read_json(p) for p in sorted(grid.work.glob("*/report.json"))}
    if reports:
        _show(f"datasets{' (SYNTHETIC replicas)' if grid.is_synthetic else ''}: images per split (melanoma)",
              counts_table(reports))
        biggest = max(grid.combinations, key=lambda c: len(c.split("+")))
        _show("leakage: the largest combination's training pool vs the evaluation sets",
              leakage_report(grid.work, biggest, grid.eval_sets))
    summ = grid.results / "summary.parquet"
    if summ.is_file():
        s = pd.read_parquet(summ)
        s = s[s["phase"].isin(["before", "after"])]
        unflagged = s[~s["flagged"].fillna(False).astype(bool)] if "flagged" in s else s
        if "twin_of" in unflagged:  # leakage twins are controls, not contenders
            unflagged = unflagged[unflagged["twin_of"].fillna("") == ""]
        best = (unflagged[unflagged["phase"] == "before"].sort_values("precision", ascending=False)
                .groupby("eval_set").head(1)[["eval_set", "run_id"]])
        cols = ["eval_set", "run_id", "phase", "precision", "sensitivity", "accuracy", "auc", "ece", "brier",
                "threshold", "coverage"]
        t = s.merge(best, on=["eval_set", "run_id"])[cols]
        _show("top run per test set by precision (unflagged rejection), before/after rejection"
              + (" (SYNTHETIC)" if grid.is_synthetic else ""), t.round(3))
        if "flagged" in s and s["flagged"].fillna(False).astype(bool).any():
            f = s[(s["phase"] == "after") & s["flagged"].fillna(False).astype(bool)]
            _show("FLAGGED rejection results (not ranked)", f[["eval_set", "run_id", "coverage", "flag_text"]])
        runs = pd.read_parquet(grid.results / "runs.parquet")
        print(f"\n{len(runs)} runs; failed: {int((runs['failed_step'] != '').sum())}")
    index = REPO / "book" / "_build" / "html" / "index.html"
    print(f"\nwall time {wall:.0f} s; book: {index if index.is_file() else 'NOT BUILT'}")
    if rc != 0:
        raise RuntimeError(f"snakemake exited with {rc}; see its log above")
    return {"wall_s": wall, "book": index}

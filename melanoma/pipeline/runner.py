"""The main job: a grid (default: the embedded synthetic demo) from nothing to the built book.

``make demo`` / ``melanoma demo`` run Snakemake on ``params/demo.yaml`` (all cores, keep going,
redo incomplete jobs), then print the per-dataset counts, the leakage table and the headline
results, each read back from the workflow's outputs.

One grid, one writer: a run holds ``results/<grid>/.melanoma.lock`` (an exclusive ``flock``,
released by the kernel when its owner dies, with the owner's pid, host and command written in it);
a second ``melanoma demo``/``retry`` on the same grid refuses to start and names the owner.
Snakemake's own lock, left behind by a killed Snakemake, is removed only when no live Snakemake
works in this repository (``--unlock`` would remove every grid's locks).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from melanoma.home import book_dir, home
from melanoma.pipeline.grid import REPO, expand, find_grid_file, load_grid
from melanoma.train.params import ParamError, did_you_mean


class GridBusyError(RuntimeError):
    """Another live process is running the same grid."""


@contextlib.contextmanager
def grid_lock(grid_file: str | Path):
    """Hold the grid's run lock for the duration; :class:`GridBusyError` if a live process has it."""
    grid = load_grid(find_grid_file(grid_file))
    lock = grid.results / ".melanoma.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    f = open(lock, "a+", encoding="utf-8")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        try:
            owner = json.loads(f.read() or "{}")
        except ValueError:
            owner = {}
        f.close()
        raise GridBusyError(
            f"grid {grid.name!r} ({grid.results}) is being run by pid {owner.get('pid', '?')} on "
            f"{owner.get('host', '?')} since {owner.get('started', '?')} ({owner.get('command', '?')}); "
            "one run per grid at a time: wait for it to finish, or stop that process and rerun") from None
    try:
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                            "command": " ".join(sys.argv)}) + "\n")
        f.flush()
        yield grid
    finally:
        with contextlib.suppress(OSError):
            f.seek(0)
            f.truncate()
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def _show(title: str, df: pd.DataFrame) -> None:
    print(f"\n== {title}")
    with pd.option_context("display.width", 200, "display.max_columns", 50, "display.max_colwidth", 40):
        print(df.to_string(index=False))


def snakemake_cmd(grid_file: str | Path, cores: int | None = None, extra: list[str] = (),
                  targets: list[str] = ()) -> list[str]:
    exe = Path(sys.executable).parent / "snakemake"
    grid_file = find_grid_file(grid_file)  # absolute: Snakemake runs in the home, not here
    return [str(exe), *targets, "-s", str(REPO / "workflow" / "Snakefile"), "--config", f"grid={grid_file}",
            "--cores", str(cores or os.cpu_count() or 1), "--keep-going", "--rerun-incomplete",
            "--printshellcmds", *extra]


def live_snakemakes(workdir: str | Path | None = None) -> list[int]:
    """Pids of live Snakemake processes whose working folder is ``workdir`` (Linux ``/proc``) and
    that take locks: one started with ``--nolock`` holds none (every cluster job's own Snakemake
    runs so; after a killed head they run on, and its stale lock must still be removable).
    ``workdir`` defaults to the home, where ``melanoma demo`` runs Snakemake."""
    workdir = os.path.realpath(workdir or home())
    pids = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
            if not any(os.path.basename(a.decode(errors="replace")) == "snakemake" for a in argv[:3]) \
                    and b"snakemake" not in argv[1:3]:
                continue
            if b"--nolock" in argv:
                continue
            if os.path.realpath(d / "cwd") == workdir and int(d.name) != os.getpid():
                pids.append(int(d.name))
        except (OSError, ValueError):
            continue
    return sorted(pids)


def unlock(grid_file: str | Path) -> bool:
    """Remove the lock a killed Snakemake leaves behind (it refuses to start otherwise) — only when
    no live Snakemake works in this repository: its locks are shared by every grid run from here.
    Returns whether it unlocked."""
    cmd = snakemake_cmd(grid_file, 1)[:5] + ["--unlock", "--quiet"]  # exe -s Snakefile --config grid=
    return unlock_with(cmd, home())


def unlock_with(unlock_cmd: list[str], workdir: str | Path, *, cwd: str | Path | None = None) -> bool:
    """Run ``unlock_cmd`` (a Snakemake ``--unlock``) unless a live Snakemake that takes locks works
    in ``workdir`` (Snakemake's working directory, where its ``.snakemake/locks`` are)."""
    live = live_snakemakes(workdir)
    if live:
        print(f"note: Snakemake is running in {workdir} (pid {', '.join(map(str, live))}); its locks are "
              "left alone (if it holds files of this grid, Snakemake will say the directory is locked: "
              "wait for it, then rerun)", flush=True)
        return False
    subprocess.run(unlock_cmd, cwd=cwd or home(), capture_output=True)
    return True


def run_locked(grid_file: str | Path, cmd: list[str], workdir: str | Path | None = None) -> int:
    """Run ``cmd``, a Snakemake of ``grid_file`` (e.g. through the SLURM executor), under the grid's
    run lock, as ``melanoma demo`` runs its own: a killed earlier run's Snakemake lock in ``workdir``
    is removed first (``cmd --unlock``, unless a live locking Snakemake works there). Returns its
    exit status. ``workflow/slurm/demo.sh`` (``make slurm-demo``) runs its Snakemake this way."""
    if not cmd:
        raise ValueError("no command to run")
    with grid_lock(grid_file):
        unlock_with([*cmd, "--unlock", "--quiet"], workdir or home(), cwd=Path.cwd())
        return subprocess.run(cmd).returncode


def _snakemake(grid_file: str | Path, cores: int | None, extra: list[str] = (),
               targets: list[str] = ()) -> int:
    unlock(grid_file)
    cmd = snakemake_cmd(grid_file, cores, extra, targets)
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=home()).returncode  # .snakemake/ (locks, metadata) in the home


def run_grid(grid_file: str | Path = "params/demo.yaml", cores: int | None = None,
             extra: list[str] = ()) -> int:
    """Run the grid's workflow under its run lock (a second run of the grid refuses to start)."""
    with grid_lock(grid_file):
        return _snakemake(grid_file, cores, extra)  # the default target: the book


STEPS = ("train", "calibrate", "reject")


def run_status(run_dir: Path) -> dict[str, str]:
    st = {}
    for step in STEPS:
        f = run_dir / f"status-{step}.json"
        try:
            st[step] = json.loads(f.read_text()).get("status", "?") if f.is_file() else "not run"
        except (OSError, ValueError):
            st[step] = "unreadable"
    return st


def retry(grid_file: str | Path, run_ids: list[str], *, force: bool = False, cores: int | None = None,
          targets: list[str] = ()) -> dict[str, dict]:
    """Run failed runs of a grid again, and everything after them (report, book).

    Deleting a run's status files is not enough: Snakemake does not redo a missing intermediate
    file whose downstream outputs (the summary, the book) are present and up to date. So this runs
    the workflow with ``--forcerun results/<grid>/runs/<run>/status-train.json``: that run's
    training job and every job after it run again. The training job also calibrates and rejects
    its runs (one job: the workflow has no separate calibrate/reject jobs), so a run that failed
    in any of the three steps is redone by it; a run whose training had finished (``run.json``
    with these parameters, code and data) is kept, not retrained, and only calibrated and
    rejected again. A grouped job is rerun as a whole: its other runs are kept and evaluated
    again. A run whose three steps are ``ok`` is left alone unless ``force`` (which also deletes
    its ``run.json``, so it is retrained). Returns ``{run_id: statuses before}``."""
    with grid_lock(grid_file) as grid:
        runs = expand(grid)
        bad = [r for r in run_ids if r not in runs]
        if bad:
            raise ParamError(f"{grid.path}: no run {bad[0]!r} in this grid{did_you_mean(bad[0], runs)}; "
                             f"`melanoma grid expand {grid.path}` lists them")
        todo: dict[str, dict] = {}
        for rid in dict.fromkeys(run_ids):
            d = grid.results / "runs" / rid
            st = run_status(d)
            said = ", ".join(f"{k} {v}" for k, v in st.items())
            if not force and all(v == "ok" for v in st.values()):
                print(f"{rid}: did not fail ({said}); nothing to retry (--force retrains it anyway)")
                continue
            if force:
                (d / "run.json").unlink(missing_ok=True)
            todo[rid] = st
            print(f"{rid}: was {said}; retrying", flush=True)
        if todo:
            forced = [str(grid.results / "runs" / rid / "status-train.json") for rid in todo]
            rc = _snakemake(grid_file, cores, ["--forcerun", *forced], targets=targets)
            if rc != 0:
                raise RuntimeError(f"snakemake exited with {rc}; see its log above")
            for rid in todo:
                print(f"{rid}: now {', '.join(f'{k} {v}' for k, v in run_status(grid.results / 'runs' / rid).items())}")
    return todo


def run_demo(grid_file: str | Path = "params/demo.yaml", cores: int | None = None) -> dict:
    from melanoma.data.combine import leakage_report
    from melanoma.data.ingest import counts_table
    from melanoma.io import read_json

    grid_file = find_grid_file(grid_file)  # relative: the current folder first, then the project
    t0 = time.perf_counter()
    rc = run_grid(grid_file, cores)
    wall = time.perf_counter() - t0
    grid = load_grid(grid_file)
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
    index = book_dir() / "_build" / "html" / "index.html"
    print(f"\nwall time {wall:.0f} s; book: {index if index.is_file() else 'NOT BUILT'}")
    if rc != 0:
        raise RuntimeError(f"snakemake exited with {rc}; see its log above")
    return {"wall_s": wall, "book": index}

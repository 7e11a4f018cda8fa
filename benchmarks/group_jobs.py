"""Grouped training jobs vs one job per run: what the notebook/process start-up costs, before / after.

The demo breakdown (``demo_breakdown.py``) found papermill/kernel start-up and the notebooks' own
import/plot cells to be most of each notebook step — for the training notebook, ``import torch`` +
torchvision alone take ~3 s per process. A grid's ``group: N`` packs N runs of one model into one
training job (:func:`melanoma.train.group.train_members`), so that cost is paid once per job.

This script runs the same fast-path runs (the demo's six combinations of EfficientNet-Lite0 on the
SYNTHETIC replicas, features cached beforehand) exactly as the workflow does — ``melanoma nbrun
notebooks/02_train.ipynb …`` in a fresh process with ``OMP_NUM_THREADS=1`` — two ways:

* *one job per run* (``group: 1``): one ``nbrun`` per run, ``-p params_file F``;
* *one grouped job* (``group: 6``): one ``nbrun`` with ``-p params_files F1,…,F6``.

Passes alternate (separate, grouped, grouped, separate); per variant the faster pass is reported.

    .venv/bin/python benchmarks/group_jobs.py [--work DIR] [--quick]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (puts the repository on sys.path)
from common import (REPO, command_line, json_comment, loadavg, machine_facts, md_table, parser,
                    print_table, section_header, synthetic_work, write_results)

from melanoma.io import read_json, write_yaml
from melanoma.train.params import TrainParams
from melanoma.train.recipe import train_run

COMBOS = ["E", "B", "D", "A-C,I,J", "A-E", "A-J"]
NB = REPO / "notebooks" / "02_train.ipynb"


def _nbrun(out_nb: Path, statuses: list[Path], name: str, value: str) -> float:
    cmd = [sys.executable, "-m", "melanoma.cli", "nbrun", str(NB), str(out_nb), "--status",
           *map(str, statuses), "-p", name, value]
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True,
                       text=True)
    dt = time.perf_counter() - t
    if r.returncode != 0 or any(read_json(s)["status"] != "ok" for s in statuses):
        raise SystemExit(f"nbrun failed: {r.stdout[-2000:]}{r.stderr[-2000:]}")
    return dt


def main(argv=None):
    ap = parser(__doc__)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--scale", type=float, default=0.3)
    args = ap.parse_args(argv)
    facts = machine_facts()
    work = synthetic_work(args.work, scale=args.scale)
    combos = COMBOS[:3] if args.quick else COMBOS
    tmp = Path(tempfile.mkdtemp(prefix="melanoma-bench-groups-"))
    quiet = lambda *a, **k: None  # noqa: E731

    def params(variant: str, combo: str) -> Path:
        p = TrainParams.from_dict(dict(
            work=str(work), out=str(tmp / variant / "runs" / combo.replace(",", "_")),
            model="efficientnet_lite0", weights="imagenet", freeze="backbone", train=combo,
            eval_sets=["isic2017", "isic2018", "derm7pt", "kaggle"], image_size=96, views=1,
            epochs=args.epochs, lr=0.01))
        f = tmp / variant / f"{combo.replace(',', '_')}.yaml"
        write_yaml(f, p.to_dict())
        return f

    try:
        print(f"[groups] features first (not timed): {len(combos)} warm-up runs")
        for c in combos:
            train_run(TrainParams.from_yaml(params("warmup", c)), progress=False, log=quiet)
        passes = {"one job per run": [], "one grouped job": []}
        for k, variant in enumerate(["one job per run", "one grouped job", "one grouped job", "one job per run"]):
            tag = f"p{k}"
            files = [params(tag, c) for c in combos]
            st = [f.with_suffix(".status.json") for f in files]
            if variant == "one job per run":
                dt = sum(_nbrun(f.with_suffix(".ipynb"), [s], "params_file", str(f)) for f, s in zip(files, st))
            else:
                dt = _nbrun(tmp / tag / "group.ipynb", st, "params_files", ",".join(map(str, files)))
            work_s = sum(read_json(tmp / tag / "runs" / c.replace(",", "_") / "run.json")["timings_s"]["total"]
                         for c in combos)
            passes[variant].append({"wall_s": dt, "train_run_s": work_s})
            print(f"[groups] {variant}: {dt:.1f} s ({work_s:.1f} s inside train_run)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    best = {v: min(ps, key=lambda r: r["wall_s"]) for v, ps in passes.items()}
    sep, grp = best["one job per run"], best["one grouped job"]
    n = len(combos)
    rows = [{"variant": v, "processes": n if v == "one job per run" else 1, "wall s": r["wall_s"],
             "inside train_run s": r["train_run_s"], "start-up + notebook cells s": r["wall_s"] - r["train_run_s"]}
            for v, r in best.items()]
    print_table(rows, nd=1)
    ratio = sep["wall_s"] / grp["wall_s"]
    saved = (sep["wall_s"] - sep["train_run_s"] - (grp["wall_s"] - grp["train_run_s"])) / (n - 1)
    print(f"one job per run / one grouped job = {ratio:.2f}; start-up saved per run ≈ {saved:.1f} s")
    load_end = loadavg()
    md = section_header("Grouped jobs: notebook and process start-up, before / after", facts, load_end,
                        command_line())
    md += (f"The training step of {n} fast-path runs (EfficientNet-Lite0, {', '.join(combos)}; "
           f"SYNTHETIC replicas at scale {args.scale}, 96 px, {args.epochs} epochs, features cached "
           "beforehand) run as the workflow runs it — `melanoma nbrun notebooks/02_train.ipynb` in a "
           "fresh process, `OMP_NUM_THREADS=1` — once per run (*before*: `group: 1`) and as one "
           "grouped job (*after*: `group: 6`, the demo's setting). Two passes each, alternating; the "
           "faster pass per variant.\n\n")
    md += md_table(rows, nd=1)
    md += (f"\n**One job per run / one grouped job = {sep['wall_s']:.1f} s / {grp['wall_s']:.1f} s = "
           f"{ratio:.2f}**: about {saved:.1f} s of process, kernel, import and notebook-cell "
           "start-up saved per run after the first. The work inside `train_run` is the same runs "
           "with the same results (`tests/train/test_group.py`).\n")
    md += json_comment({"passes": passes, "combos": combos, "epochs": args.epochs, "scale": args.scale})
    if not args.no_write:
        write_results("group_jobs", md, args.results)


if __name__ == "__main__":
    main()

"""Jobs a scheduler can bear: how many jobs a grid makes, and the demo's wall time, before and after
a training job calibrates and rejects its own runs (one kernel for those steps).

*Before* is ``workflow/Snakefile`` as it was in the commit before separate ``calibrate`` and
``reject`` jobs were folded into the training jobs (found with ``git log -S``; ``--before REF``
picks another), read from git into a temporary folder; *after* is the working tree's. Both are
dry-run, with the SLURM GPU profile, on ``params/paper.yaml`` (``DATA_ROOT`` a temporary folder)
and ``params/demo.yaml``: every job of the graph, and the ones a cluster would get (all but the
local rules ``all``, ``synth``, ``report``, ``book``), by kind.

``--demo``: the demo grid end to end with each Snakefile, one after the other in this invocation
(``--order`` before,after by default), each into its own temporary folders, locally on all cores,
with ``--epochs`` (default 3) for every run so that the notebook start-up is a visible share; the
wall time of each, and whether the two ``summary.parquet`` are equal (the restructuring must not
change a number). Slow (two demos): in ``run_all.py --full`` only.

    .venv/bin/python benchmarks/workflow_jobs.py [--demo] [--epochs 3] [--before REF]
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import common  # noqa: F401  (puts the repository on sys.path)
from common import (REPO, command_line, json_comment, loadavg, machine_facts, md_table, parser,
                    print_table, section_header, write_results)

LOCAL_RULES = {"all", "synth", "release_fingerprint", "report", "book"}  # the Snakefile's localrules
SNAKEMAKE = Path(sys.executable).parent / "snakemake"


def before_ref() -> str:
    """The commit just before the one that removed ``rule calibrate:`` from the Snakefile."""
    out = subprocess.run(["git", "log", "--format=%H", "-S", "rule calibrate:", "--", "workflow/Snakefile"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    if not out:
        raise SystemExit("no commit of workflow/Snakefile mentions 'rule calibrate:'; pass --before REF")
    return f"{out[0]}^"


#: Modules an older Snakefile imports, where they are since the package was laid out by stage.
MOVED = {"melanoma.datasets": "melanoma.data.registry", "melanoma.grid": "melanoma.pipeline.grid",
         "melanoma.book": "melanoma.report.book", "melanoma.cluster": "melanoma.pipeline.cluster",
         "melanoma.datasets.fingerprint": "melanoma.data.fingerprint"}


def snakefile_at(ref: str, dst: Path) -> Path:
    """``workflow/Snakefile`` of ``ref`` as ``dst/workflow/Snakefile``, with ``dst/notebooks`` linked
    to the repository's (the Snakefile finds its notebooks beside its folder). Its imports are
    pointed at where the modules are now (:data:`MOVED`): it runs with today's package."""
    text = subprocess.run(["git", "show", f"{ref}:workflow/Snakefile"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout
    for old in sorted(MOVED, key=len, reverse=True):
        text = re.sub(rf"^(from|import) {re.escape(old)}(?=[ \n])", rf"\1 {MOVED[old]}", text, flags=re.M)
    (dst / "workflow").mkdir(parents=True, exist_ok=True)
    (dst / "workflow" / "Snakefile").write_text(text)
    if not (dst / "notebooks").exists():
        (dst / "notebooks").symlink_to(REPO / "notebooks")
    return dst / "workflow" / "Snakefile"


def kind(rule: str) -> str:
    return "train (grouped)" if rule.startswith("train_") else rule


def dry_run(snakefile: Path, grid: Path, tmp: Path) -> dict:
    env = dict(os.environ, WORK=str(tmp / "work"), RESULTS=str(tmp / "results"), MELANOMA_BOOK=str(tmp / "book"))
    env.pop("DATA_ROOT", None)
    if grid.stem == "paper":  # real data only (DATA_ROOT would turn the synthetic demo into real data too)
        env["DATA_ROOT"] = str(tmp / "data")
    t0 = time.perf_counter()
    r = subprocess.run([str(SNAKEMAKE), "-s", str(snakefile), "-n", "--directory", str(tmp),
                        "--config", f"grid={grid}", "--workflow-profile", str(REPO / "workflow" / "profiles" / "slurm")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise SystemExit(f"dry run of {snakefile} on {grid} failed:\n{r.stderr[-3000:]}")
    rules = re.findall(r"^(?:local)?rule (\w+):$", r.stdout, re.M)
    by_kind = Counter(kind(x) for x in rules)
    return {"jobs": len(rules), "submitted": sum(1 for x in rules if x not in LOCAL_RULES),
            "by_kind": dict(sorted(by_kind.items())), "seconds": time.perf_counter() - t0}


def demo_grid(dst: Path, epochs: int) -> Path:
    from melanoma.io import read_yaml, write_yaml

    g = read_yaml(REPO / "params" / "demo.yaml")
    g["work"], g["results"] = str(dst / "work"), str(dst / "results")
    g["train"] = {**g.get("train", {}), "epochs": epochs}
    over = {m: dict(v) for m, v in (g.get("model_overrides") or {}).items()}
    for v in over.values():
        if "epochs" in v:
            v["epochs"] = epochs
    g["model_overrides"] = over
    write_yaml(dst / "grid.yaml", g)
    return dst / "grid.yaml"


def run_demo(snakefile: Path, dst: Path, epochs: int, log=print) -> dict:
    dst.mkdir(parents=True)
    grid = demo_grid(dst, epochs)
    env = dict(os.environ, MELANOMA_BOOK=str(dst / "book"), PYTHONUNBUFFERED="1")
    for k in ("WORK", "RESULTS", "DATA_ROOT"):
        env.pop(k, None)
    cmd = [str(SNAKEMAKE), "-s", str(snakefile), "--directory", str(dst), "--config", f"grid={grid}",
           "--cores", str(os.cpu_count() or 1), "--keep-going", "--rerun-incomplete"]
    log("[demo] $ " + " ".join(cmd))
    load0 = loadavg()
    t0 = time.perf_counter()
    with open(dst / "snakemake.out", "w") as f:
        rc = subprocess.run(cmd, cwd=dst, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    out = (dst / "snakemake.out").read_text(errors="replace")
    m = re.findall(r"(\d+) of (\d+) steps", out)
    nb = {}
    for step in ("calibrate", "reject"):
        secs = [float(__import__("json").loads(f.read_text()).get("seconds") or 0)
                for f in (dst / "results" / "runs").glob(f"*/status-{step}.json")]
        nb[step] = {"n": len(secs), "s": sum(secs)}
    log(f"[demo] {dst.name}: rc {rc}, {wall:.0f} s")
    return {"rc": rc, "wall_s": wall, "jobs": int(m[-1][1]) if m else None, "notebooks": nb,
            "load_start": load0, "load_end": loadavg()}


def main(argv=None):
    ap = parser(__doc__)
    ap.add_argument("--before", default=None, help="git ref of the Snakefile before (default: found with git log -S)")
    ap.add_argument("--demo", action="store_true", help="also run the demo grid end to end with each Snakefile")
    ap.add_argument("--epochs", type=int, default=3, help="(--demo) epochs of every run")
    ap.add_argument("--order", default="before,after", help="(--demo) the order of the two demos")
    args = ap.parse_args(argv)
    facts = machine_facts()
    ref = args.before or before_ref()
    commit = subprocess.run(["git", "rev-parse", "--short", ref], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix="melanoma-bench-jobs-"))
    out = {"before_ref": commit, "dry": {}, "demo": {}}
    try:
        files = {"before": snakefile_at(ref, tmp / "before_src"), "after": REPO / "workflow" / "Snakefile"}
        rows = []
        for grid in ("paper", "demo"):
            for which, sf in files.items():
                d = dry_run(sf, REPO / "params" / f"{grid}.yaml", tmp / f"dry_{grid}_{which}")
                out["dry"][f"{grid}/{which}"] = d
                rows.append({"grid": grid, "Snakefile": which, "jobs": d["jobs"], "SLURM submissions": d["submitted"],
                             "by kind": ", ".join(f"{k} {v:,}" for k, v in d["by_kind"].items())})
        print_table(rows)
        if args.demo:
            for which in args.order.split(","):
                out["demo"][which] = run_demo(files[which], tmp / f"demo_{which}", args.epochs)
            import pandas as pd

            a, b = (pd.read_parquet(tmp / f"demo_{w}" / "results" / "summary.parquet") for w in ("before", "after"))
            try:
                pd.testing.assert_frame_equal(a, b)
                out["demo_equal"] = True
            except AssertionError as e:
                out["demo_equal"] = False
                out["demo_difference"] = str(e)[:500]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load_end = loadavg()

    p, pb = out["dry"]["paper/after"], out["dry"]["paper/before"]
    md = section_header("Jobs per grid: calibrate and reject inside the training jobs", facts, load_end,
                        command_line())
    md += (f"*Before*: `workflow/Snakefile` of commit `{commit}` (a calibrate job and a reject job per run); "
           "*after*: the training job (rule `train`, or `train_<model>__group<k>` for runs trained together) "
           "also calibrates and rejects each of its runs, in one kernel after the training notebook. "
           "Dry runs with `workflow/profiles/slurm`; *SLURM submissions* = jobs that are not local rules "
           f"({', '.join(f'`{r}`' for r in sorted(LOCAL_RULES))} run in the head process).\n\n")
    md += md_table(rows, ["grid", "Snakefile", "jobs", "SLURM submissions", "by kind"])
    md += (f"\n**The paper grid: {pb['jobs']:,} jobs → {p['jobs']:,}; SLURM submissions "
           f"{pb['submitted']:,} → {p['submitted']:,}** (measured in this run).\n")
    if out["demo"]:
        bd, ad = out["demo"]["before"], out["demo"]["after"]
        drows = []
        for which in args.order.split(","):
            d = out["demo"][which]
            drows.append({"Snakefile": which, "wall s": d["wall_s"], "exit": d["rc"], "Snakemake jobs": d["jobs"],
                          "calibrate notebooks s": d["notebooks"]["calibrate"]["s"],
                          "reject notebooks s": d["notebooks"]["reject"]["s"],
                          "load at start": "/".join(map(str, d["load_start"])),
                          "load at end": "/".join(map(str, d["load_end"]))})
        md += (f"\n**The demo end to end** (`params/demo.yaml` with {args.epochs} epochs for every run, "
               f"locally on {os.cpu_count()} cores, from nothing to the book; {args.order.replace(',', ' then ')}, "
               "each into its own temporary folders): *calibrate/reject notebooks s* = the papermill steps' "
               "seconds summed over the runs (`status-*.json`; kernel start-up included where a step had its "
               "own kernel).\n\n")
        md += md_table(drows, list(drows[0]))
        md += (f"\nWall **{bd['wall_s']:.0f} s → {ad['wall_s']:.0f} s (after / before = "
               f"{ad['wall_s'] / bd['wall_s']:.2f})**; the two summaries are "
               f"{'equal' if out.get('demo_equal') else 'NOT equal: ' + out.get('demo_difference', '')}.\n")
    md += json_comment(out)
    print(md)
    if not args.no_write:
        write_results("workflow_jobs", md, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where the demo's time goes: per Snakemake rule, in-notebook work vs papermill/kernel overhead.

Default: analyse an existing demo (``results/demo`` and ``work``; no new runs) from what the
workflow leaves behind:

* ``results/<grid>/ingest/*.status.json`` and ``runs/*/status-*.json``: ``seconds`` = wall of the
  papermill step (kernel start, every cell, saving the executed notebook);
* the executed notebooks' ``papermill.duration`` per cell: the cell that calls the package
  (``ingest_dataset`` / ``train_run`` / ``calibrate_run`` / ``reject_run``) is the *work*; for
  training the work is also ``run.json`` ``timings_s`` (data, features, train epochs, predict);
* ``WORK/features/*/*/done.json`` ``seconds`` (the features rule's extraction);
* ``.snakemake/log/*.snakemake.log`` (when present): every job's start and finish (1-s
  resolution) — the whole job including its Python start-up, for the rules without a status file
  (synth, features, report, export_web, book) — and the invocation's elapsed time.

Overhead of a notebook step = status seconds − work seconds, split into *kernel + papermill*
(status − sum of cell durations) and *other cells* (imports, plots, tables).

``--run``: run the demo grid end to end three times into a temporary folder through Snakemake —
as it is; with ``fast: false`` for efficientnet_lite0 (the loop path: no feature cache); and as it
is but with ``group: 1`` (one training job per run: the before of grouped jobs) — all with 3
epochs so they are short and comparable — then analyse them and report the ratios. Slow
(minutes): not part of ``make bench`` unless ``run_all.py --full``.

    .venv/bin/python benchmarks/demo_breakdown.py [--results results/demo --work work]
    .venv/bin/python benchmarks/demo_breakdown.py --run [--scale 1.0] [--epochs 3] [--keep DIR]
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import common  # noqa: F401  (puts the repository on sys.path)
from common import (REPO, command_line, json_comment, loadavg, machine_facts, md_table, parser,
                    print_table, section_header, write_results)

WORK_CALL = {"ingest": "ingest_dataset", "train": "train_run", "calibrate": "calibrate_run",
             "reject": "reject_run"}
NOTEBOOK = {"train": "02_train.ipynb", "calibrate": "03_calibrate.ipynb", "reject": "04_reject.ipynb"}


# ------------------------------------------------------------------------------------ sources

def _read(p: Path):
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def notebook_cells(nb: Path, step: str) -> tuple[float | None, float | None]:
    """(sum of cell durations, duration of the cell calling the package's work) of an executed notebook."""
    d = _read(nb)
    if not d:
        return None, None
    total, work = 0.0, None
    for c in d.get("cells", []):
        if c.get("cell_type") != "code":
            continue
        dur = (c.get("metadata", {}).get("papermill", {}) or {}).get("duration") or 0.0
        total += dur
        src = c.get("source", "")
        src = "".join(src) if isinstance(src, list) else src
        # the work cell calls the function at the start of a line (the notebooks' fallback cells
        # that make an example run call it indented, under an `if`)
        if re.search(rf"^[^\s#].*\b{WORK_CALL[step]}\(", src, re.M):
            work = (work or 0.0) + dur
    return total, work


def parse_snakemake_logs(logs: list[Path]) -> dict:
    """Jobs (rule, key, start, end) of the given Snakemake logs; the last finished instance of each
    (rule, key) wins (a rerun that redid a job replaces it); plus each log's elapsed seconds."""
    ts_re = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
    jobs, elapsed = {}, []
    for log in sorted(logs):
        started: dict[str, dict] = {}
        last_ts, cur = None, None
        for line in log.read_text(errors="replace").splitlines():
            m = ts_re.match(line.strip())
            if m:
                last_ts = dt.datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
                cur = None
                continue
            m = re.match(r"^(?:local)?rule (\w+):$", line.strip())
            if m and last_ts is not None:
                cur = {"rule": m.group(1), "start": last_ts, "key": ""}
                continue
            if cur is not None:
                s = line.strip()
                if s.startswith("output:"):
                    cur["key"] = s[len("output:"):].strip()
                elif s.startswith("jobid:"):
                    started[s.split(":", 1)[1].strip()] = cur
            m = re.match(r"^Finished jobid: (\d+) \(Rule: (\w+)\)", line.strip())
            if m and m.group(1) in started and last_ts is not None:
                j = started.pop(m.group(1))
                j["end"] = last_ts
                j["seconds"] = (last_ts - j["start"]).total_seconds()
                j["log"] = log.name
                jobs[(j["rule"], j["key"])] = j
            m = re.match(r"^Elapsed time: (\d+):(\d\d):(\d\d(?:\.\d+)?)", line.strip())
            if m:
                h, mi, s = m.groups()
                elapsed.append({"log": log.name, "seconds": int(h) * 3600 + int(mi) * 60 + float(s)})
    return {"jobs": list(jobs.values()), "elapsed": elapsed}


def find_logs(log_dir: Path, grid_hint: str | None) -> list[Path]:
    """The grid's Snakemake logs from the latest one that ran ``synth`` (a run from nothing) on;
    earlier logs belong to older results that were since rebuilt."""
    if not log_dir.is_dir():
        return []
    out = []
    for p in sorted(log_dir.glob("*.snakemake.log")):
        text = p.read_text(errors="replace")
        if grid_hint is None or grid_hint in text[:3000]:
            out.append((p, bool(re.search(r"^(?:local)?rule synth:$", text, re.M))))
    starts = [i for i, (_, fresh) in enumerate(out) if fresh]
    return [p for p, _ in out[(starts[-1] if starts else 0):]]


# ------------------------------------------------------------------------------------ analysis

def analyse(results: Path, work: Path, log_dir: Path | None = None, grid_hint: str | None = None) -> dict:
    """Per-step records and per-rule totals of one grid's results folder."""
    steps = []
    for st in sorted((results / "ingest").glob("*.status.json")):
        ds = st.name.split(".")[0]
        s = _read(st) or {}
        cells, work_cell = notebook_cells(st.with_name(f"{ds}.ipynb"), "ingest")
        rep = _read(work / ds / "report.json") or {}
        steps.append({"rule": "ingest", "item": ds, "status": s.get("status"),
                      "status_s": s.get("seconds"), "cells_s": cells,
                      "work_s": rep.get("seconds", work_cell), "work_cell_s": work_cell})
    train_parts = defaultdict(float)
    shared: dict[str, dict] = {}  # a grouped training job: one notebook (and status time) for its runs
    for run in sorted(p for p in (results / "runs").glob("*") if p.is_dir()):
        for step, nb in NOTEBOOK.items():
            st = run / f"status-{step}.json"
            if not st.is_file():
                continue
            s = _read(st) or {}
            nb_path = Path(s.get("notebook") or run / nb)
            group = nb_path.parent.name == "groups"
            cells, work_cell = (None, None) if group and str(nb_path) in shared else notebook_cells(nb_path, step)
            work_s = work_cell
            if step == "train":
                rj = _read(run / "run.json") or {}
                t = rj.get("timings_s") or {}
                if t:
                    work_s = t.get("total", work_cell)
                    for k, v in t.items():
                        if k != "total":
                            train_parts[k] += v
                    train_parts["n_runs"] += 1
                    train_parts["fast_runs"] += rj.get("path") == "fast"
            if group and str(nb_path) in shared:  # the job's other runs: only their work adds up
                shared[str(nb_path)]["work_s"] = (shared[str(nb_path)]["work_s"] or 0.0) + (work_s or 0.0)
                shared[str(nb_path)]["item"] += f",{run.name}"
                continue
            steps.append({"rule": step, "item": run.name, "status": s.get("status"),
                          "status_s": s.get("seconds") if s.get("status") != "skipped" else None,
                          "cells_s": cells, "work_s": work_s, "work_cell_s": work_cell})
            if group:
                shared[str(nb_path)] = steps[-1]
    feats = []
    for done in sorted((work / "features").glob("*/*/done.json")):
        d = _read(done) or {}
        feats.append({"model": done.parent.parent.name, "dataset": done.parent.name,
                      "seconds": d.get("seconds", 0.0), "images": d.get("images_encoded", 0)})
    sm = parse_snakemake_logs(find_logs(log_dir, grid_hint)) if log_dir else {"jobs": [], "elapsed": []}

    # per rule
    by_rule: dict[str, dict] = {}
    for rule in ("ingest", "train", "calibrate", "reject"):
        ss = [s for s in steps if s["rule"] == rule and s["status_s"] is not None]
        if not ss:
            continue
        st = sum(s["status_s"] for s in ss)
        wk = sum(s["work_s"] or 0.0 for s in ss)
        cl = sum(s["cells_s"] or 0.0 for s in ss)
        by_rule[rule] = {"jobs": len(ss), "status_s": st, "work_s": wk,
                         "kernel_papermill_s": st - cl, "other_cells_s": cl - wk,
                         "overhead_s": st - wk}
    if feats:
        by_rule["features"] = {"jobs": len(feats), "work_s": sum(f["seconds"] for f in feats),
                               "images": sum(f["images"] for f in feats)}
    for j in sm["jobs"]:
        if j["rule"] == "all":
            continue
        rule = "train" if j["rule"].startswith("train_") else j["rule"]  # grouped jobs: train_<group>
        r = by_rule.setdefault(rule, {"jobs": 0})
        r["snakemake_s"] = r.get("snakemake_s", 0.0) + j["seconds"]
        r["snakemake_jobs"] = r.get("snakemake_jobs", 0) + 1
    return {"results": str(results), "work": str(work), "steps": steps, "features": feats,
            "by_rule": by_rule, "train_parts": dict(train_parts), "snakemake": {
                "elapsed": sm["elapsed"], "jobs_s": sum(j["seconds"] for j in sm["jobs"]),
                "n_jobs": len(sm["jobs"])}}


RULE_ORDER = ["synth", "ingest", "features", "train", "calibrate", "reject", "report", "export_web", "book"]


def rule_table(a: dict) -> list[dict]:
    rows = []
    jobs_total = sum(r.get("snakemake_s", 0.0) for r in a["by_rule"].values()) or None
    for rule in RULE_ORDER + sorted(set(a["by_rule"]) - set(RULE_ORDER)):
        r = a["by_rule"].get(rule)
        if not r:
            continue
        st, wk = r.get("status_s"), r.get("work_s")
        sj = r.get("snakemake_s")
        rows.append({"rule": rule, "jobs": r.get("snakemake_jobs", r.get("jobs")),
                     "Snakemake job s": sj,
                     "share of job time": f"{sj / jobs_total * 100:.0f} %" if sj and jobs_total else None,
                     "notebook step s": st, "work s": wk,
                     "kernel+papermill s": r.get("kernel_papermill_s"),
                     "other cells s": r.get("other_cells_s"), "overhead s": r.get("overhead_s"),
                     "overhead share of step": f"{r['overhead_s'] / st * 100:.0f} %" if st else None})
    return rows


def totals(a: dict) -> dict:
    nb = [r for r in a["by_rule"].values() if "status_s" in r]
    status = sum(r["status_s"] for r in nb)
    overhead = sum(r["overhead_s"] for r in nb)
    el = a["snakemake"]["elapsed"]
    wall = sum(e["seconds"] for e in el) if el else None
    jobs = a["snakemake"]["jobs_s"] or None
    return {"notebook_steps_s": status, "notebook_overhead_s": overhead,
            "notebook_overhead_share_of_steps": overhead / status if status else None,
            "snakemake_elapsed_s": wall, "snakemake_job_s": jobs,
            "notebook_overhead_share_of_wall": overhead / wall if wall else None,
            "n_notebooks": sum(r["jobs"] for r in nb)}


def report(a: dict, title: str) -> str:
    rows = rule_table(a)
    t = totals(a)
    print(f"\n== {title}")
    print_table(rows, nd=1)
    tp = a["train_parts"]
    md = md_table(rows, nd=1)
    if tp:
        md += (f"\nInside the {int(tp.get('n_runs', 0))} training runs ({int(tp.get('fast_runs', 0))} on "
               f"the fast path), `run.json` timings: data {tp.get('data', 0):.1f} s, features (gather "
               f"or extraction) {tp.get('features', 0):.1f} s, training epochs (heads or loop) "
               f"{tp.get('train', 0):.1f} s, predictions {tp.get('predict', 0):.1f} s.\n")
    md += (f"\nNotebook steps: {t['n_notebooks']} notebooks, {t['notebook_steps_s']:.1f} s in all, of "
           f"which **{t['notebook_overhead_s']:.1f} s ({(t['notebook_overhead_share_of_steps'] or 0) * 100:.0f} %) "
           "is papermill/kernel overhead and notebook cells other than the work**")
    if t["snakemake_elapsed_s"]:
        md += (f"; that is **{t['notebook_overhead_share_of_wall'] * 100:.0f} % of the Snakemake wall time** "
               f"({t['snakemake_elapsed_s']:.0f} s over {len(a['snakemake']['elapsed'])} invocation(s); "
               f"jobs {t['snakemake_job_s']:.0f} s summed).\n")
    else:
        md += ".\n"
    return md


# ------------------------------------------------------------------------------------ --run

def variant_grid(src: Path, dst_dir: Path, *, name: str, fast_lite0: bool, epochs: int,
                 scale: float | None, models: list[str] | None = None,
                 combos: list[str] | None = None, group: int | None = None) -> Path:
    from melanoma.io import read_yaml, write_yaml

    g = read_yaml(src)
    if models:
        g["models"] = [m for m in g["models"] if m in models]
        g["model_overrides"] = {m: v for m, v in (g.get("model_overrides") or {}).items() if m in models}
    if combos:
        g["combinations"] = combos
    g["name"] = f"{g['name']}_{name}"
    g["work"] = str(dst_dir / "work")
    g["results"] = str(dst_dir / "results")
    if scale is not None:
        g["synthetic"] = {**(g.get("synthetic") or {}), "scale": scale}
    g["train"] = {**g.get("train", {}), "epochs": epochs}
    if group is not None:
        g["group"] = group
    over = {m: dict(v) for m, v in (g.get("model_overrides") or {}).items()}
    for m, v in over.items():
        if "epochs" in v:
            v["epochs"] = epochs
    if not fast_lite0:
        over.setdefault("efficientnet_lite0", {})["fast"] = False
    g["model_overrides"] = over
    out = dst_dir / "grid.yaml"
    write_yaml(out, g)
    return out


def run_variant(grid_file: Path, dst_dir: Path, log=print) -> dict:
    from melanoma.pipeline.runner import snakemake_cmd

    env = dict(os.environ, MELANOMA_BOOK=str(dst_dir / "book"))
    env.pop("WORK", None), env.pop("RESULTS", None), env.pop("DATA_ROOT", None)
    cmd = snakemake_cmd(grid_file, extra=["--directory", str(dst_dir)])
    log("[demo] $ " + " ".join(cmd))
    load0 = loadavg()
    t0 = time.perf_counter()
    with open(dst_dir / "snakemake.out", "w") as f:
        rc = subprocess.run(cmd, cwd=dst_dir, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    log(f"[demo] {grid_file.parent.name}: rc {rc}, {wall:.0f} s")
    return {"rc": rc, "wall_s": wall, "load_start": load0, "load_end": loadavg()}


def run_both(args) -> dict:
    base = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="melanoma-bench-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    src = Path(args.grid) if Path(args.grid).is_absolute() else REPO / args.grid
    out = {"grid": str(src), "epochs": args.epochs, "scale": args.scale, "models": args.models,
           "combos": args.combos, "variants": {}}
    try:
        for name, fast, group in (("cache", True, None), ("loop", False, None), ("ungrouped", True, 1)):
            d = base / name
            if d.exists():
                shutil.rmtree(d)
            d.mkdir(parents=True)
            gf = variant_grid(src, d, name=name, fast_lite0=fast, epochs=args.epochs, scale=args.scale,
                              models=args.models.split(",") if args.models else None,
                              combos=args.combos.split(";") if args.combos else None, group=group)
            r = run_variant(gf, d)
            r["analysis"] = analyse(d / "results", d / "work", d / ".snakemake" / "log")
            out["variants"][name] = r
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    c, lp, ug = out["variants"]["cache"], out["variants"]["loop"], out["variants"]["ungrouped"]
    out["ratio_cache_over_loop"] = c["wall_s"] / lp["wall_s"]
    out["ratio_ungrouped_over_grouped"] = ug["wall_s"] / c["wall_s"]
    return out


# ------------------------------------------------------------------------------------ main

def main(argv=None):
    ap = parser(__doc__)
    ap.add_argument("--demo-results", default=str(REPO / "results" / "demo"),
                    help="results folder of the grid to analyse (default results/demo)")
    ap.add_argument("--demo-work", default=str(REPO / "work"), help="its work folder (default work)")
    ap.add_argument("--snakemake-logs", default=str(REPO / ".snakemake" / "log"))
    ap.add_argument("--grid", default="params/demo.yaml", help="grid file (--run; and the log filter)")
    ap.add_argument("--run", action="store_true",
                    help="run the demo three times (cache / no cache / cache with one job per run): slow")
    ap.add_argument("--epochs", type=int, default=3, help="(--run) epochs of every run")
    ap.add_argument("--scale", type=float, default=None, help="(--run) synthetic scale (default: the grid's)")
    ap.add_argument("--models", default=None, help="(--run) only these models of the grid (comma list)")
    ap.add_argument("--combos", default=None, help="(--run) only these combinations (';' separated)")
    ap.add_argument("--keep", default=None, help="(--run) keep the two runs in this folder")
    args = ap.parse_args(argv)
    facts = machine_facts()
    data = {}
    body = ""
    if args.run:
        r = run_both(args)
        data["run"] = {k: v for k, v in r.items() if k != "variants"}
        data["run"]["variants"] = {k: {kk: vv for kk, vv in v.items() if kk != "analysis"}
                                   | {"by_rule": v["analysis"]["by_rule"],
                                      "train_parts": v["analysis"]["train_parts"],
                                      "totals": totals(v["analysis"])}
                                   for k, v in r["variants"].items()}
        c, lp = r["variants"]["cache"], r["variants"]["loop"]
        at_scale = "" if r["scale"] is None else f" at scale {r['scale']}"
        if r.get("models") or r.get("combos"):
            at_scale += (f"; restricted to models {r.get('models') or 'all'} and combinations "
                         f"{r.get('combos') or 'all'}")
        body += (f"**End to end, `--run`**: `{Path(r['grid']).name}` from nothing (SYNTHETIC replicas"
                 f"{at_scale}"
                 f" → ingest → features → train → calibrate → reject → report → book) with "
                 f"{r['epochs']} epochs for every run, three times in one invocation, each into its own "
                 "temporary work/results/book folders: *with cache* as the grid is (efficientnet_lite0 "
                 "on the fast path), *without* with `fast: false` for efficientnet_lite0 (the loop path; "
                 "the MeshNet run is the loop path in both).\n\n")
        body += md_table([
            {"variant": "with cache", "wall s": c["wall_s"], "exit": c["rc"],
             "load at start": "/".join(map(str, c["load_start"])), "load at end": "/".join(map(str, c["load_end"]))},
            {"variant": "without (loop path)", "wall s": lp["wall_s"], "exit": lp["rc"],
             "load at start": "/".join(map(str, lp["load_start"])), "load at end": "/".join(map(str, lp["load_end"]))},
        ], nd=0)
        body += (f"\n**Demo with cache / without = {c['wall_s']:.0f} s / {lp['wall_s']:.0f} s = "
                 f"{r['ratio_cache_over_loop']:.2f}**.\n\n*With cache*, per rule:\n\n")
        body += report(c["analysis"], "with cache")
        body += "\n*Without cache*, per rule:\n\n"
        body += report(lp["analysis"], "without cache")
        ug = r["variants"]["ungrouped"]
        tg, tu = totals(c["analysis"]), totals(ug["analysis"])
        body += (f"\n**Grouped training jobs, before / after** — the *with cache* demo once more with "
                 f"`group: 1` (*before*: one training job, one process and one notebook per run, "
                 f"{tu['n_notebooks']} notebooks) against the grid's `group: 6` (*after*: a model's "
                 f"fast-path runs in one job, {tg['n_notebooks']} notebooks): wall **{ug['wall_s']:.0f} s "
                 f"→ {c['wall_s']:.0f} s (before / after = {r['ratio_ungrouped_over_grouped']:.2f})**; "
                 f"notebook overhead {tu['notebook_overhead_s']:.0f} s → {tg['notebook_overhead_s']:.0f} s "
                 f"(exit {ug['rc']}).\n\n*Before* (`group: 1`), per rule:\n\n")
        body += report(ug["analysis"], "with cache, one job per run")
        print(f"\ndemo with cache / without = {c['wall_s']:.0f} / {lp['wall_s']:.0f} s = "
              f"{r['ratio_cache_over_loop']:.2f}; one job per run / grouped = {ug['wall_s']:.0f} / "
              f"{c['wall_s']:.0f} s = {r['ratio_ungrouped_over_grouped']:.2f}")
    res, work = Path(args.demo_results), Path(args.demo_work)
    if res.is_dir():
        a = analyse(res, work, Path(args.snakemake_logs), grid_hint=Path(args.grid).name)
        data["existing"] = {"by_rule": a["by_rule"], "train_parts": a["train_parts"], "totals": totals(a),
                            "snakemake": a["snakemake"]}
        grid_epochs = _grid_epochs(res)
        body += (f"\n**The existing demo** (`{_rel(res)}`, `{_rel(work)}`; no new runs"
                 f"{'; ' + grid_epochs if grid_epochs else ''}). Per rule: *Snakemake job s* = job "
                 "wall from the Snakemake log(s) (start to finish, 1-s resolution, Python start-up "
                 "included); *notebook step s* = the papermill step (`status*.json` seconds); *work s* "
                 "= the package call inside the notebook (`report.json` seconds for ingest, `run.json` "
                 "total for train, the `calibrate_run`/`reject_run` cell), or `done.json` seconds for "
                 "features; *kernel+papermill* = step − all cells; *other cells* = imports, plots, "
                 "tables; *overhead* = step − work.\n\n")
        body += report(a, "existing demo")
        t = totals(a)
        if t["snakemake_elapsed_s"] and len(a["snakemake"]["elapsed"]) > 1:
            body += ("\n(The existing results were made by several Snakemake invocations — reruns "
                     "after edits — so the wall time sums their elapsed times and the per-rule job "
                     "times keep the last run of each job.)\n")
    else:
        body += f"\nNo demo results at `{res}`: run `make demo` first.\n"
    load_end = loadavg()
    md = section_header("The demo: where the time goes", facts, load_end, command_line()) + body
    md += json_comment(data)
    if not args.no_write:
        write_results("demo_breakdown", md, args.results)
    return data


def _rel(p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(REPO))
    except ValueError:
        return str(p)


def _grid_epochs(results: Path) -> str:
    g = results / "grid.yaml"
    if not g.is_file():
        return ""
    from melanoma.io import read_yaml

    y = read_yaml(g) or {}
    tr = y.get("train", {})
    return (f"{', '.join(y.get('models', []))}; {len(y.get('combinations', []))} combinations; "
            f"train: freeze {tr.get('freeze')}, epochs {tr.get('epochs')}, {tr.get('image_size')} px, "
            f"views {tr.get('views')}")


if __name__ == "__main__":
    main()

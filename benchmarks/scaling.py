"""Scaling: wall time and peak memory vs number of images, and the cost of one more combination.

1. For each SYNTHETIC scale (default ×0.25, ×0.5, ×1 of the embedded replicas, ~2,000 images at
   ×1), a fresh subprocess (clean peak memory) writes the replicas, ingests all 11 releases and
   extracts ``efficientnet_lite0`` features (ImageNet weights, 96 px, no augmented views) for every
   release. Reported: images, seconds per stage, img/s, and peak RSS of the process and of the
   largest ingest worker (``resource.getrusage``).
2. With features cached once, ``train_run`` on the fast path for 1, 2 and 4 training combinations
   that reuse them: the seconds per extra combination are only data selection, a head fit and
   predictions — no network.

    .venv/bin/python benchmarks/scaling.py [--work DIR] [--quick] [--scales 0.25,0.5,1]
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (puts the repository on sys.path)
from common import (Timer, command_line, json_comment, loadavg, machine_facts, md_table, parser,
                    peak_rss_mb, print_table, section_header, synthetic_work, write_results)

MODEL, WEIGHTS = "efficientnet_lite0", "imagenet"
COMBOS = ["B", "E", "A-E", "A-J"]
EVALS = ["ISIC2017"]


def child(scale: float, out: Path, size: int) -> dict:
    """synth + ingest + features in this process; prints one JSON line."""
    import torch  # noqa: F401  (imported before timing, like a pipeline process)
    from melanoma.data.ingest import ingest_all
    from melanoma.data.registry import SHORT_NAMES
    from melanoma.data.synthetic import write_replicas
    from melanoma.train.features import features_for_dataset

    rss0 = peak_rss_mb()
    with Timer() as t_s:
        summ = write_replicas(out / "synthetic", scale=scale, seed=0)
    with Timer() as t_i:
        reports = ingest_all(out / "synthetic", out, progress=False)
    rss_ingest = peak_rss_mb()
    n_feat = 0
    with Timer() as t_f:
        for ds in SHORT_NAMES:
            f = features_for_dataset(out, ds, model=MODEL, weights=WEIGHTS, size=size, views=0,
                                     device="cpu", progress=False)
            n_feat += f["images_encoded"]
    res = {"scale": scale, "n_files": int(summ["n_images"]),
           "n_ingested": int(sum(r["n_images"] for r in reports.values())), "n_features": n_feat,
           "synth_s": t_s.s, "ingest_s": t_i.s, "features_s": t_f.s,
           "total_s": t_s.s + t_i.s + t_f.s,
           "rss_start_mb": rss0, "rss_after_ingest_mb": rss_ingest, "peak_rss_mb": peak_rss_mb(),
           "peak_rss_worker_mb": peak_rss_mb(children=True),
           "disk_cache_mb": sum(p.stat().st_size for p in (out / "cache").rglob("*.npy")) / 2**20}
    print("RESULT " + json.dumps(res), flush=True)
    return res


def _one_scale(s: float, size: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"melanoma-bench-scale{s}-"))
    try:
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, __file__, "--child", "--scale", str(s), "--out", str(tmp),
                            "--size", str(size)], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
        if r.returncode != 0 or not line:
            raise RuntimeError(f"scale {s} failed ({r.returncode}):\n{r.stderr[-3000:]}")
        res = json.loads(line[-1][7:])
        res["process_wall_s"] = wall
        return res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def images_vs_scale(scales, size: int, passes: int = 2, log=print) -> list[dict]:
    """Each scale ``passes`` times, in increasing then decreasing order (so a burst of load from
    other jobs hits different scales); per stage the fastest pass, peak memory the largest."""
    got: dict[float, list[dict]] = {s: [] for s in scales}
    for k in range(passes):
        for s in (scales if k % 2 == 0 else list(reversed(scales))):
            res = _one_scale(s, size)
            got[s].append(res)
            log(f"[scaling] pass {k + 1} ×{s}: {res['n_ingested']} images, synth {res['synth_s']:.1f} s, "
                f"ingest {res['ingest_s']:.1f} s, features {res['features_s']:.1f} s; peak RSS "
                f"{res['peak_rss_mb']:.0f} MiB (largest worker {res['peak_rss_worker_mb']:.0f} MiB)")
    rows = []
    for s in scales:
        rs = got[s]
        best = dict(rs[0])
        for key in ("synth_s", "ingest_s", "features_s", "process_wall_s"):
            best[key] = min(r[key] for r in rs)
        best["total_s"] = best["synth_s"] + best["ingest_s"] + best["features_s"]
        for key in ("peak_rss_mb", "peak_rss_worker_mb", "rss_after_ingest_mb"):
            best[key] = max(r[key] for r in rs)
        best["passes"] = [{k: r[k] for k in ("synth_s", "ingest_s", "features_s", "peak_rss_mb")} for r in rs]
        rows.append(best)
    return rows


def combinations_cost(work: Path, size: int, epochs: int, log=print) -> dict:
    """Features once, then the fast path for 1, 2, 4 combinations (fresh run folders)."""
    from melanoma.data.registry import parse_combo
    from melanoma.io import read_json
    from melanoma.train.features import features_for_dataset
    from melanoma.train.params import TrainParams
    from melanoma.train.recipe import train_run

    from melanoma.train.features import feature_dir

    datasets = sorted({d for c in COMBOS for d in parse_combo(c)} | {d for e in EVALS for d in parse_combo(e)})
    shutil.rmtree(feature_dir(work, MODEL, WEIGHTS, size), ignore_errors=True)  # pay them once, here
    with Timer() as t_f:
        n = 0
        for ds in datasets:
            n += features_for_dataset(work, ds, model=MODEL, weights=WEIGHTS, size=size, views=1,
                                      device="cpu", progress=False)["images_encoded"]
    out = {"features_s": t_f.s, "features_images_encoded": n, "datasets": len(datasets),
           "epochs": epochs, "size": size, "by_n": []}
    runs = work / "bench_combo_runs"
    quiet = lambda *a, **k: None  # noqa: E731
    import torch

    default_threads = torch.get_num_threads()
    for threads in ([default_threads, 1] if default_threads > 1 else [default_threads]):
        torch.set_num_threads(threads)
        try:
            for k in (1, 2, 4):
                shutil.rmtree(runs, ignore_errors=True)
                tims = []
                with Timer() as t:
                    for c in COMBOS[:k]:
                        p = TrainParams.from_dict(dict(
                            work=str(work), model=MODEL, weights=WEIGHTS, freeze="backbone", train=c,
                            eval_sets=EVALS, out=str(runs / c.replace(",", "")), epochs=epochs,
                            image_size=size, views=1, lr=0.01, seed=0, device="cpu"))
                        train_run(p, progress=False, log=quiet)
                        tims.append(read_json(Path(p.out) / "run.json")["timings_s"])
                row = {"threads": threads, "combinations": k, "names": "; ".join(COMBOS[:k]),
                       "total_s": t.s, **{f"{part}_s": sum(x.get(part, 0.0) for x in tims)
                                          for part in ("data", "features", "train", "predict")}}
                row["other_s"] = t.s - sum(row[f"{q}_s"] for q in ("data", "features", "train", "predict"))
                out["by_n"].append(row)
                log(f"[scaling] {k} combination(s) on cached features, {threads} torch thread(s): {t.s:.2f} s")
        finally:
            torch.set_num_threads(default_threads)
    shutil.rmtree(runs, ignore_errors=True)
    out["head_math_s"] = head_math(work, size, epochs)
    out["per_extra_combination_s"] = {}
    for th in dict.fromkeys(r["threads"] for r in out["by_n"]):
        b = {r["combinations"]: r["total_s"] for r in out["by_n"] if r["threads"] == th}
        out["per_extra_combination_s"][th] = (b[4] - b[1]) / 3
    out["default_threads"] = out["by_n"][0]["threads"]
    return out


def head_math(work: Path, size: int, epochs: int) -> dict:
    """Seconds of the head's own epochs (``train_head_epoch``) for the 4 combinations, alone on the
    same cached features — what a run's ``train`` timing would be without the per-epoch work around
    it (validation, copying the best state, the checkpoint); per torch thread setting."""
    import numpy as np
    import torch
    from melanoma.train import features as feats
    from melanoma.train.loop import epoch_order
    from melanoma.train.params import TrainParams
    from melanoma.train.recipe import train_head_epoch
    from melanoma.train.run import load_data

    data = []
    for c in COMBOS:
        p = TrainParams.from_dict(dict(work=str(work), model=MODEL, weights=WEIGHTS, train=c,
                                       eval_sets=EVALS, image_size=size, views=1, lr=0.01, seed=0,
                                       device="cpu"))
        combo, _, _ = load_data(p)
        X = feats.gather(work, combo.train, model=MODEL, weights=WEIGHTS, size=size, view="aug-seed0-v0")
        data.append((p, X, combo.train["label"].to_numpy(np.int64)))
    default_threads = torch.get_num_threads()
    out = {}
    for threads in ([default_threads, 1] if default_threads > 1 else [default_threads]):
        torch.set_num_threads(threads)
        try:
            t0 = time.perf_counter()
            for p, X, y in data:
                torch.manual_seed(0)
                head = torch.nn.Linear(X.shape[1], 2)
                opt = torch.optim.SGD(head.parameters(), lr=p.lr, momentum=p.momentum)
                for e in range(epochs):
                    train_head_epoch(head, opt, [X], y, epoch_order(y, e, p.seed), p, e)
            out[threads] = time.perf_counter() - t0
        finally:
            torch.set_num_threads(default_threads)
    return out


def main(argv=None):
    ap = parser(__doc__)
    ap.add_argument("--scales", default=None, help="synthetic scales (default 0.25,0.5,1)")
    ap.add_argument("--size", type=int, default=96, help="feature image size")
    ap.add_argument("--passes", type=int, default=2, help="passes over the scales (fastest kept)")
    ap.add_argument("--epochs", type=int, default=20, help="epochs of the combination runs")
    ap.add_argument("--scale", type=float, default=0.3, help="(part 2) scale of the work folder; "
                    "(--child) the scale to build")
    ap.add_argument("--child", action="store_true", help=argparse_hidden())
    ap.add_argument("--out", default=None, help=argparse_hidden())
    args = ap.parse_args(argv)
    if args.child:
        return child(args.scale, Path(args.out), args.size)
    scales = [float(s) for s in (args.scales or "0.25,0.5,1").split(",") if s]
    facts = machine_facts()
    rows = images_vs_scale(scales, args.size, passes=args.passes)
    work = synthetic_work(args.work, scale=args.scale)
    comb = combinations_cost(work, args.size, args.epochs)
    load_end = loadavg()

    table = [{"scale": f"×{r['scale']:g}", "images": r["n_ingested"], "synth s": r["synth_s"],
              "ingest s": r["ingest_s"], "features s": r["features_s"], "total s": r["total_s"],
              "ingest img/s": r["n_ingested"] / r["ingest_s"],
              "features img/s": r["n_features"] / r["features_s"] if r["features_s"] else None,
              "peak RSS MiB": r["peak_rss_mb"], "largest worker MiB": r["peak_rss_worker_mb"],
              "cache MiB": r["disk_cache_mb"]} for r in rows]
    print()
    print_table(table)
    ctable = [{"torch threads": r["threads"], "combinations": r["combinations"], "runs": r["names"],
               "total s": r["total_s"],
               "data s": r["data_s"], "gather s": r["features_s"], "heads s": r["train_s"],
               "predict s": r["predict_s"], "other s": r["other_s"]} for r in comb["by_n"]]
    print_table(ctable, nd=2)
    for th, v in comb["per_extra_combination_s"].items():
        print(f"per extra combination, {th} torch thread(s): {v:.2f} s (features once: {comb['features_s']:.1f} s)")

    md = section_header("Scaling with images and with combinations", facts, load_end, command_line())
    md += (f"**Images.** Each scale in a fresh subprocess: SYNTHETIC replicas of all 11 releases → "
           f"ingest (decode, hashes, pre-resized cache; a process pool) → `{MODEL}` features "
           f"({WEIGHTS} weights, {args.size} px, view0 only; the model is built once per release, as "
           f"the workflow's features jobs do) for every release. {args.passes} passes over the scales "
           "(increasing, then decreasing order); per stage the fastest pass, so that a burst of "
           "load from other jobs does not decide a row. *Peak RSS* is the process's (`ru_maxrss`, "
           "largest of the passes); *largest worker* is the biggest ingest pool process.\n\n")
    md += md_table(table, nd=1)
    if len(rows) >= 2:
        a, z = rows[0], rows[-1]
        md += (f"\nFrom ×{a['scale']:g} to ×{z['scale']:g}: {z['n_ingested'] / a['n_ingested']:.1f}× the "
               f"images, {z['total_s'] / a['total_s']:.1f}× the time, peak RSS "
               f"{z['peak_rss_mb'] / a['peak_rss_mb']:.2f}× (memory is dominated by the libraries and "
               "the model, not by the images: they stream through the cache).\n")
    md += (f"\n**Combinations.** Features for the {comb['datasets']} releases used ({MODEL}, "
           f"{args.size} px, view0 + 1 augmented view; {comb['features_images_encoded']} images "
           f"encoded) took **{comb['features_s']:.1f} s once**. Then `train_run` on the fast path "
           f"({comb['epochs']} epochs, evaluation set {', '.join(EVALS)}) for the first 1, 2 and 4 of "
           f"{', '.join(COMBOS)}:\n\n")
    md += md_table(ctable, nd=2)
    per = comb["per_extra_combination_s"]
    hm = comb["head_math_s"]
    four = {r["threads"]: r["train_s"] for r in comb["by_n"] if r["combinations"] == 4}
    th_s = lambda th: f"{th} thread{'s' if th > 1 else ''}"  # noqa: E731
    md += ("\nOne more combination costs "
           + " and ".join(f"**{v:.2f} s with {th_s(th)}** ({v / comb['features_s'] * 100:.0f} % of the "
                          "one-off feature extraction)" for th, v in per.items())
           + " ((4 runs − 1 run) / 3): data selection, heads and predictions on cached features, no "
           "network. Most of it is not the head fit: of the 4 runs' *heads s* ("
           + ", ".join(f"{v:.2f} s with {th_s(th)}" for th, v in four.items())
           + "), the head's own epochs (`train_head_epoch` alone on the same features) take "
           + ", ".join(f"{v:.2f} s with {th_s(th)}" for th, v in hm.items())
           + "; the rest is the per-epoch work around them — validation, copying the best state and "
           "saving the checkpoint of the whole model (backbone included) every epoch. Checkpointing "
           "only the head on the fast path would bring an extra combination close to the head's own "
           "time.\n")
    md += json_comment({"scales": rows, "combinations": comb})
    if not args.no_write:
        write_results("scaling", md, args.results)
    return rows, comb


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()

"""Training throughput, and what the feature cache saves on a small grid (issue 3, item 6).

Part A — img/s on random batches (batch 32), per model and image size, interleaved rounds, median:

* ``forward``: the backbone in eval mode under ``torch.inference_mode`` with channels-last inputs
  (what ``features.extract`` runs), and the same in NCHW layout;
* ``train step freeze=conv``: forward + backward + SGD step, Conv2d frozen, BatchNorm and head train
  (the paper's text); ``train step freeze=none``: full fine-tuning (what the seed code ran);
* ``head on cached features``: the fast path's epoch loop (``train.train_head_epoch``) on
  float16-stored features, in features/s;
* on CUDA: bf16 autocast and channels-last everywhere, as the trainer does.

Part B — a small grid (default 2 models × 6 combinations of the SYNTHETIC replicas, 3 epochs,
64 px) run twice through ``train_run`` in one invocation, model by model (cache, then loop):

* *with cache*: features once per model × dataset (``features_for_dataset``: view0 + 1 augmented
  view), then every combination trains its head on them (``freeze=backbone, fast=True, views=1``);
* *without*: the same runs with ``fast=False`` (the loop path: the network runs every step, with
  online augmentation) — the runs a grid would do without the feature cache.

Part C (optional, cheap) — the heads of all combinations of one backbone trained together (one
batched matmul per step, ``torch.baddbmm``) vs one optimiser loop per combination, on the same
cached features, with a check that both give the same weights.

    .venv/bin/python benchmarks/train_throughput.py [--work DIR] [--quick] [--sizes 128,224]
        [--models efficientnet_lite0:imagenet,resnet18:none] [--device auto] [--no-grid]
"""

from __future__ import annotations

import math
import shutil
import time
import types
from pathlib import Path

import common  # noqa: F401  (puts the repository on sys.path)
import numpy as np
import torch
import torch.nn.functional as F
from common import (Timer, command_line, json_comment, loadavg, machine_facts, md_table, median,
                    parser, print_table, section_header, synthetic_work, write_results)

from melanoma.train import features as feats
from melanoma.train.loop import epoch_order
from melanoma.train.models import build_model, set_train_mode, split_backbone_head
from melanoma.train.params import TrainParams
from melanoma.train.recipe import train_head_epoch, train_run
from melanoma.train.run import load_data, resolve_device

DEMO_COMBOS = ["E", "B", "D", "A-C,I,J", "A-E", "A-J"]
DEMO_EVALS = ["ISIC2017", "ISIC2018", "_7_point_criteria", "KaggleMB"]


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------ part A

def _ops(name: str, weights: str, size: int, batch: int, dev: torch.device, threads: int):
    """name → callable running one batch (returns nothing), and the batch size it processes."""
    cuda = dev.type == "cuda"
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g).to(dev)
    y = torch.randint(0, 2, (batch,), generator=g).to(dev)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    ops = {}

    bb = {}
    for layout in (torch.channels_last, torch.contiguous_format):
        torch.manual_seed(0)
        backbone, head = split_backbone_head(build_model(name, weights=weights, freeze="backbone"))
        bb[layout] = backbone.to(dev).eval().to(memory_format=layout)

    def fwd(layout):
        def run():
            with torch.inference_mode(), amp:
                bb[layout](x_cl if layout == torch.channels_last else x)
        return run

    ops["forward (eval, channels_last)"] = fwd(torch.channels_last)
    ops["forward (eval, NCHW)"] = fwd(torch.contiguous_format)
    if not cuda and threads > 1:
        def fwd1():
            torch.set_num_threads(1)
            try:
                fwd(torch.channels_last)()
            finally:
                torch.set_num_threads(threads)
        ops["forward (eval, channels_last, 1 thread)"] = fwd1

    for freeze in ("conv", "none"):
        torch.manual_seed(0)
        m = build_model(name, weights=weights, freeze=freeze).to(dev)
        if cuda:
            m.to(memory_format=torch.channels_last)
        set_train_mode(m, True)
        opt = torch.optim.SGD([q for q in m.parameters() if q.requires_grad], lr=1e-3, momentum=0.9)

        def step(m=m, opt=opt):
            with amp:
                logits = m(x_cl if cuda else x)
            loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        ops[f"train step freeze={freeze}"] = step
    return ops, head.in_features


def head_rate(d: int, n: int = 8192, batch: int = 32, reps: int = 3) -> float:
    """features/s of one fast-path head epoch (``train_head_epoch``) on float16-stored features."""
    rng = np.random.default_rng(0)
    X = [rng.standard_normal((n, d)).astype(np.float16).astype(np.float32)]
    y = (rng.random(n) < 0.3).astype(np.int64)
    p = types.SimpleNamespace(seed=0, batch_size=batch)
    torch.manual_seed(0)
    head = torch.nn.Linear(d, 2)
    opt = torch.optim.SGD(head.parameters(), lr=1e-3, momentum=0.9)
    secs = []
    for e in range(reps + 1):
        order = epoch_order(y, e, 0)
        t0 = time.perf_counter()
        train_head_epoch(head, opt, X, y, order, p, e)
        if e:  # the first epoch is a warm-up
            secs.append(time.perf_counter() - t0)
    return n / median(secs)


def throughput(models, sizes, batch: int, dev: torch.device, repeats: int, min_s: float,
               log=print) -> list[dict]:
    threads = torch.get_num_threads()
    rows = []
    for size in sizes:
        for name, weights in models:
            ops, d = _ops(name, weights, size, batch, dev, threads)
            for op in ops.values():  # warm-up (oneDNN primitive creation, cudnn autotune)
                op()
            _sync(dev)
            secs = {k: [] for k in ops}
            for _ in range(repeats):
                for k, op in ops.items():  # interleaved rounds
                    n, t0 = 0, time.perf_counter()
                    while True:
                        op()
                        n += 1
                        _sync(dev)
                        dt = time.perf_counter() - t0
                        if dt >= min_s:
                            break
                    secs[k].append(dt / n)
            fwd = batch / median(secs["forward (eval, channels_last)"])
            for k in ops:
                r = batch / median(secs[k])
                rows.append({"model": name, "weights": weights, "size": size, "what": k,
                             "img/s": r, "× forward": r / fwd})
                log(f"[throughput] {name:<20} {size:>4} px  {k:<42} {r:9.1f} img/s")
            hr = head_rate(d)
            rows.append({"model": name, "weights": weights, "size": size,
                         "what": f"head on cached features (d={d}), features/s", "img/s": hr,
                         "× forward": hr / fwd})
            log(f"[throughput] {name:<20} {size:>4} px  head on cached features (d={d}) {hr:9.0f} features/s")
            if dev.type != "cuda" and threads > 1:
                torch.set_num_threads(1)
                try:
                    hr1 = head_rate(d)
                finally:
                    torch.set_num_threads(threads)
                rows.append({"model": name, "weights": weights, "size": size,
                             "what": f"head on cached features (d={d}), features/s, 1 thread",
                             "img/s": hr1, "× forward": hr1 / fwd})
                log(f"[throughput] {name:<20} {size:>4} px  head, 1 thread {hr1:9.0f} features/s")
            del ops
    return rows


# ------------------------------------------------------------------------------------ part B

def _params(work, model, weights, combo, evals, fast, out, epochs, size, views) -> TrainParams:
    return TrainParams.from_dict(dict(
        work=str(work), model=model, weights=weights, freeze="backbone", fast=fast, train=combo,
        eval_sets=list(evals), out=str(out), epochs=epochs, image_size=size, views=views, seed=0,
        device="cpu" if not torch.cuda.is_available() else "auto"))


def grid(work: Path, models, combos, evals, *, epochs: int, size: int, views: int, passes: int = 2,
         log=print) -> dict:
    """Both variants of the grid, model by model, ``passes`` times in alternating order (cache then
    loop, then loop then cache); per variant the faster pass. Per-part seconds from run.json."""
    from melanoma.data.registry import parse_combo
    from melanoma.io import read_json

    quiet = lambda *a, **k: None  # noqa: E731
    runs_dir = work / "bench_runs"
    dev = "cpu" if not torch.cuda.is_available() else "auto"
    out = {"models": {}, "combos": combos, "evals": evals, "epochs": epochs, "size": size,
           "views": views, "passes": passes}
    datasets = sorted({d for c in combos for d in parse_combo(c)} | {d for e in evals for d in parse_combo(e)})

    def runs(model, weights, fast):
        shutil.rmtree(runs_dir, ignore_errors=True)
        tim = []
        for c in combos:
            p = _params(work, model, weights, c, evals, fast, runs_dir / c.replace(",", ""), epochs, size, views)
            train_run(p, progress=False, log=quiet)
            tim.append(read_json(Path(p.out) / "run.json")["timings_s"])
        return tim

    def with_cache(model, weights):
        shutil.rmtree(feats.feature_dir(work, model, weights, size), ignore_errors=True)  # pay them
        with Timer() as t_all:
            with Timer() as t_f:
                for ds in datasets:
                    feats.features_for_dataset(work, ds, model=model, weights=weights, size=size,
                                               views=views, seed=0, device=dev, progress=False)
            tim = runs(model, weights, True)
        heads, pred = sum(t["train"] for t in tim), sum(t["predict"] for t in tim)
        log(f"[grid] {model}: with cache {t_all.s:.1f} s (features {t_f.s:.1f} s for {len(datasets)} "
            f"datasets, heads {heads:.1f} s for {len(tim)} runs)")
        return {"total_s": t_all.s, "features_s": t_f.s, "heads_s": heads, "predict_s": pred,
                "other_s": t_all.s - t_f.s - heads - pred, "runs": len(tim), "datasets": len(datasets)}

    def without(model, weights):  # the loop path: the network runs every step
        with Timer() as t_all:
            tim = runs(model, weights, False)
        loop, pred = sum(t["train"] for t in tim), sum(t["predict"] for t in tim)
        log(f"[grid] {model}: without cache {t_all.s:.1f} s (loop epochs {loop:.1f} s, predict {pred:.1f} s)")
        return {"total_s": t_all.s, "epochs_s": loop, "predict_s": pred,
                "other_s": t_all.s - loop - pred, "runs": len(tim)}

    for model, weights in models:
        res: dict = {"cache": None, "loop": None, "cache_passes_s": [], "loop_passes_s": []}
        for k in range(passes):
            order = (("cache", with_cache), ("loop", without))
            for name, fn in (order if k % 2 == 0 else order[::-1]):
                r = fn(model, weights)
                res[f"{name}_passes_s"].append(r["total_s"])
                if res[name] is None or r["total_s"] < res[name]["total_s"]:
                    res[name] = r
        out["models"][model] = res
    shutil.rmtree(runs_dir, ignore_errors=True)
    out["cache_total_s"] = sum(r["cache"]["total_s"] for r in out["models"].values())
    out["loop_total_s"] = sum(r["loop"]["total_s"] for r in out["models"].values())
    out["ratio_cache_over_loop"] = out["cache_total_s"] / out["loop_total_s"]
    return out


# ------------------------------------------------------------------------------------ part C

def batched_heads(work: Path, model: str, weights: str, combos, evals, *, size: int, epochs: int,
                  batch: int = 32, lr: float = 1e-3, momentum: float = 0.9, seed: int = 0) -> dict:
    """All combinations' heads of one backbone in one batched matmul per step vs one loop each.

    Same features (view ``aug-seed0-v0``, as the grid's cached runs), same per-combination epoch
    order (``epoch_order``) and initialisation; SGD with momentum written out for the batched
    version so that a combination whose epoch has ended is left untouched (torch's SGD would still
    apply momentum to a zero gradient). Constant learning rate (no StepLR) in both.
    """
    fkw = dict(model=model, weights=weights, size=size)
    Xs, ys = [], []
    for c in combos:
        p = TrainParams.from_dict(dict(work=str(work), model=model, weights=weights, train=c,
                                       eval_sets=list(evals), image_size=size, views=1))
        combo, _, _ = load_data(p)
        Xs.append(feats.gather(work, combo.train, view=f"aug-seed{seed}-v0", **fkw))
        ys.append(combo.train["label"].to_numpy(np.int64))
    d = Xs[0].shape[1]
    inits = []
    for i in range(len(combos)):
        torch.manual_seed(seed + i)
        inits.append(torch.nn.Linear(d, 2))
    args = types.SimpleNamespace(seed=seed, batch_size=batch)

    # one optimiser loop per combination (the fast path's train_head_epoch)
    t0 = time.perf_counter()
    seq = []
    for X, y, init in zip(Xs, ys, inits):
        head = torch.nn.Linear(d, 2)
        head.load_state_dict(init.state_dict())
        opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=momentum)
        for e in range(epochs):
            train_head_epoch(head, opt, [X], y, epoch_order(y, e, seed), args, e)
        seq.append(head)
    t_seq = time.perf_counter() - t0

    # all heads at once: per epoch one (C, steps, batch) index into the concatenated features
    t0 = time.perf_counter()
    C = len(Xs)
    offs = np.cumsum([0] + [len(X) for X in Xs])
    Xcat = torch.cat([torch.from_numpy(X) for X in Xs] + [torch.zeros(1, d)])  # last row: padding
    ycat = torch.cat([torch.tensor(y) for y in ys] + [torch.zeros(1, dtype=torch.long)])
    pad = len(Xcat) - 1
    W = torch.stack([h.weight.detach().t().clone() for h in inits]).requires_grad_()  # (C, d, 2)
    b = torch.stack([h.bias.detach().clone()[None] for h in inits]).requires_grad_()  # (C, 1, 2)
    bufW, bufb = torch.zeros_like(W), torch.zeros_like(b)
    started = torch.zeros(C, dtype=torch.bool)
    for e in range(epochs):
        orders = [epoch_order(y, e, seed) for y in ys]
        steps = max(math.ceil(len(o) / batch) for o in orders)
        idx = np.full((C, steps * batch), pad, dtype=np.int64)
        for c, o in enumerate(orders):
            idx[c, :len(o)] = o + offs[c]
        idx = torch.from_numpy(idx).view(C, steps, batch)
        valid = idx != pad
        counts = valid.sum(2)  # (C, steps) rows per combination and step
        wts = torch.where(valid, 1.0 / counts.clamp(min=1)[..., None], 0.0)
        for s in range(steps):
            ix = idx[:, s]
            logits = torch.baddbmm(b, Xcat[ix], W)  # (C, batch, 2)
            loss = (F.cross_entropy(logits.reshape(-1, 2), ycat[ix].reshape(-1), reduction="none")
                    * wts[:, s].reshape(-1)).sum()  # = sum over combinations of each one's batch mean
            W.grad = b.grad = None
            loss.backward()
            with torch.no_grad():
                active = counts[:, s] > 0
                a = active[:, None, None]
                first = a & ~started[:, None, None]
                for P, buf in ((W, bufW), (b, bufb)):
                    new = torch.where(first, P.grad, momentum * buf + P.grad)
                    buf.copy_(torch.where(a, new, buf))
                    P.sub_(lr * buf * a)
                started |= active
    t_bat = time.perf_counter() - t0
    diff = max(float((W[c].detach().t() - seq[c].weight.detach()).abs().max()) for c in range(C))
    n = sum(len(y) for y in ys) * epochs
    return {"model": model, "combinations": C, "epochs": epochs, "samples": n,
            "sequential_s": t_seq, "batched_s": t_bat, "speedup": t_seq / t_bat,
            "max_abs_weight_diff": diff}


# ------------------------------------------------------------------------------------ main

def _parse_models(text: str):
    out = []
    for item in text.split(","):
        name, _, w = item.partition(":")
        out.append((name.strip(), (w or "none").strip()))
    return out


def main(argv=None) -> dict:
    ap = parser(__doc__)
    ap.add_argument("--models", default="efficientnet_lite0:imagenet,resnet18:none",
                    help="name:weights,... (throughput does not depend on the weights)")
    ap.add_argument("--sizes", default="128", help="image sizes of part A, e.g. 128,224")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 3; quick 2)")
    ap.add_argument("--min-seconds", type=float, default=None,
                    help="time per measurement (default 2; quick 1)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--no-grid", action="store_true", help="part A only")
    ap.add_argument("--combos", default=",".join(c.replace(",", "") for c in DEMO_COMBOS),
                    help="grid combinations, comma separated letters (default: the demo's 6)")
    ap.add_argument("--grid-models", default=None, help="models of the grid (default: --models)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--grid-passes", type=int, default=2,
                    help="passes over both variants in alternating order; the faster kept")
    ap.add_argument("--grid-size", type=int, default=64)
    ap.add_argument("--scale", type=float, default=0.3, help="synthetic scale of the work folder")
    ap.add_argument("--no-batched", action="store_true", help="skip part C")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (2 if args.quick else 3)
    min_s = args.min_seconds or (1.0 if args.quick else 2.0)
    dev = resolve_device(args.device)
    facts = machine_facts()
    models = _parse_models(args.models)
    sizes = [int(s) for s in args.sizes.split(",") if s]

    rows = throughput(models, sizes, args.batch, dev, repeats, min_s)
    result = {"device": str(dev), "gpu": facts.get("gpu"), "batch": args.batch,
              "threads": torch.get_num_threads(), "throughput": rows}
    g = bat = None
    if not args.no_grid:
        work = synthetic_work(args.work, scale=args.scale)
        combos = [c for c in args.combos.split(",") if c]
        gmodels = _parse_models(args.grid_models) if args.grid_models else models
        g = grid(work, gmodels, combos, DEMO_EVALS, epochs=args.epochs, size=args.grid_size, views=1,
                 passes=args.grid_passes)
        result["grid"] = g
        if not args.no_batched:
            name, w = gmodels[0]
            bat = batched_heads(work, name, w, combos, DEMO_EVALS, size=args.grid_size, epochs=20)
            result["batched_heads"] = bat
            print(f"[batched heads] {bat}")
    load_end = loadavg()

    print()
    print_table(rows, ["model", "size", "what", "img/s", "× forward"], nd=2)
    md = section_header("Training throughput and the feature cache on a small grid", facts, load_end,
                        command_line())
    dev_txt = f"{dev}" + (f" ({facts['gpu']}, bf16 autocast, channels_last)" if dev.type == "cuda" else
                          f" ({torch.get_num_threads()} torch threads)")
    md += (f"**Part A** — img/s on random batches of {args.batch}, device {dev_txt}; median of {repeats} "
           f"interleaved rounds of ≥ {min_s:g} s each. *× forward* = relative to the channels-last "
           "forward of the same model and size. The head row is the fast path's epoch loop "
           "(`train_head_epoch`, batch 32) on cached features, in features/s.\n\n")
    md += md_table(rows, ["model", "weights", "size", "what", "img/s", "× forward"], nd=2)
    one = [r for r in rows if "1 thread" in r["what"]]
    if one and torch.get_num_threads() > 1:
        md += ("\nThe *1 thread* rows run the same work with `torch.set_num_threads(1)`: when other "
               "jobs load the cores, torch's intra-op threads wait on each other and a single "
               "thread can be far faster than all of them (most of all for the head's tiny matrix "
               "products).\n")
    if g:
        md += (f"\n**Part B** — grid of {len(g['models'])} models × {len(g['combos'])} combinations "
               f"({', '.join(g['combos'])}) on the SYNTHETIC replicas (scale {args.scale}), "
               f"{g['epochs']} epochs, {g['size']} px, evaluation sets {', '.join(g['evals'])}; "
               "`freeze=backbone` in both. *With cache*: features once per model × dataset "
               f"(view0 + {g['views']} augmented view), then a head per combination (`fast=True, "
               "views=1`). *Without*: the same runs with `fast=False` (network every step, online "
               "augmentation). Measured model by model in one process, "
               f"{g['passes']} passes in alternating order (cache, loop, loop, cache); per variant "
               "the faster pass (all passes in the JSON below).\n\n")
        grows = []
        for m, r in g["models"].items():
            c, lp = r["cache"], r["loop"]
            grows.append({"model": m, "variant": "with cache", "total s": c["total_s"],
                          "features s": c["features_s"], "heads / loop epochs s": c["heads_s"],
                          "predict s": c["predict_s"], "other s": c["other_s"]})
            grows.append({"model": m, "variant": "without (loop)", "total s": lp["total_s"],
                          "features s": None, "heads / loop epochs s": lp["epochs_s"],
                          "predict s": lp["predict_s"], "other s": lp["other_s"]})
        md += md_table(grows, nd=1)
        md += (f"\n*Other* = data loading and leakage checks, model building, gathering cached "
               "features, writing run outputs.\n\n"
               f"**Grid with cache / grid without = {g['cache_total_s']:.1f} s / {g['loop_total_s']:.1f} s "
               f"= {g['ratio_cache_over_loop']:.3f}** (the cache makes this grid "
               f"{1 / g['ratio_cache_over_loop']:.1f}× faster). The saving grows with epochs and "
               "combinations: the cached variant's network cost is fixed (features once), the loop's "
               "is paid every epoch of every run.\n")
        print(f"\ngrid with cache / without = {g['cache_total_s']:.1f} / {g['loop_total_s']:.1f} s "
              f"= {g['ratio_cache_over_loop']:.3f}")
    if bat:
        md += (f"\n**Part C** — the {bat['combinations']} heads of {bat['model']} ({bat['epochs']} "
               f"epochs, {bat['samples']:,} samples in all, constant lr): one optimiser loop per "
               f"combination {bat['sequential_s']:.2f} s vs all heads in one batched matmul per step "
               f"{bat['batched_s']:.2f} s → **×{bat['speedup']:.1f}**; largest weight difference "
               f"{bat['max_abs_weight_diff']:.1e} (same result). Part of the gain is the gather: "
               "`train_head_epoch` stacks a batch's feature rows one by one in Python, the batched "
               "version indexes all combinations' batches in one operation.\n")
    md += json_comment(result)
    if not args.no_write:
        write_results("train_throughput", md, args.results)
    return result


if __name__ == "__main__":
    main()

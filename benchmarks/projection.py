"""Projection: GPU-hours of the paper grid (24 models × 54 combinations = 1,296 runs) on one GPU,
for the linear-probe mode (features once per model × dataset, then heads) and the paper mode
(``freeze: conv``: the network runs every step of every epoch of every run).

Everything it assumes is printed and recorded:

* **per-image cost per model**: measured on a GPU when ``RESULTS.md``'s train_throughput section
  holds a CUDA run at 224 px (those models as measured, the others scaled from them by FLOPs);
  otherwise a reference throughput (``--ref-fwd``, default 1,000 img/s for resnet50's forward at
  224 px, bf16, channels-last on one H100 — deliberately conservative) scaled by each model's
  GFLOPs from torchvision's weights metadata (``meta["_ops"]`` at the weights' crop size, rescaled
  to 224 px). FLOPs are a crude proxy (depthwise EfficientNets run below, VGGs above it);
* **a training step** (forward + backward, Conv2d weights frozen, BatchNorm and head train) costs
  ``--conv-step`` × a forward (default 2.5; the CPU measurements in train_throughput are shown
  for comparison);
* **dataset sizes**: the official releases' split counts from ``../shared/spec/datasets.md``;
  where a release has no validation split the project makes 80:20 of train; ISIC 2020's unlabelled
  test set (scored for the SIIM-ISIC submission) has ``--isic2020-test`` images (10,982);
* **epochs**: the paper's schedule by number of datasets (1 → 30, then 30 + 2n, at most 50);
  every epoch also scores the combination's validation splits (checkpoint selection); every run
  scores the evaluation sets' val + test splits and ISIC 2020's val + test at the end;
* **linear probe**: view0 of every image of every release once per model, plus ``--views``
  augmented views of each training image; heads on the CPU at the measured head rate;
* **paper mode, data-bound variant**: augmenting on ``--cpu-cores`` CPU cores at the measured
  per-core rate of cache read + the paper's augmentation (image_loading), when that is lower than
  the GPU's rate (on-device augmentation removes this bound; issue 7, item 2).

    .venv/bin/python benchmarks/projection.py [--ref-fwd 1000] [--conv-step 2.5] [--views 2]
"""

from __future__ import annotations

import re
from pathlib import Path

import common  # noqa: F401  (puts the repository on sys.path)
from common import (SPEC, command_line, json_comment, loadavg, machine_facts, md_table, median,
                    parser, print_table, read_section_json, section_header, write_results)

SIZE = 224
_RESULTS = [common.RESULTS]  # the RESULTS.md read for measured numbers (main sets it from --results)


def _section(name: str):
    return read_section_json(name, Path(_RESULTS[0]))
EVAL_SETS = ["isic2017", "isic2018", "derm7pt", "kaggle"]
SUBMISSION = "isic2020"

# Used only when ../shared/spec/datasets.md is missing or unreadable (same numbers).
FALLBACK_COUNTS = {
    "isic2016": {"train": 900, "test": 379}, "isic2017": {"train": 2000, "val": 150, "test": 600},
    "isic2018": {"train": 10015, "val": 193, "test": 1512}, "isic2019": {"train": 25331},
    "isic2020": {"train": 33126}, "derm7pt": {"train": 413, "val": 203, "test": 395},
    "ph2": {"train": 200}, "pad_ufes_20": {"train": 2298}, "mednode": {"train": 170},
    "kaggle": {"train": 2637, "test": 660}, "ham10000": {"train": 10015},
}


def spec_counts(path: Path = SPEC / "datasets.md") -> tuple[dict, str]:
    """{short: {split: n}} from the spec's dataset table (release splits + counts columns)."""
    from melanoma.data.registry import get

    if not path.is_file():
        return FALLBACK_COUNTS, "built-in copy (spec not found)"
    out = {}
    for line in path.read_text().splitlines():
        if not line.startswith("| ") or line.startswith("| letter") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 6:
            continue
        try:
            info = get(cells[0]) if cells[0] not in ("–", "-") else get(re.sub(r"\W", "", cells[1]))
        except KeyError:
            continue
        splits_txt = cells[-2].split("(")[0].lower()
        splits = [] if splits_txt.strip().startswith("none") else re.findall(r"train|val|test", splits_txt)
        ns = [int(n.replace(",", "")) for n, _ in re.findall(r"(\d[\d,]*) \((\d+)\)", cells[-1])]
        if not ns:
            continue
        if not splits:
            out[info.short] = {"train": ns[0]}
        elif len(ns) == len(splits):
            out[info.short] = dict(zip(splits, ns))
        else:
            out[info.short] = {"train": ns[0]}
    if set(out) != set(FALLBACK_COUNTS):
        return FALLBACK_COUNTS, f"built-in copy (could not parse all of {path})"
    return out, f"`{path.name}` of the spec"


def pools(counts: dict, e_test: int) -> dict:
    """Per release: the training pool's train/val after the project's 80:20 where no val split is
    released, the labelled test split, and all images (for features)."""
    out = {}
    for ds, c in counts.items():
        if "val" in c:
            tr, va = c["train"], c["val"]
        else:
            tr, va = round(c["train"] * 0.8), c["train"] - round(c["train"] * 0.8)
        te = c.get("test", 0) + (e_test if ds == SUBMISSION else 0)
        out[ds] = {"train": tr, "val": va, "test": te, "all": tr + va + te}
    return out


def model_costs(models: list[str], ref_fwd: float, measured: dict) -> tuple[dict, str]:
    """model → (GFLOPs at 224, forward img/s, conv-step img/s or None, source)."""
    import torchvision
    from melanoma.train.models import model_config
    from torchvision.models import get_weight

    gf, nparams = {}, {}
    for m in models:
        cfg = model_config(m)
        w = get_weight(cfg.weights) if cfg.weights else torchvision.models.get_model_weights(m).DEFAULT
        crop = w.transforms().crop_size[0]
        gf[m] = w.meta["_ops"] * (SIZE / crop) ** 2
        nparams[m] = w.meta["num_params"]
    ref = "resnet50"
    if measured:
        # scale from what was measured: resnet50 if present, else the median FLOP-normalised rate
        if ref in measured:
            ref_rate = measured[ref]["fwd"]
        else:
            ref_rate = median([v["fwd"] * gf[m] / gf[ref] for m, v in measured.items() if m in gf])
        source = "measured on the GPU (train_throughput section); others scaled by GFLOPs"
    else:
        ref_rate = ref_fwd
        source = f"assumed: resnet50 forward {ref_fwd:,.0f} img/s at 224 px, scaled by GFLOPs"
    out = {}
    for m in models:
        if m in measured:
            out[m] = {"gflops": gf[m], "fwd": measured[m]["fwd"], "step": measured[m].get("conv"),
                      "source": "measured", "params": nparams[m]}
        else:
            out[m] = {"gflops": gf[m], "fwd": ref_rate * gf[ref] / gf[m], "step": None,
                      "source": "FLOPs-scaled", "params": nparams[m]}
    return out, source


def measured_gpu(size: int = SIZE) -> tuple[dict, dict]:
    """GPU rows at ``size`` and CPU reference numbers from RESULTS.md's train_throughput section."""
    d = _section("train_throughput") or {}
    rows = d.get("throughput", [])
    gpu, cpu = {}, {"conv_over_fwd": [], "none_over_fwd": [], "head": []}
    for r in rows:
        if "cuda" in str(d.get("device", "")) and r["size"] == size:
            g = gpu.setdefault(r["model"], {})
            if r["what"].startswith("forward (eval, channels_last)") and "1 thread" not in r["what"]:
                g["fwd"] = r["img/s"]
            elif r["what"] == "train step freeze=conv":
                g["conv"] = r["img/s"]
        if r["what"] == "train step freeze=conv":
            cpu["conv_over_fwd"].append(r["× forward"])
        elif r["what"] == "train step freeze=none":
            cpu["none_over_fwd"].append(r["× forward"])
        elif r["what"].startswith("head on cached features"):
            cpu["head"].append(r["img/s"])
    gpu = {m: v for m, v in gpu.items() if "fwd" in v}
    bat = d.get("batched_heads") or {}
    return gpu, {"device": d.get("device"), "gpu": d.get("gpu"), "batched_speedup": bat.get("speedup"), **cpu}


LITE0_GFLOPS = 0.39  # EfficientNet-B0/Lite0 at 224 px (published), not in torchvision's metadata


def depthwise_check() -> float | None:
    """Forward img/s per FLOP of efficientnet_lite0 relative to resnet18, measured on this CPU
    (train_throughput, same size) — a cross-check of ``--depthwise-efficiency``."""
    d = _section("train_throughput") or {}
    if "cuda" in str(d.get("device", "")):
        return None
    rows = d.get("throughput", [])
    what = ("forward (eval, channels_last, 1 thread)"  # less disturbed by other jobs' load
            if any(r["what"] == "forward (eval, channels_last, 1 thread)" for r in rows)
            else "forward (eval, channels_last)")
    f = {(r["model"], r["size"]): r["img/s"] for r in rows if r["what"] == what}
    sizes = [s for (m, s) in f if m == "efficientnet_lite0" and ("resnet18", s) in f]
    if not sizes:
        return None
    s = max(sizes)
    return (f[("efficientnet_lite0", s)] * LITE0_GFLOPS) / (f[("resnet18", s)] * 1.814)


def project(args) -> dict:
    from melanoma.data.registry import parse_combo
    from melanoma.train.models import paper_models
    from melanoma.train.params import epochs_for

    counts, counts_src = spec_counts()
    P = pools(counts, args.isic2020_test)
    combos = [parse_combo(l.strip()) for l in (common.REPO / "params" / "paper_combinations.txt")
              .read_text().splitlines() if l.strip() and not l.startswith("#")]
    models = paper_models()
    gpu, cpu = measured_gpu()
    costs, cost_src = model_costs(models, args.ref_fwd, gpu)
    il = _section("image_loading") or {}
    aug_per_core = args.aug_per_core or il.get("cache_augment_img_per_s_per_core")
    data_cap = aug_per_core * args.cpu_cores if aug_per_core else None
    if args.head_rate:
        head_rate, head_src = args.head_rate, "given"
    elif cpu["head"]:
        head_rate, head_src = max(cpu["head"]), ("measured on this CPU, one head at a time, batch 32, "
                                                 "the best of the measured settings")
    else:
        head_rate, head_src = 20000.0, "assumed"

    eval_imgs = sum(P[e]["val"] + P[e]["test"] for e in EVAL_SETS + [SUBMISSION])
    all_imgs = sum(p["all"] for p in P.values())
    train_all = sum(p["train"] for p in P.values())
    per_combo = []
    for c in combos:
        per_combo.append({"epochs": epochs_for(len(c)), "train": sum(P[d]["train"] for d in c),
                          "val": sum(P[d]["val"] for d in c)})
    train_steps = sum(x["epochs"] * x["train"] for x in per_combo)      # images through a train step
    val_fwd = sum(x["epochs"] * x["val"] for x in per_combo) + len(combos) * eval_imgs

    rows, tot = [], {"probe_gpu_h": 0.0, "paper_gpu_h": 0.0, "paper_data_bound_h": 0.0}
    for m in models:
        c = costs[m]
        fwd = c["fwd"]
        if c["source"] != "measured" and m.startswith("efficientnet"):
            fwd *= args.depthwise_efficiency  # depthwise convolutions: far below FLOP-proportional speed
        step = c["step"] or fwd / args.conv_step
        probe_imgs = all_imgs + args.views * train_all
        probe_h = probe_imgs / fwd / 3600
        paper_h = (train_steps / step + val_fwd / fwd) / 3600
        capped = min(step, data_cap) if data_cap else step
        paper_cap_h = (train_steps / capped + val_fwd / fwd) / 3600
        tot["probe_gpu_h"] += probe_h
        tot["paper_gpu_h"] += paper_h
        tot["paper_data_bound_h"] += paper_cap_h
        rows.append({"model": m, "GFLOPs@224": c["gflops"], "fwd img/s": fwd, "train-step img/s": step,
                     "cost from": c["source"], "probe GPU-h": probe_h, "paper GPU-h": paper_h,
                     "paper, CPU-augmented GPU-h": paper_cap_h})
    epochs_total = sum(x["epochs"] for x in per_combo)  # per model
    heads_cpu_h = len(models) * train_steps / head_rate / 3600
    tot["heads_cpu_h"] = heads_cpu_h
    if cpu.get("batched_speedup"):
        tot["heads_cpu_h_batched"] = heads_cpu_h / cpu["batched_speedup"]
    tot["ratio_paper_over_probe"] = tot["paper_gpu_h"] / tot["probe_gpu_h"]
    return {"rows": rows, "totals": tot, "assumptions": {
        "counts_source": counts_src, "pools": P, "n_combinations": len(combos), "n_models": len(models),
        "runs": len(combos) * len(models), "cost_source": cost_src, "ref_fwd": args.ref_fwd,
        "conv_step": args.conv_step, "views": args.views, "isic2020_test": args.isic2020_test,
        "eval_images_per_run": eval_imgs, "all_images": all_imgs, "train_images_all": train_all,
        "train_step_images_per_model": train_steps, "val_forward_images_per_model": val_fwd,
        "head_rate": head_rate, "head_source": head_src, "depthwise_efficiency": args.depthwise_efficiency,
        "depthwise_cpu_check": depthwise_check(), "aug_per_core": aug_per_core, "cpu_cores": args.cpu_cores,
        "data_cap": data_cap, "cpu_measured": cpu, "epochs_per_model": epochs_total}}


def main(argv=None):
    ap = parser(__doc__)
    ap.add_argument("--ref-fwd", type=float, default=1000.0,
                    help="assumed resnet50 forward img/s at 224 px (bf16, channels-last, one H100)")
    ap.add_argument("--conv-step", type=float, default=2.5,
                    help="a freeze=conv training step costs this many forwards per image")
    ap.add_argument("--depthwise-efficiency", type=float, default=0.3,
                    help="EfficientNets' speed relative to FLOP-proportional (depthwise convolutions)")
    ap.add_argument("--views", type=int, default=2, help="augmented views per training image (probe)")
    ap.add_argument("--isic2020-test", type=int, default=10982, help="ISIC 2020 unlabelled test images")
    ap.add_argument("--cpu-cores", type=int, default=16, help="CPU cores beside the GPU (augmentation)")
    ap.add_argument("--aug-per-core", type=float, default=None,
                    help="img/s of cache read + augmentation per core (default: image_loading's)")
    ap.add_argument("--head-rate", type=float, default=None,
                    help="head training features/s (default: train_throughput's CPU measurement)")
    args = ap.parse_args(argv)
    _RESULTS[0] = args.results
    facts = machine_facts()
    r = project(args)
    A, T = r["assumptions"], r["totals"]
    load_end = loadavg()

    lines = [
        f"Grid: {A['n_models']} models (`params/models.yaml`) × {A['n_combinations']} combinations "
        f"(`params/paper_combinations.txt`) = {A['runs']:,} runs at {SIZE} px, batch 32, one GPU.",
        f"Per-image cost: {A['cost_source']}. GFLOPs: torchvision weights `meta['_ops']` at the "
        f"weights' crop size × (224 / crop)².",
        f"A `freeze=conv` training step = {A['conv_step']:g} × a forward per image"
        + (f" (CPU measurements in train_throughput: conv step = ×{median(A['cpu_measured']['conv_over_fwd']):.2f} "
           f"of the forward's img/s, i.e. {1 / median(A['cpu_measured']['conv_over_fwd']):.1f} forwards)"
           if A["cpu_measured"]["conv_over_fwd"] else "") + ".",
        f"Dataset sizes from {A['counts_source']}; no-validation releases split 80:20; ISIC 2020's "
        f"unlabelled test = {A['isic2020_test']:,} images. Leakage removal (a few % of training "
        "images) ignored.",
        "Epochs: the paper's schedule (1 dataset → 30, n → 30 + 2n, ≤ 50). Per epoch: a training step "
        "per training image and a forward per validation image of the combination; per run at the end: "
        f"{A['eval_images_per_run']:,} forwards (val + test of ISIC 2017, ISIC 2018, 7-point, Kaggle, "
        "and ISIC 2020's val + test for the submission).",
        f"Per model, over its 54 runs: {A['train_step_images_per_model']:,} training-step images and "
        f"{A['val_forward_images_per_model']:,} forward images (paper mode).",
        f"Linear probe: every image of the 11 releases once ({A['all_images']:,}) + {A['views']} "
        f"augmented views of the {A['train_images_all']:,} training images, per model; heads on the "
        f"CPU at {A['head_rate']:,.0f} features/s ({A['head_source']}).",
        f"EfficientNets (depthwise convolutions) run at {A['depthwise_efficiency']:g} × their "
        "FLOP-proportional speed (a rule of thumb: EfficientNet-B1 trains about as fast as ResNet-50 "
        "on GPUs despite 6× fewer FLOPs)"
        + (f"; on this CPU efficientnet_lite0's forward per FLOP is {A['depthwise_cpu_check']:.2f} × "
           "resnet18's" if A["depthwise_cpu_check"] else "") + ".",
    ]
    if A["data_cap"]:
        lines.append(f"CPU-augmented variant (`loader: dataloader`): {A['cpu_cores']} cores × "
                     f"{A['aug_per_core']:.0f} img/s (measured per core: cache read + the paper's "
                     f"augmentation at 224 px) = {A['data_cap']:,.0f} img/s at most into the GPU. The "
                     "*paper GPU-h* column is `loader: resident` (images in GPU memory, augmentation "
                     "batched on the GPU), counting the network only: the augmentation's own GPU time "
                     "is not measured here (no GPU was lent).")
    print("Assumptions:\n  - " + "\n  - ".join(lines))
    print()
    print_table(r["rows"], nd=1)
    summary = (f"**Paper mode (`freeze: conv`): {T['paper_gpu_h']:,.0f} GPU-hours "
               f"({T['paper_gpu_h'] / 24:,.1f} days on one GPU)"
               + (f"; {T['paper_data_bound_h']:,.0f} h if augmentation runs on the CPU cores "
                  "(`loader: dataloader`)"
                  if A["data_cap"] else "")
               + f". Linear probe: {T['probe_gpu_h']:,.1f} GPU-hours of feature extraction + "
               f"{T['heads_cpu_h']:,.1f} CPU-hours of heads one at a time"
               + (f" ({T['heads_cpu_h_batched']:,.1f} with all heads of a backbone batched, at the "
                  "speed-up measured in train_throughput part C)" if T.get("heads_cpu_h_batched") else "")
               + " — on a GPU machine's 16 cores about 1/16 of that in wall time"
               + ". "
               f"Paper / probe (GPU) = ×{T['ratio_paper_over_probe']:,.0f}.**")
    if A["data_cap"]:
        fastest = max(row["train-step img/s"] for row in r["rows"])
        summary += (f" Augmenting on {A['cpu_cores']} CPU cores ({A['data_cap']:,.0f} img/s) "
                    + ("keeps up with every model's assumed training rate."
                       if A["data_cap"] >= fastest else "is the bottleneck for the fastest models."))
    print("\n" + summary.replace("**", ""))

    md = section_header("Projection: the paper grid on one GPU", facts, load_end, command_line())
    md += "Assumptions (a projection, not a measurement):\n\n" + "".join(f"- {x}\n" for x in lines)
    md += "\n" + md_table(r["rows"], nd=1)
    md += "\n" + summary + "\n"
    md += json_comment(r)
    if not args.no_write:
        write_results("projection", md, args.results)
    return r


if __name__ == "__main__":
    main()

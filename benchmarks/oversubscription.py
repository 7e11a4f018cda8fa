"""The bottleneck the measurements showed, before and after the fix (issue 7, item 3).

Profiling the demo (torch.profiler + timing each transform) showed that on 2 CPU cores the time of
the loop path and of feature extraction went into *thread oversubscription*: torch split tiny
per-image ops (the paper's augmentation on one image, MeshNet's small convolutions) over both
cores while another job held one of them, and waited. Fixes, each measured here in one run:

1. per-image transforms run with one intra-op thread (``dataset.CachedImages``);
2. each Snakemake job gets ``OMP_NUM_THREADS`` = its ``threads`` (``workflow/Snakefile``);
3. feature extraction in channels-last layout (``features.extract``).

    python benchmarks/oversubscription.py [--results benchmarks/RESULTS.md] [--seconds 3]

A busy loop in a second process stands in for "another job on the other core" in the contended
rows (what Snakemake's parallel jobs do to each other).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np
import torch

import common  # noqa: F401  (puts the repository on sys.path)
from common import RESULTS, load_note, loadavg, machine_facts, machine_line, write_results


def _spin(stop):
    x = 0
    while not stop.is_set():
        x += 1


def rate(fn, n_per_call: int, seconds: float) -> float:
    fn()
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        fn()
        n += n_per_call
    return n / (time.perf_counter() - t0)


def measure(seconds: float) -> list[dict]:
    from melanoma.train.models import build_model, split_backbone_head
    from melanoma.train.transforms import train_transform

    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (256, 300, 3), dtype=np.uint8) for _ in range(32)]
    tf = train_transform(64)

    def aug_threads():
        for im in imgs:
            tf(im)

    def aug_one_thread():
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for im in imgs:
                tf(im)
        finally:
            torch.set_num_threads(n)

    net = build_model("meshnet_s4")
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x, y = torch.randn(32, 3, 64, 64), torch.randint(0, 2, (32,))

    def step():
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    torch.manual_seed(0)
    lite, _ = split_backbone_head(build_model("efficientnet_lite0", weights="imagenet", freeze="backbone"))
    lite.eval()
    xb = torch.randn(32, 3, 128, 128)

    def extract(cl: bool):
        def f():
            with torch.inference_mode():
                m = lite.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
                m(xb.to(memory_format=torch.channels_last) if cl else xb.contiguous())
        return f

    rows = []
    for contended in (False, True):
        stop = mp.Event()
        hog = mp.Process(target=_spin, args=(stop,)) if contended else None
        if hog:
            hog.start()
        try:
            torch.set_num_threads(2)
            a_before = rate(aug_threads, len(imgs), seconds)
            a_after = rate(aug_one_thread, len(imgs), seconds)
            s_before = rate(step, 32, seconds)
            torch.set_num_threads(1)
            s_after = rate(step, 32, seconds)
            torch.set_num_threads(2)
            e_before = rate(extract(False), 32, seconds)
            e_after = rate(extract(True), 32, seconds)
        finally:
            if hog:
                stop.set()
                hog.join()
        tag = "other core busy" if contended else "idle"
        rows += [
            {"what": "paper augmentation, 64 px, per image", "cond": tag, "before": a_before, "after": a_after,
             "fix": "transform with 1 intra-op thread"},
            {"what": "MeshNet-s4 training step, 64 px, batch 32", "cond": tag, "before": s_before, "after": s_after,
             "fix": "job threads = Snakemake threads (1)"},
            {"what": "EfficientNet-Lite0 features, 128 px, batch 32", "cond": tag, "before": e_before,
             "after": e_after, "fix": "channels-last"},
        ]
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--seconds", type=float, default=3.0)
    a = ap.parse_args()
    facts = machine_facts()
    rows = measure(a.seconds)
    end = loadavg()
    lines = ["## The bottleneck: thread oversubscription (before / after)", "",
             machine_line(facts, end), "", load_note(facts, end), "",
             "Command: `.venv/bin/python benchmarks/oversubscription.py`. Images or samples per second; "
             "*other core busy* = a spinning second process, as when Snakemake runs two jobs.", "",
             "| workload | condition | before (img/s) | after (img/s) | speed-up | fix |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['what']} | {r['cond']} | {r['before']:.0f} | {r['after']:.0f} | "
                     f"{r['after'] / r['before']:.2f}× | {r['fix']} |")
        print(f"{r['what']:48s} {r['cond']:16s} {r['before']:8.0f} → {r['after']:8.0f} img/s "
              f"({r['after'] / r['before']:.2f}×)")
    write_results("oversubscription", "\n".join(lines), a.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

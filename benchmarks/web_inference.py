"""Size and in-browser inference time of candidate web models (onnxruntime-web, wasm, 1 thread).

    python benchmarks/web_inference.py                       # meshnet_s4, meshnet, mobilenet_v3_small at 64 and 224 px
    python benchmarks/web_inference.py --models meshnet_s4 --sizes 64 --runs 100
    python benchmarks/web_inference.py --screenshot fig2.png --model-dir build/web-model --image lesion.jpg

Each model is built with random weights (size and speed do not depend on the weights), saved as a
run directory, exported with :func:`melanoma.report.export.export_run` (parity checked), assembled into
the page with :func:`melanoma.report.export.assemble_site`, opened in headless Debian Chromium and timed
with the page's own ``__melanoma.bench(n)`` (median of n ``session.run`` calls after a warm-up).
onnxruntime's Python CPU time (1 thread) is printed beside it. Needs ``/usr/bin/chromium`` and
PyPI ``playwright``. ``--screenshot`` instead scores one image with an exported model and saves the
page (the book's Fig. 2).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from melanoma.io import write_json, write_yaml  # noqa: E402
from melanoma.report.browser import launch, open_ready, screenshot, serve, upload  # noqa: E402,F401
from melanoma.report.export import assemble_site, export_run  # noqa: E402



@contextmanager
def open_page(url: str, viewport=(900, 1000)):
    with launch() as b:
        yield open_ready(b, url, viewport)


def fake_run(model_name: str, size: int, folder: Path) -> Path:
    """A run directory holding a randomly initialised model (what export_run reads)."""
    import torch

    from melanoma.train.models import build_model

    torch.manual_seed(0)
    model = build_model(model_name, weights="none", freeze="none")
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "model.pt")
    write_yaml(folder / "params.yaml", {"model": model_name, "weights": "none", "freeze": "none",
                                        "train": "-", "eval_sets": [], "image_size": size})
    write_json(folder / "run.json", {"run_id": folder.name, "synthetic": True})
    return folder


def python_ms(onnx_path: Path, size: int, runs: int) -> float:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    sess.run(None, {"input": x})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {"input": x})
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times))


def bench(models: list[str], sizes: list[int], runs: int) -> list[dict]:
    from PIL import Image

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        img = tmp / "lesion.png"
        yy, xx = np.mgrid[0:480, 0:640]
        blob = np.exp(-(((yy - 240) / 120.0) ** 2 + ((xx - 320) / 150.0) ** 2))[..., None]
        Image.fromarray((np.array([210, 170, 150]) * (1 - blob) + np.array([80, 50, 40]) * blob)
                        .astype(np.uint8)).save(img)
        for name in models:
            for size in sizes:
                run = fake_run(name, size, tmp / f"{name}_{size}" / "run")
                mdir = run.parent / "model"
                meta = export_run(run, mdir)
                site = assemble_site(run.parent / "site", mdir)
                with serve(site) as url, open_page(f"{url}/index.html") as page:
                    r = upload(page, img)
                    assert "error" not in r, r
                    b = page.evaluate(f"window.__melanoma.bench({runs})")
                rows.append({"model": name, "size": size, "params": meta["n_params"],
                             "onnx_KB": round(meta["onnx"]["bytes"] / 1024, 1),
                             "browser_ms_median": round(b["median"], 2), "browser_ms_min": round(b["min"], 2),
                             "python_ort_ms": round(python_ms(mdir / "model.onnx", size, runs), 2),
                             "parity": meta["parity"]["max_abs_logit_diff"]})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="meshnet_s4,meshnet,mobilenet_v3_small")
    ap.add_argument("--sizes", default="64,224", help="input sizes (the demo's web model uses 64)")
    ap.add_argument("--runs", type=int, default=50, help="timed runs per model (median reported)")
    ap.add_argument("--screenshot", type=Path, default=None, help="save the page after scoring --image")
    ap.add_argument("--model-dir", type=Path, default=None, help="with --screenshot: an exported model folder")
    ap.add_argument("--image", type=Path, default=None, help="with --screenshot: the image to score")
    a = ap.parse_args()
    if a.screenshot:
        if not (a.model_dir and a.image):
            ap.error("--screenshot needs --model-dir and --image")
        print(json.dumps(screenshot(a.model_dir, a.image, a.screenshot)))
        return 0
    rows = bench(a.models.split(","), [int(s) for s in a.sizes.split(",")], a.runs)
    print(f"\n{'model':<20}{'size':>5}{'params':>10}{'ONNX KB':>10}{'browser ms':>12}{'python ms':>11}")
    for r in rows:
        print(f"{r['model']:<20}{r['size']:>5}{r['params']:>10,}{r['onnx_KB']:>10}"
              f"{r['browser_ms_median']:>12}{r['python_ort_ms']:>11}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

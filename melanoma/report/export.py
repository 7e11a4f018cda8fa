"""ONNX export and the web metadata: a finished run → ``model.onnx`` + ``model.json`` → the web page.

>>> facts = export_run("results/demo/runs/meshnet_s4__ABCDEFGHIJ", "build/web-model")  # doctest: +SKIP
>>> assemble_site("book/_build/html/webapp", "build/web-model")                       # doctest: +SKIP

:func:`export_run` rebuilds the run's architecture (``params.yaml``), loads its best epoch
(``model.pt``, ``weights_only=True``), exports it with a fixed ``1×3×S×S`` float32 input
(``input`` → ``logits``; torch's TorchScript-based exporter, ``dynamo=False``: it needs no network
and no extra package), checks parity with onnxruntime (:func:`check_parity`, max |Δ logit| < 1e-4)
and writes ``model.json`` — everything the page needs and nothing it must guess:

* ``preprocess``: the exact chain of the training data (image cache → evaluation transform):
  ``cache_shorter`` (PIL bicubic resize of the shorter side at ingest, ``reducing_gap=3``),
  ``cache_vertical_first`` (Pillow ≥ 13 runs the vertical pass first when the height shrinks by more
  than twice as many pixels as the width; probed on the installed Pillow), ``resize`` (torchvision
  antialiased bilinear, shorter side; ``round(S·256/224)`` unless ``params.yaml`` sets ``resize``),
  ``crop`` (centre crop ``S``), ``mean``/``std`` (the model's normalisation). The page's
  ``web/preprocess.js`` re-implements that chain in integer arithmetic and reproduces the tensor
  bit for bit (``tests/report/test_web.py``);
* ``classes`` ``["non-melanoma", "melanoma"]`` (softmax over the two logits; label 1 = melanoma);
* ``threshold`` (entropy, bits) with ``threshold_source``: ``rejection.json``'s ``web_threshold``
  if present, else the threshold chosen on the validation split of its first evaluation set whose
  result is not flagged, else the fallback 0.5 bits (and ``threshold_source`` says so);
  ``threshold_facts``: the fraction r it rejected on validation, the validation and test coverage
  it reached, and its flags (the page shows them beside the threshold); ``conformal``: the
  class-conditional conformal thresholds of the same evaluation set (``min_prob`` per class), so
  the page shows the conformal set beside the entropy;
* the model name, the training combination, ``test_metrics`` (from ``metrics.json``; without it,
  computed from ``predictions.parquet`` without CIs and ``metrics_source`` says so),
  ``synthetic``, the ONNX file's size and sha256, and the parity measured at export.

:func:`assemble_site` copies the page (``web/``), the wasm-only onnxruntime-web runtime and the
model files into one static folder that any web server (or the book's ``html_extra_path``) serves.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from melanoma.home import sources
from melanoma.io import atomic_path, read_json, read_yaml, write_json

CLASSES = ["non-melanoma", "melanoma"]
DEFAULT_THRESHOLD = 0.5          # bits; used when the run has no rejection.json
PARITY_TOL = 1e-4                # max |Δ logit| between onnxruntime and torch
MODEL_JSON_VERSION = 1
WEB_DIR = sources() / "web"
#: The page's own files (``web/``), copied by :func:`assemble_site`.
PAGE_FILES = ("index.html", "fileguard.js", "app.js", "preprocess.js", "style.css")
#: onnxruntime-web's wasm-only build (``web/node_modules/onnxruntime-web/dist/``): the loader, the
#: Emscripten glue it imports, and the SIMD wasm binary (single-threaded here: no COOP/COEP needed).
ORT_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")


# ----------------------------------------------------------------------------- the run's model

def load_run_model(run_dir: str | os.PathLike):
    """The run's network in eval mode, and its ``params.yaml`` as a dict."""
    import torch

    from melanoma.train.models import build_model, set_train_mode

    run_dir = Path(run_dir)
    for name in ("params.yaml", "model.pt"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir / name} not found: {run_dir} is not a finished run "
                                    "(train it with `melanoma train`; run.json marks a finished run)")
    params = read_yaml(run_dir / "params.yaml") or {}
    # weights="none": the architecture only; the run's own weights are loaded next.
    model = build_model(params["model"], weights="none", freeze=params.get("freeze", "none"),
                        **(params.get("model_kwargs") or {}))
    from melanoma.io import read_torch

    state = read_torch(run_dir / "model.pt", "model", fix=f"retrain the run (`melanoma retry "
                       f"{run_dir.name} --grid <grid file>`, or `melanoma train` into {run_dir})")
    model.load_state_dict(state)
    set_train_mode(model, False)
    return model, params


def input_size(params: dict) -> int:
    return int(params.get("image_size") or 224)


def resize_size(params: dict) -> int:
    """The evaluation resize (shorter side) of a run: ``params.resize`` or round(S·256/224)."""
    return int(params.get("resize") or round(input_size(params) * 256 / 224))


def _pil_vertical_first() -> bool:
    """Does the installed Pillow run the vertical pass first when the height shrinks much more?

    Pillow ≥ 13 does (``ImagingResampleInner``: height shrinks by more than twice the width's
    pixels); older versions always resample horizontally first. The two orders round the
    intermediate image differently, so the page must copy the one that made the image cache.
    """
    from PIL import Image

    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 256, (64, 8, 3), dtype=np.uint8))
    full = np.asarray(im.resize((6, 16), Image.BICUBIC))
    vh = np.asarray(im.resize((8, 16), Image.BICUBIC).resize((6, 16), Image.BICUBIC))
    hv = np.asarray(im.resize((6, 64), Image.BICUBIC).resize((6, 16), Image.BICUBIC))
    if np.array_equal(full, vh) and not np.array_equal(full, hv):
        return True
    if np.array_equal(full, hv):
        return False
    raise RuntimeError("the installed Pillow resamples in an order the web page does not know; "
                       "update web/preprocess.js")


def preprocess_spec(params: dict) -> dict:
    """model.json's ``preprocess`` block for a run (see the module docstring)."""
    from melanoma.train.models import model_config

    cfg = model_config(params["model"])
    size, resize = input_size(params), resize_size(params)
    if resize < size:
        raise ValueError(f"resize {resize} < crop {size}: the centre crop would need padding")
    return {
        "cache_shorter": int(params.get("cache_size") or 256),
        "cache_filter": "PIL BICUBIC, reducing_gap=3.0 (melanoma.data.images.resize_shorter)",
        "cache_vertical_first": _pil_vertical_first(),
        "resize": resize,
        "resize_filter": "torchvision Resize(antialias=True), bilinear, native uint8",
        "crop": size,
        "scale": 255,
        "mean": [float(v) for v in cfg.mean],
        "std": [float(v) for v in cfg.std],
        "layout": "NCHW, RGB, float32",
    }


# ----------------------------------------------------------------------------- threshold, metrics

def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def rejection_threshold(run_dir: str | os.PathLike, eval_order: list[str] | None = None
                        ) -> tuple[float, str, str | None]:
    """(threshold in bits, where it came from, its evaluation set or None).

    ``RUN_DIR/rejection.json``: its ``web_threshold`` if set; else the threshold of the first
    evaluation set (in ``eval_order``, the run's order, then the file's) that has a finite one and
    no flag (:func:`melanoma.evaluate.reject.rejection_flags`) — chosen on that set's validation split —
    else the first finite one even if flagged (the source then says so). No usable file:
    :data:`DEFAULT_THRESHOLD`.
    """
    path = Path(run_dir) / "rejection.json"
    if not path.is_file():
        return DEFAULT_THRESHOLD, f"default {DEFAULT_THRESHOLD} bits (no rejection.json in the run)", None
    rej = read_json(path)
    if _finite(rej.get("web_threshold")):
        return float(rej["web_threshold"]), "rejection.json: web_threshold", None
    if rej.get("mode") == "coverage":
        return (DEFAULT_THRESHOLD, f"default {DEFAULT_THRESHOLD} bits (the run rejected by coverage: "
                "a fraction, not an entropy, so it cannot be applied to one image)", None)
    sets = rej.get("eval_sets") or {}
    order = [e for e in (eval_order or []) if e in sets] + [e for e in sets if e not in (eval_order or [])]
    usable = [e for e in order if isinstance(sets[e], dict) and _finite(sets[e].get("threshold"))]
    for es in sorted(usable, key=lambda e: bool(sets[e].get("flags"))):
        flags = "; ".join(f["text"] for f in sets[es].get("flags") or [])
        return (float(sets[es]["threshold"]),
                f"rejection.json: threshold chosen on the validation split of {es}"
                + (f" (FLAGGED: {flags})" if flags else ""), es)
    return (DEFAULT_THRESHOLD, f"default {DEFAULT_THRESHOLD} bits (rejection.json has no finite "
            "threshold)", None)


def conformal_facts(run_dir: str | os.PathLike, eval_set: str | None) -> dict | None:
    """The class-conditional conformal thresholds fitted on ``eval_set``'s validation split
    (rejection.json ``methods.conformal``), for the page: class c is in the set iff
    p_c >= ``min_prob[c]``. ``None`` when the run has no conformal result there."""
    path = Path(run_dir) / "rejection.json"
    if eval_set is None or not path.is_file():
        return None
    m = (((read_json(path).get("eval_sets") or {}).get(eval_set) or {}).get("methods") or {}).get("conformal")
    if not m:
        return None
    return {"alpha": m["alpha"], "q": m["q"], "min_prob": m["min_prob"], "n_cal": m["n_cal"],
            "eval_set": eval_set, "calibrated_on": m.get("calibrated_on", "validation split"),
            "class_coverage": {c: {k: v.get(k) for k in ("observed", "target", "slack")}
                               for c, v in (m.get("class_coverage") or {}).items()},
            "rule": "class c is in the set iff p_c >= min_prob[c] (classes: non-melanoma, melanoma); "
                    "confident iff exactly one class is in the set, else Uncertain"}


def rejection_facts(run_dir: str | os.PathLike, eval_set: str | None) -> dict:
    """What the chosen threshold did where it was chosen: the fraction r it rejected on validation,
    the validation and test coverage, and its flags (``{}`` without a rejection result)."""
    path = Path(run_dir) / "rejection.json"
    if eval_set is None or not path.is_file():
        return {}
    b = (read_json(path).get("eval_sets") or {}).get(eval_set) or {}
    return {"fraction": b.get("fraction"), "val_coverage": b.get("val_coverage"),
            "test_coverage": b.get("coverage"), "flags": [f["text"] for f in b.get("flags") or []]}


_METRIC_KEYS = ("auc", "accuracy", "sensitivity", "specificity", "balanced_accuracy", "f1", "ece",
                "brier", "n", "n_melanoma")


def run_test_metrics(run_dir: str | os.PathLike) -> tuple[dict, str]:
    """Per evaluation set, the headline test metrics (and the AUC's CI when present)."""
    run_dir = Path(run_dir)
    out: dict[str, dict] = {}
    mpath = run_dir / "metrics.json"
    if mpath.is_file():
        for es, block in (read_json(mpath).get("eval_sets") or {}).items():
            test = block.get("test") if isinstance(block, dict) else None
            if not isinstance(test, dict):
                continue
            row = {k: test[k] for k in _METRIC_KEYS if k in test}
            ci = (test.get("ci") or {}).get("auc")
            if isinstance(ci, dict):
                row["auc_ci"] = [ci.get("low"), ci.get("high")]
            out[es] = row
        return out, "metrics.json (test split; decision threshold 0.5)"
    ppath = run_dir / "predictions.parquet"
    if not ppath.is_file():
        return {}, "none (no metrics.json or predictions.parquet in the run)"
    import pandas as pd

    from melanoma.evaluate.metrics import classification_report

    pred = pd.read_parquet(ppath)
    pred = pred[(pred["split"] == "test") & (pred["label"] >= 0)]
    for es, g in pred.groupby("eval_set", sort=False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rep = classification_report(g["label"].to_numpy(), g["p_melanoma"].to_numpy())
        out[str(es)] = {k: rep[k] for k in _METRIC_KEYS if k in rep}
    return out, "predictions.parquet, computed at export (test split; no CIs; run `melanoma calibrate`)"


def _json_safe(obj: Any) -> Any:
    """NaN/inf → None (JSON.parse in the browser rejects NaN), numpy scalars → Python."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# ----------------------------------------------------------------------------- export + parity

def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _to_onnx(model, size: int, path: Path, opset: int) -> None:
    import torch

    x = torch.zeros(1, 3, size, size)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(tmp), dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["logits"], do_constant_folding=True)


def parity_inputs(size: int, n: int = 8, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                  seed: int = 0) -> np.ndarray:
    """(n, 3, size, size) float32: half N(0, 1) noise, half normalised smooth lesion-like blobs."""
    rng = np.random.default_rng(seed)
    n_rand = n - n // 2
    xs = [rng.standard_normal((3, size, size)).astype(np.float32) for _ in range(n_rand)]
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    for _ in range(n - n_rand):
        skin = rng.uniform(0.55, 0.9, 3)
        lesion = rng.uniform(0.1, 0.45, 3)
        cy, cx, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.3)
        w = np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)))[None]
        img = skin[:, None, None] * (1 - w) + lesion[:, None, None] * w
        xs.append(((img - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]).astype(np.float32))
    return np.stack(xs)


def check_parity(run_dir: str | os.PathLike, onnx_path: str | os.PathLike, n: int = 8) -> float:
    """max |logit(onnxruntime) − logit(torch)| over ``n`` inputs (random and smooth blobs).

    The ONNX model has a fixed batch of 1, so the inputs go one at a time through both.
    """
    import onnxruntime as ort
    import torch

    model, params = load_run_model(run_dir)
    from melanoma.train.models import model_config

    cfg = model_config(params["model"])
    xs = parity_inputs(input_size(params), n, cfg.mean, cfg.std)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    worst = 0.0
    with torch.no_grad():
        for x in xs:
            ref = model(torch.from_numpy(x[None])).numpy()
            got = sess.run(None, {name: x[None]})[0]
            worst = max(worst, float(np.abs(ref - got).max()))
    return worst


def export_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike, *, opset: int = 17) -> dict:
    """Export a finished run to ``OUT/model.onnx`` + ``OUT/model.json``; returns model.json's dict.

    Raises ``FileNotFoundError`` for an unfinished run and ``RuntimeError`` when onnxruntime and
    torch disagree by :data:`PARITY_TOL` or more.
    """
    import onnx
    import torch

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    model, params = load_run_model(run_dir)
    run = read_json(run_dir / "run.json") if (run_dir / "run.json").is_file() else {}
    size = input_size(params)
    onnx_path = out_dir / "model.onnx"
    out_dir.mkdir(parents=True, exist_ok=True)
    _to_onnx(model, size, onnx_path, opset)
    onnx.checker.check_model(str(onnx_path))
    parity = check_parity(run_dir, onnx_path)
    if not parity < PARITY_TOL:
        raise RuntimeError(f"ONNX export of {run_dir} disagrees with torch: max |Δ logit| = "
                           f"{parity:.3g} >= {PARITY_TOL}")
    threshold, source, thr_set = rejection_threshold(run_dir, list(params.get("eval_sets") or []))
    metrics, metrics_source = run_test_metrics(run_dir)
    n_params = sum(p.numel() for p in model.parameters())
    meta = {
        "format_version": MODEL_JSON_VERSION,
        "model": params["model"],
        "run_id": run.get("run_id", run_dir.name),
        "train": params.get("train"),
        "train_label": run.get("train_label"),
        "datasets": run.get("datasets"),
        "weights": params.get("weights"),
        "freeze": params.get("freeze"),
        "n_params": int(n_params),
        "synthetic": bool(run.get("synthetic", False)),
        "onnx": {"file": "model.onnx", "bytes": onnx_path.stat().st_size, "sha256": _sha256(onnx_path),
                 "opset": opset, "input": "input", "output": "logits", "input_shape": [1, 3, size, size],
                 "dtype": "float32", "exporter": f"torch {torch.__version__} (dynamo=False)"},
        "input_size": size,
        "preprocess": preprocess_spec(params),
        "classes": CLASSES,
        "output": "logits; softmax gives [p(non-melanoma), p(melanoma)]",
        "decision_threshold": 0.5,
        "threshold": threshold,
        "threshold_unit": "bits (binary entropy of the softmax; 'Uncertain' when entropy > threshold)",
        "threshold_source": source,
        "threshold_eval_set": thr_set,
        "threshold_facts": rejection_facts(run_dir, thr_set),
        "conformal": conformal_facts(run_dir, thr_set),
        "test_metrics": metrics,
        "metrics_source": metrics_source,
        "eval_sets": params.get("eval_sets"),
        "parity": {"max_abs_logit_diff": parity, "tolerance": PARITY_TOL, "n": 8,
                   "against": "torch, CPU, eval mode"},
        "git_commit": run.get("git_commit", ""),
    }
    meta = _json_safe(meta)
    write_json(out_dir / "model.json", meta)
    for f in ("model.onnx", "model.json"):
        (out_dir / f).chmod(0o644)
    return meta


# ----------------------------------------------------------------------------- the static site

def ensure_runtime(web_dir: str | os.PathLike = WEB_DIR) -> Path:
    """``web/node_modules/onnxruntime-web/dist``, running ``npm ci`` in ``web/`` when it is missing.

    ``npm ci`` installs exactly what ``web/package-lock.json`` pins, from the npm registry; the page
    itself never fetches anything from a CDN.
    """
    web_dir = Path(web_dir)
    dist = web_dir / "node_modules" / "onnxruntime-web" / "dist"
    if not all((dist / f).is_file() for f in ORT_FILES):
        npm = shutil.which("npm")
        if npm is None:
            raise FileNotFoundError(
                f"{dist} is missing and npm is not installed: install Node.js + npm, then run "
                f"`npm ci` in {web_dir}")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=web_dir,
                       check=True)
        missing = [f for f in ORT_FILES if not (dist / f).is_file()]
        if missing:
            raise FileNotFoundError(f"onnxruntime-web installed but {missing} not in {dist}; "
                                    "the pinned version's file names changed: update ORT_FILES")
    return dist


def assemble_site(site_dir: str | os.PathLike, model_dir: str | os.PathLike, *,
                  web_dir: str | os.PathLike = WEB_DIR) -> Path:
    """Copy the page, the onnxruntime-web wasm runtime and the model into ``site_dir``.

    ``site_dir`` then holds everything the page loads (all same-origin, relative URLs):
    ``index.html fileguard.js app.js preprocess.js style.css``, :data:`ORT_FILES`, ``model.onnx model.json``.
    Serve it with any static web server (or copy it into the book's HTML build).
    """
    site_dir, model_dir, web_dir = Path(site_dir), Path(model_dir), Path(web_dir)
    for f in ("model.onnx", "model.json"):
        if not (model_dir / f).is_file():
            raise FileNotFoundError(f"{model_dir / f} not found; run `melanoma export RUN_DIR --out "
                                    f"{model_dir}` first")
    dist = ensure_runtime(web_dir)
    site_dir.mkdir(parents=True, exist_ok=True)
    for src in [web_dir / f for f in PAGE_FILES] + [dist / f for f in ORT_FILES] + \
               [model_dir / "model.onnx", model_dir / "model.json"]:
        with atomic_path(site_dir / src.name) as tmp:
            shutil.copyfile(src, tmp)
            tmp.chmod(0o644)                 # a web server reads them as another user
    return site_dir

"""The paper's training recipe, read top to bottom (cf. torchvision's references/classification).

``train_run(params)`` → a run directory::

    params.yaml          the resolved parameters
    model.pt             state_dict of the best epoch (load with ``torch.load(..., weights_only=True)``)
    history.csv          per epoch: losses, accuracies, val AUC, lr, seconds, img/s
    predictions.parquet  every val/test image of every evaluation set: p(melanoma), logits
    leakage.parquet      duplicates removed from this run's training data, per evaluation set
    run.json             timings, device, versions, git commit, manifest hashes, trainable params
                         (written last: its presence means the run finished)
    checkpoint.pt        the last finished epoch (resume point; removed when the run finishes)

Recipe (§3.2 of the paper): cross-entropy, SGD(lr 1e-3, momentum 0.9), StepLR(7, 0.1) per epoch,
batch 32, epochs by number of datasets (1 → 30 … 10 → 50), melanoma oversampled by inverse class
frequency, the paper's augmentation, checkpoint = best validation epoch (default: validation loss).

Two paths: the *loop* path runs the network every step (needed for ``freeze=conv|none``); the
*fast* path (``freeze=backbone``) trains the head on cached backbone features
(:mod:`melanoma.features`) — identical to the loop path when augmentation is off.
"""

from __future__ import annotations

import copy
import hashlib
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import features as feats
from .cache import ImageCache
from .datasets.combine import combine
from .datasets.dedup import eval_frame
from .io import atomic_path, write_json, write_parquet, write_text, write_yaml
from .models import build_model, model_config, set_train_mode, split_backbone_head, trainable_summary
from .params import TrainParams
from .transforms import eval_transform, train_transform


# ----------------------------------------------------------------------------- helpers

def resolve_device(spec: str = "auto") -> torch.device:
    if spec != "auto":
        return torch.device(spec)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def epoch_order(labels: np.ndarray, epoch: int, seed: int, oversample: bool = True) -> np.ndarray:
    """Indices for one epoch: with ``oversample``, n draws with replacement, each sample weighted by
    the inverse frequency of its class (so both classes are drawn equally often); else a permutation.
    Seeded by (seed, epoch) so that a resumed run draws exactly what an uninterrupted one would."""
    rng = np.random.default_rng([seed, epoch])
    n = len(labels)
    if not oversample:
        return rng.permutation(n)
    counts = np.bincount(labels, minlength=2).astype(float)
    w = 1.0 / counts[labels]
    return rng.choice(n, size=n, replace=True, p=w / w.sum())


def _val_metrics(logits: torch.Tensor, y: np.ndarray) -> dict:
    yt = torch.from_numpy(np.array(y, dtype=np.int64))
    p = torch.softmax(logits.float(), 1)[:, 1].numpy()
    return {"val_loss": float(F.cross_entropy(logits.float(), yt)),
            "val_accuracy": float((logits.argmax(1) == yt).float().mean()),
            "val_auc": _val_auc(y, p)}


def _val_auc(y: np.ndarray, p: np.ndarray) -> float:
    """:func:`melanoma.metrics.auc`, quiet: a one-class validation set gives NaN every epoch."""
    import warnings

    from .metrics import auc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return auc(y, p)


def _better(select: str, new: float, best: float | None) -> bool:
    if best is None or np.isnan(best):
        return not np.isnan(new)
    return new < best if select == "val_loss" else new > best


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except Exception:
        return ""


def _file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else ""


def _params_key(p: TrainParams) -> str:
    d = p.to_dict()
    for k in ("workers", "device", "out"):  # do not change results
        d.pop(k)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- data

def load_data(p: TrainParams):
    """The combination's train/val rows (cleaned of leakage) and the evaluation rows."""
    c = combine(p.work, p.train, p.eval_sets, policy=p.leakage)
    ev = eval_frame(p.work, p.eval_sets) if p.eval_sets else pd.DataFrame(columns=c.val.columns)
    return c, ev.reset_index(drop=True)


# ----------------------------------------------------------------------------- loop path

def _loader(rows: pd.DataFrame, cache: ImageCache, tf, order, p: TrainParams, batch_size: int):
    ds = feats.CachedImages(rows["content_hash"], rows["label"].clip(lower=0), cache, tf)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, sampler=list(order),
                                       num_workers=p.workers, persistent_workers=False)


@torch.no_grad()
def _predict_images(model, rows, cache, tf, p, device) -> torch.Tensor:
    set_train_mode(model, False)
    out = []
    amp = device.type == "cuda"
    for x, _ in _loader(rows, cache, tf, range(len(rows)), p, max(p.batch_size, 64)):
        x = x.to(device)
        if amp:
            x = x.to(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out.append(model(x).float().cpu())
    return torch.cat(out) if out else torch.zeros((0, 2))


def _train_epoch_loop(model, opt, rows, cache, tf, order, p, device, progress, desc):
    set_train_mode(model, True)
    amp = device.type == "cuda"
    tot, correct, n = 0.0, 0, 0
    for x, y in tqdm(_loader(rows, cache, tf, order, p, p.batch_size), desc=desc,
                     disable=not progress, leave=False, unit="batch", mininterval=2.0):
        x, y = x.to(device), y.to(device)
        if amp:
            x = x.to(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tot += float(loss.detach()) * len(y)
        correct += int((logits.argmax(1) == y).sum())
        n += len(y)
    return tot / max(n, 1), correct / max(n, 1), n


# ----------------------------------------------------------------------------- fast path

def _train_epoch_head(head, opt, X_views: list[np.ndarray], y: np.ndarray, order, p, epoch):
    # one thread: batches of 32 × d matmuls are far too small to split (measured 680 vs 101,519
    # features/s with 2 vs 1 threads on a busy 2-core machine, benchmarks/RESULTS.md)
    with feats.single_thread():
        return _head_epoch(head, opt, X_views, y, order, p, epoch)


def _head_epoch(head, opt, X_views, y, order, p, epoch):
    head.train()
    rng = np.random.default_rng([p.seed, epoch, 7])
    view = rng.integers(0, len(X_views), size=len(order)) if len(X_views) > 1 else np.zeros(len(order), int)
    tot, correct, n = 0.0, 0, 0
    for s in range(0, len(order), p.batch_size):
        idx = order[s:s + p.batch_size]
        vv = view[s:s + p.batch_size]
        x = torch.from_numpy(np.stack([X_views[v][i] for i, v in zip(idx, vv)]))
        yt = torch.from_numpy(y[idx])
        logits = head(x)
        loss = F.cross_entropy(logits, yt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tot += float(loss.detach()) * len(idx)
        correct += int((logits.argmax(1) == yt).sum())
        n += len(idx)
    return tot / max(n, 1), correct / max(n, 1), n


# ----------------------------------------------------------------------------- the run

def train_run(p: TrainParams, *, progress: bool = True, stop_after: int | None = None,
              log=print) -> Path:
    """Train one model on one combination and score the evaluation sets. Resumable.

    ``stop_after=k`` stops after epoch k as if killed (the checkpoint stays): used by tests.
    """
    p.validate()
    out = Path(p.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    device = resolve_device(p.device)
    torch.manual_seed(p.seed)
    np.random.seed(p.seed % 2**32)
    cfg = model_config(p.model)
    mean, std = cfg.mean, cfg.std

    t = time.perf_counter()
    combo, ev = load_data(p)
    timings["data"] = time.perf_counter() - t
    if not combo.leakage.empty:
        write_parquet(out / "leakage.parquet", combo.leakage)
    y_tr = combo.train["label"].to_numpy(np.int64)
    y_va = combo.val["label"].to_numpy(np.int64)
    if len(np.unique(y_tr)) < 2:
        raise ValueError(f"training data of {p.train!r} has only one class; cannot train a classifier")

    torch.manual_seed(p.seed)
    model = build_model(p.model, weights=p.weights, freeze=p.freeze)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    summary = trainable_summary(model)
    log(f"[train] {p.model} weights={p.weights} freeze={p.freeze} on {combo.label} "
        f"({len(y_tr)} train / {len(y_va)} val, {int(y_tr.sum())} melanoma) — "
        f"{summary['n_trainable']:,} of {summary['n_params']:,} parameters train; device {device}; "
        f"{'fast (feature cache)' if p.use_fast else 'loop'} path")
    write_yaml(out / "params.yaml", p.to_dict())

    trainable = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.SGD(trainable, lr=p.lr, momentum=p.momentum)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=p.step_size, gamma=p.gamma)
    cache = ImageCache(Path(p.work) / "cache", p.cache_size)
    size, resize = p.image_size, p.eval_resize
    ev_tf = eval_transform(size, resize, mean=mean, std=std)
    tr_tf = train_transform(size, mean=mean, std=std) if p.augment else ev_tf

    # ---- fast path: features once per dataset, reused by every combination
    if p.use_fast:
        t = time.perf_counter()
        backbone, head = split_backbone_head(model)
        fkw = dict(model=p.model, weights=p.weights, size=size)
        n_views = p.views if p.augment else 0
        feat_facts = []
        for ds in sorted(set(combo.train["dataset"]) | set(combo.val["dataset"]) | set(ev.get("dataset", []))):
            from .datasets.manifest import read_manifest
            feat_facts.append(feats.ensure_features(
                p.work, ds, read_manifest(p.work, ds), backbone, resize=resize, mean=mean, std=std,
                views=n_views, seed=p.seed, cache_size=p.cache_size, dtype=p.feature_dtype,
                device=device, workers=p.workers, progress=progress, **fkw))
        X_views = ([feats.gather(p.work, combo.train, view=f"aug-seed{p.seed}-v{k}", **fkw)
                    for k in range(n_views)] if n_views else
                   [feats.gather(p.work, combo.train, **fkw)])
        X_val = torch.from_numpy(feats.gather(p.work, combo.val, **fkw))
        head = head.cpu()
        timings["features"] = time.perf_counter() - t
    else:
        feat_facts = []

    # ---- resume. What changes per epoch is checkpointed: the head alone on the fast path (saving
    # the whole frozen model every epoch cost ~70 % of a head fit; benchmarks/RESULTS.md).
    trained = head if p.use_fast else model
    ck_path = out / "checkpoint.pt"
    key = _params_key(p)
    history: list[dict] = []
    best_state, best_score, start = None, None, 0
    if ck_path.is_file():
        ck = torch.load(ck_path, map_location="cpu", weights_only=True)
        if ck.get("key") == key:
            trained.load_state_dict(ck["model"])
            opt.load_state_dict(ck["opt"])
            sched.load_state_dict(ck["sched"])
            history = [dict(zip(ck["history_cols"], row)) for row in ck["history"]]
            best_state, best_score, start = ck["best_state"], ck["best_score"], int(ck["epoch"])
            log(f"[train] resuming after epoch {start}")
        else:
            log("[train] checkpoint belongs to other parameters; starting over")

    n_epochs = p.n_epochs
    t_train = time.perf_counter()
    for epoch in range(start, n_epochs):
        te = time.perf_counter()
        order = epoch_order(y_tr, epoch, p.seed, p.oversample)
        torch.manual_seed(p.seed * 100_003 + epoch)
        lr = opt.param_groups[0]["lr"]
        if p.use_fast:
            tr_loss, tr_acc, n = _train_epoch_head(head, opt, X_views, y_tr, order, p, epoch)
            with torch.no_grad():
                head.eval()
                vm = _val_metrics(head(X_val), y_va)
        else:
            tr_loss, tr_acc, n = _train_epoch_loop(model, opt, combo.train, cache, tr_tf, order, p,
                                                   device, progress, f"epoch {epoch + 1}/{n_epochs}")
            vm = _val_metrics(_predict_images(model, combo.val, cache, ev_tf, p, device), y_va)
        sched.step()
        dt = time.perf_counter() - te
        row = {"epoch": epoch + 1, "train_loss": tr_loss, "train_accuracy": tr_acc, **vm, "lr": lr,
               "seconds": dt, "img_per_s": n / dt if dt > 0 else float("nan")}
        history.append(row)
        if _better(p.select, vm[p.select], best_score):
            best_score = vm[p.select]
            best_state = copy.deepcopy(trained.state_dict())
        log(f"[train] epoch {epoch + 1:>2}/{n_epochs} loss {tr_loss:.4f} acc {tr_acc:.3f} | val loss "
            f"{vm['val_loss']:.4f} acc {vm['val_accuracy']:.3f} auc {vm['val_auc']:.3f} | "
            f"{row['img_per_s']:.0f} img/s")
        cols = list(history[0])
        with atomic_path(ck_path) as tmp:
            torch.save({"key": key, "epoch": epoch + 1, "model": trained.state_dict(), "opt": opt.state_dict(),
                        "sched": sched.state_dict(), "best_state": best_state, "best_score": best_score,
                        "history_cols": cols, "history": [[r[c] for c in cols] for r in history]}, tmp)
        if stop_after is not None and epoch + 1 >= stop_after and epoch + 1 < n_epochs:
            log(f"[train] stopping after epoch {epoch + 1} (stop_after)")
            return out
    timings["train"] = time.perf_counter() - t_train

    # ---- best epoch → predictions on every evaluation set's val and test split
    t = time.perf_counter()
    trained.load_state_dict(best_state)
    if len(ev):
        if p.use_fast:
            with torch.no_grad():
                head.eval()
                logits = head(torch.from_numpy(feats.gather(p.work, ev, **fkw)))
        else:
            logits = _predict_images(model, ev, cache, ev_tf, p, device)
    else:
        logits = torch.zeros((0, 2))
    prob = torch.softmax(logits.float(), 1)[:, 1].numpy()
    run_id = out.name
    pred = pd.DataFrame({"run_id": run_id, "eval_set": ev.get("dataset", pd.Series(dtype=str)).values,
                         "split": ev.get("split", pd.Series(dtype=str)).values,
                         "image_id": ev.get("image_id", pd.Series(dtype=str)).values,
                         "label": ev.get("label", pd.Series(dtype=int)).values.astype(int),
                         "p_melanoma": prob.astype(np.float64),
                         "logit_0": logits[:, 0].numpy().astype(np.float64),
                         "logit_1": logits[:, 1].numpy().astype(np.float64)})
    timings["predict"] = time.perf_counter() - t
    with atomic_path(out / "model.pt") as tmp:
        torch.save(model.state_dict(), tmp)  # the whole model, with the best epoch's weights
    write_text(out / "history.csv", pd.DataFrame(history).to_csv(index=False))
    write_parquet(out / "predictions.parquet", pred)
    best = min(history, key=lambda r: r[p.select]) if p.select == "val_loss" else \
        max(history, key=lambda r: (np.nan_to_num(r[p.select], nan=-1)))
    timings["total"] = time.perf_counter() - t_start
    run = {
        "run_id": run_id, "model": p.model, "train": p.train, "train_label": combo.label,
        "datasets": combo.datasets, "eval_sets": p.eval_sets,
        "n_train": len(y_tr), "n_val": len(y_va), "n_train_melanoma": int(y_tr.sum()),
        "removed_for_leakage": combo.removed, "best_epoch": best["epoch"], "select": p.select,
        "best_score": best[p.select], "epochs": n_epochs, "path": "fast" if p.use_fast else "loop",
        "device": str(device), "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "train_img_per_s": round(float(np.mean([h["img_per_s"] for h in history])), 1) if history else None,
        "features": feat_facts, "trainable": summary,
        "synthetic": bool(pd.concat([combo.train["synthetic"], ev.get("synthetic", pd.Series(dtype=bool))]).any()),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "numpy": np.__version__, "pandas": pd.__version__},
        "git_commit": _git_commit(),
        "manifests": {ds: _file_sha(Path(p.work) / ds / "manifest.parquet")
                      for ds in sorted(set(combo.datasets) | set(p.eval_sets))},
        "params_key": key,
    }
    write_json(out / "run.json", run)
    ck_path.unlink(missing_ok=True)
    log(f"[train] done: best epoch {best['epoch']} ({p.select} {best[p.select]:.4f}); "
        f"{len(pred)} predictions; {timings['total']:.1f} s")
    return out

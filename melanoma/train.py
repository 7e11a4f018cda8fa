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
import os
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
from .datasets import get
from .datasets.combine import combine
from .datasets.dedup import eval_frame, is_external
from .datasets.manifest import read_manifest
from .io import CorruptFileError, atomic_path, read_torch, write_json, write_parquet, write_text, write_yaml
from .models import build_model, model_config, set_train_mode, split_backbone_head, trainable_summary
from .params import TrainParams
from .provenance import versions
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
    for k in ("workers", "device", "out"):  # do not change results (workers: tests/test_train.py)
        d.pop(k)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- data

def load_data(p: TrainParams):
    """The combination's train/val rows (cleaned of leakage), the evaluation rows, and where each
    evaluation set's val and test rows come from.

    An evaluation set outside the training combination without a labelled test split is scored
    whole (:func:`melanoma.datasets.dedup.eval_frame`); an evaluation set outside the combination
    without labelled validation rows of its own (such a whole set, or a release that ships only a
    test split) borrows the **combination's validation split** for everything fitted on
    validation (temperature, rejection threshold): those rows are added under its name with
    ``split = val``. Returns ``(combined, eval_rows, sources)``.
    """
    c = combine(p.work, p.train, p.eval_sets, policy=p.leakage)
    if not p.eval_sets:
        return c, pd.DataFrame(columns=[*c.val.columns, "eval_set"]), {}
    ev = eval_frame(p.work, p.eval_sets, train_datasets=c.datasets)
    frames, sources = [ev], {}
    for e in p.eval_sets:
        rows = ev[ev["eval_set"] == e]
        whole = is_external(read_manifest(p.work, e), e, c.datasets)
        own_val = bool(((rows["split"] == "val") & (rows["label"] >= 0)).any())
        src = {"val": "own validation split", "test": "official test split", "whole": whole}
        if whole:
            src["test"] = (f"the whole release ({len(rows)} labelled images): external to the training "
                           "combination, no official test split")
        if not own_val and e not in c.datasets:
            frames.append(c.val.assign(eval_set=e))
            src["val"] = (f"the training combination's validation split ({len(c.val)} images of "
                          f"{c.label}): {get(e).name} has no validation split of its own here")
        sources[e] = src
    return c, pd.concat(frames, ignore_index=True), sources


# ----------------------------------------------------------------------------- loop path

def _loader(rows: pd.DataFrame, cache: ImageCache, tf, order, p: TrainParams, batch_size: int,
            seed: int | None = None):
    """``seed`` (training): image k of the epoch is augmented under ``(seed, k)`` whichever worker
    loads it, so ``workers`` never changes results (:class:`melanoma.features.CachedImages`)."""
    ds = feats.CachedImages(rows["content_hash"], rows["label"].clip(lower=0), cache, tf, seed=seed)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, sampler=list(enumerate(order)),
                                       num_workers=p.workers, persistent_workers=False)


@torch.no_grad()
def predict_batches(model, batches, device) -> torch.Tensor:
    """Logits of ``model`` (eval mode; bf16 + channels-last on CUDA) over image ``batches``."""
    set_train_mode(model, False)
    out = []
    amp = device.type == "cuda"
    for x in batches:
        x = x.to(device)
        if amp:
            x = x.to(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out.append(model(x).float().cpu())
    return torch.cat(out) if out else torch.zeros((0, 2))


def _predict_images(model, rows, cache, tf, p, device) -> torch.Tensor:
    loader = _loader(rows, cache, tf, range(len(rows)), p, max(p.batch_size, 64))
    return predict_batches(model, (x for x, _ in loader), device)


def _train_epoch_loop(model, opt, rows, cache, tf, order, p, device, progress, desc):
    set_train_mode(model, True)
    amp = device.type == "cuda"
    tot, correct, n = 0.0, 0, 0
    aug_seed = int(torch.randint(0, 2**62, (1,)))  # from the epoch's seed (train_run seeds torch per epoch)
    for x, y in tqdm(_loader(rows, cache, tf, order, p, p.batch_size, seed=aug_seed), desc=desc,
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


def _finish_probe(r: "Run", head, X_views: list[np.ndarray], X_val: torch.Tensor, fkw: dict) -> Path:
    """The fast path with ``solver: lbfgs``: fit the probe (:mod:`melanoma.probe`), score, finish.

    ``history.csv`` has one row per candidate ``C`` (column ``epoch`` = its 1-based index, so the
    "best epoch" of run.json is the chosen candidate); run.json's ``probe`` block names ``C``, the
    grid, whether the choice sits at its edge, and whether every fit converged."""
    from .probe import DEFAULT_C_GRID, fit_logistic_probe, load_into_head

    p = r.p
    t = time.perf_counter()
    X = np.concatenate(X_views) if len(X_views) > 1 else X_views[0]
    y = np.tile(r.y_tr, len(X_views))
    fit = fit_logistic_probe(X, y, X_val.numpy(), r.y_va, C_grid=p.reg_grid or DEFAULT_C_GRID,
                             balanced=p.oversample, select=p.select, log=r.log)
    load_into_head(head, fit)
    r.history = [{"epoch": i + 1, "C": h["C"], "train_loss": h["train_loss"], "train_accuracy": h["train_accuracy"],
                  "val_loss": h["val_loss"], "val_accuracy": h["val_accuracy"], "val_auc": h["val_auc"],
                  "lr": float("nan"), "n_iter": h["n_iter"], "seconds": h["seconds"],
                  "img_per_s": len(y) / h["seconds"] if h["seconds"] > 0 else float("nan")}
                 for i, h in enumerate(fit["history"])]
    r.best_state = copy.deepcopy(head.state_dict())
    r.extra.update(epochs=None, probe={"solver": "lbfgs", "C": fit["C"], "C_grid": fit["C_grid"],
                                       "at_edge": fit["at_edge"], "converged": fit["converged"],
                                       "balanced": bool(p.oversample), "select": p.select,
                                       "n_fit": int(len(y)), "views": len(X_views)})
    r.timings["train"] = time.perf_counter() - t
    t = time.perf_counter()
    with torch.no_grad():
        head.eval()
        logits = head(torch.from_numpy(feats.gather(p.work, r.ev, **fkw))) if len(r.ev) else torch.zeros((0, 2))
    r.timings["predict"] = time.perf_counter() - t
    return r.finish(logits)


# ----------------------------------------------------------------------------- the run

class Run:
    """One run's state: data, model, optimiser, history, and its run directory.

    ``Run(p)`` validates ``p``, loads the combination, builds the model and the optimiser and picks
    up ``checkpoint.pt`` when it belongs to the same parameters; :meth:`end_epoch` records an epoch
    (history, best state, an atomic checkpoint) and :meth:`finish` writes the run's outputs. The
    epoch loops that drive it: :func:`train_run` (one run: fast or DataLoader path) and
    :func:`melanoma.group.train_resident` (resident images, one run or several sharing a backbone).
    """

    def __init__(self, p: TrainParams, *, log=print):
        p.validate()
        self.p, self.log = p, log
        self.out = Path(p.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.t_start = time.perf_counter()
        self.timings: dict[str, float] = {}
        self.device = resolve_device(p.device)
        torch.manual_seed(p.seed)
        np.random.seed(p.seed % 2**32)
        cfg = model_config(p.model)
        self.mean, self.std = cfg.mean, cfg.std

        t = time.perf_counter()
        self.combo, self.ev, self.eval_sources = load_data(p)
        self.timings["data"] = time.perf_counter() - t
        if not self.combo.leakage.empty:
            write_parquet(self.out / "leakage.parquet", self.combo.leakage)
        self.y_tr = self.combo.train["label"].to_numpy(np.int64)
        self.y_va = self.combo.val["label"].to_numpy(np.int64)
        if len(np.unique(self.y_tr)) < 2:
            raise ValueError(f"training data of {p.train!r} has only one class; cannot train a classifier")

        torch.manual_seed(p.seed)
        self.model = build_model(p.model, weights=p.weights, freeze=p.freeze)
        self.model.to(self.device)
        if self.device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)
        self.summary = trainable_summary(self.model)
        path = "fast (feature cache)" if p.use_fast else f"loop ({p.loader})"
        log(f"[train] {p.model} weights={p.weights} freeze={p.freeze} on {self.combo.label} "
            f"({len(self.y_tr)} train / {len(self.y_va)} val, {int(self.y_tr.sum())} melanoma) — "
            f"{self.summary['n_trainable']:,} of {self.summary['n_params']:,} parameters train; "
            f"device {self.device}; {path} path")
        write_yaml(self.out / "params.yaml", p.to_dict())
        self.trainable = [q for q in self.model.parameters() if q.requires_grad]
        self.opt = torch.optim.SGD(self.trainable, lr=p.lr, momentum=p.momentum)
        self.sched = torch.optim.lr_scheduler.StepLR(self.opt, step_size=p.step_size, gamma=p.gamma)
        self.trained: torch.nn.Module = self.model  # what end_epoch checkpoints (the head on the fast path)
        self.feat_facts: list = []
        self.extra: dict = {}  # more run.json fields (a grouped run: its group)
        self.history: list[dict] = []
        self.best_state, self.best_score, self.start = None, None, 0
        self.key = _params_key(p)
        self.ck_path = self.out / "checkpoint.pt"

    # ---- resume. What changes per epoch is checkpointed: the head alone on the fast path (saving
    # the whole frozen model every epoch cost ~70 % of a head fit; benchmarks/RESULTS.md).
    def resume(self, trained: torch.nn.Module | None = None) -> int:
        """Load ``checkpoint.pt`` if it belongs to these parameters; returns the first epoch to run."""
        if trained is not None:
            self.trained = trained
        if not self.ck_path.is_file():
            return self.start
        # A checkpoint that cannot be read or does not fit this model is moved aside (named in the
        # log and in run.json) and the run starts from scratch, instead of failing every retry.
        before = (copy.deepcopy(self.trained.state_dict()), copy.deepcopy(self.opt.state_dict()),
                  copy.deepcopy(self.sched.state_dict()))
        try:
            ck = read_torch(self.ck_path, "checkpoint")
            need = {"key", "epoch", "model", "opt", "sched", "best_state", "best_score",
                    "history_cols", "history"}
            if not isinstance(ck, dict) or not need <= set(ck):
                raise CorruptFileError(f"checkpoint {self.ck_path} lacks "
                                       f"{sorted(need - set(ck)) if isinstance(ck, dict) else 'everything'}")
            if ck["key"] != self.key:
                self.log("[train] checkpoint belongs to other parameters; starting over")
                return self.start
            self.trained.load_state_dict(ck["model"])
            self.opt.load_state_dict(ck["opt"])
            self.sched.load_state_dict(ck["sched"])
            history = [dict(zip(ck["history_cols"], row)) for row in ck["history"]]
            start = int(ck["epoch"])
            if len(history) != start or not 0 < start <= self.n_epochs:
                raise CorruptFileError(f"checkpoint {self.ck_path} says epoch {start} with "
                                       f"{len(history)} history rows")
        except (CorruptFileError, RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
            self.trained.load_state_dict(before[0])
            self.opt.load_state_dict(before[1])
            self.sched.load_state_dict(before[2])
            aside = self.ck_path.with_name(f"checkpoint.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"
                                           f"-{os.getpid()}.pt")
            os.replace(self.ck_path, aside)
            self.extra["checkpoint_moved_aside"] = {"file": str(aside), "reason": str(e)}
            self.log(f"[train] WARNING: {e if 'checkpoint' in str(e) else f'checkpoint {self.ck_path}: {e}'}; "
                     f"moved aside to {aside.name}; training starts again from epoch 1")
            return self.start
        self.history = history
        self.best_state, self.best_score = ck["best_state"], ck["best_score"]
        self.start = start
        self.log(f"[train] resuming after epoch {self.start}")
        return self.start

    @property
    def n_epochs(self) -> int:
        return self.p.n_epochs

    def end_epoch(self, epoch: int, lr: float, tr_loss: float, tr_acc: float, n: int, vm: dict,
                  dt: float) -> None:
        """Record epoch ``epoch`` (0-based): scheduler step, history, best state, checkpoint."""
        p = self.p
        self.sched.step()
        row = {"epoch": epoch + 1, "train_loss": tr_loss, "train_accuracy": tr_acc, **vm, "lr": lr,
               "seconds": dt, "img_per_s": n / dt if dt > 0 else float("nan")}
        self.history.append(row)
        if _better(p.select, vm[p.select], self.best_score):
            self.best_score = vm[p.select]
            self.best_state = copy.deepcopy(self.trained.state_dict())
        self.log(f"[train] epoch {epoch + 1:>2}/{self.n_epochs} loss {tr_loss:.4f} acc {tr_acc:.3f} | "
                 f"val loss {vm['val_loss']:.4f} acc {vm['val_accuracy']:.3f} auc {vm['val_auc']:.3f} | "
                 f"{row['img_per_s']:.0f} img/s")
        cols = list(self.history[0])
        with atomic_path(self.ck_path) as tmp:
            torch.save({"key": self.key, "epoch": epoch + 1, "model": self.trained.state_dict(),
                        "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                        "best_state": self.best_state, "best_score": self.best_score,
                        "history_cols": cols, "history": [[r[c] for c in cols] for r in self.history]}, tmp)

    def use_best(self) -> None:
        self.trained.load_state_dict(self.best_state)

    def finish(self, logits: torch.Tensor) -> Path:
        """Write the outputs from the best epoch's ``logits`` on the evaluation rows; ``run.json`` last."""
        p, ev, out = self.p, self.ev, self.out
        t = time.perf_counter()
        prob = torch.softmax(logits.float(), 1)[:, 1].numpy()
        run_id = out.name
        pred = pd.DataFrame({"run_id": run_id, "eval_set": ev.get("eval_set", pd.Series(dtype=str)).values,
                             "dataset": ev.get("dataset", pd.Series(dtype=str)).values,
                             "split": ev.get("split", pd.Series(dtype=str)).values,
                             "image_id": ev.get("image_id", pd.Series(dtype=str)).values,
                             "label": ev.get("label", pd.Series(dtype=int)).values.astype(int),
                             "p_melanoma": prob.astype(np.float64),
                             "logit_0": logits[:, 0].numpy().astype(np.float64),
                             "logit_1": logits[:, 1].numpy().astype(np.float64)})
        self.timings["predict"] = self.timings.get("predict", 0.0) + time.perf_counter() - t
        with atomic_path(out / "model.pt") as tmp:
            torch.save(self.model.state_dict(), tmp)  # the whole model, with the best epoch's weights
        history = self.history
        write_text(out / "history.csv", pd.DataFrame(history).to_csv(index=False))
        write_parquet(out / "predictions.parquet", pred)
        best = min(history, key=lambda r: r[p.select]) if p.select == "val_loss" else \
            max(history, key=lambda r: (np.nan_to_num(r[p.select], nan=-1)))
        self.timings["total"] = time.perf_counter() - self.t_start
        combo, y_tr = self.combo, self.y_tr
        run = {
            "run_id": run_id, "model": p.model, "train": p.train, "train_label": combo.label,
            "datasets": combo.datasets, "eval_sets": p.eval_sets,
            "n_train": len(y_tr), "n_val": len(self.y_va), "n_train_melanoma": int(y_tr.sum()),
            "eval_sources": self.eval_sources,
            "removed_for_leakage": combo.removed, "best_epoch": best["epoch"], "select": p.select,
            "best_score": best[p.select], "epochs": self.n_epochs,
            "path": "fast" if p.use_fast else "loop", "loader": None if p.use_fast else p.loader,
            "device": str(self.device), "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "train_img_per_s": round(float(np.mean([h["img_per_s"] for h in history])), 1) if history else None,
            "features": self.feat_facts, "trainable": self.summary,
            "synthetic": bool(pd.concat([combo.train["synthetic"], ev.get("synthetic", pd.Series(dtype=bool))]).any()),
            "versions": versions(),  # python, platform, torch + CUDA build, the packages that shape results
            "git_commit": _git_commit(),
            "manifests": {ds: _file_sha(Path(p.work) / ds / "manifest.parquet")
                          for ds in sorted(set(combo.datasets) | set(p.eval_sets))},
            "params_key": self.key,
        }
        run.update(self.extra)
        write_json(out / "run.json", run)
        self.ck_path.unlink(missing_ok=True)
        self.log(f"[train] done: best epoch {best['epoch']} ({p.select} {best[p.select]:.4f}); "
                 f"{len(pred)} predictions; {self.timings['total']:.1f} s")
        return out


def train_run(p: TrainParams, *, progress: bool = True, stop_after: int | None = None,
              log=print) -> Path:
    """Train one model on one combination and score the evaluation sets. Resumable.

    ``stop_after=k`` stops after epoch k as if killed (the checkpoint stays): used by tests.
    ``loader="resident"`` (loop path) runs :func:`melanoma.group.train_resident` with this one run.
    """
    p.validate()
    if not p.use_fast and p.loader == "resident":
        from .group import train_resident

        return train_resident([p], progress=progress, stop_after=stop_after, log=log)[0]
    r = Run(p, log=log)
    model, opt, device = r.model, r.opt, r.device
    cache = ImageCache(Path(p.work) / "cache", p.cache_size)
    size, resize = p.image_size, p.eval_resize
    ev_tf = eval_transform(size, resize, mean=r.mean, std=r.std)
    tr_tf = train_transform(size, mean=r.mean, std=r.std) if p.augment else ev_tf
    combo, ev = r.combo, r.ev

    # ---- fast path: features once per dataset, reused by every combination
    if p.use_fast:
        t = time.perf_counter()
        backbone, head = split_backbone_head(model)
        fkw = dict(model=p.model, weights=p.weights, size=size)
        n_views = p.views if p.augment else 0
        for ds in sorted(set(combo.train["dataset"]) | set(combo.val["dataset"]) | set(ev.get("dataset", []))):
            r.feat_facts.append(feats.ensure_features(
                p.work, ds, read_manifest(p.work, ds), backbone, resize=resize, mean=r.mean, std=r.std,
                views=n_views, seed=p.seed, cache_size=p.cache_size, dtype=p.feature_dtype,
                device=device, workers=p.workers, progress=progress, **fkw))
        X_views = ([feats.gather(p.work, combo.train, view=f"aug-seed{p.seed}-v{k}", **fkw)
                    for k in range(n_views)] if n_views else
                   [feats.gather(p.work, combo.train, **fkw)])
        X_val = torch.from_numpy(feats.gather(p.work, combo.val, **fkw))
        head = head.cpu()
        r.timings["features"] = time.perf_counter() - t
        if p.head_solver == "lbfgs":
            return _finish_probe(r, head, X_views, X_val, fkw)
        r.resume(head)
    else:
        r.resume()

    t_train = time.perf_counter()
    for epoch in range(r.start, r.n_epochs):
        te = time.perf_counter()
        order = epoch_order(r.y_tr, epoch, p.seed, p.oversample)
        torch.manual_seed(p.seed * 100_003 + epoch)
        lr = opt.param_groups[0]["lr"]
        if p.use_fast:
            tr_loss, tr_acc, n = _train_epoch_head(head, opt, X_views, r.y_tr, order, p, epoch)
            with torch.no_grad():
                head.eval()
                vm = _val_metrics(head(X_val), r.y_va)
        else:
            tr_loss, tr_acc, n = _train_epoch_loop(model, opt, combo.train, cache, tr_tf, order, p,
                                                   device, progress, f"epoch {epoch + 1}/{r.n_epochs}")
            vm = _val_metrics(_predict_images(model, combo.val, cache, ev_tf, p, device), r.y_va)
        r.end_epoch(epoch, lr, tr_loss, tr_acc, n, vm, time.perf_counter() - te)
        if stop_after is not None and epoch + 1 >= stop_after and epoch + 1 < r.n_epochs:
            log(f"[train] stopping after epoch {epoch + 1} (stop_after)")
            return r.out
    r.timings["train"] = time.perf_counter() - t_train

    # ---- best epoch → predictions on every evaluation set's val and test split
    t = time.perf_counter()
    r.use_best()
    if len(ev):
        if p.use_fast:
            with torch.no_grad():
                head.eval()
                logits = head(torch.from_numpy(feats.gather(p.work, ev, **fkw)))
        else:
            logits = _predict_images(model, ev, cache, ev_tf, p, device)
    else:
        logits = torch.zeros((0, 2))
    r.timings["predict"] = time.perf_counter() - t
    return r.finish(logits)

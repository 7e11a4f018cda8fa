"""The paper's training recipe, read top to bottom (cf. torchvision's references/classification).

``train_run(params)`` → a run directory (its files: :mod:`melanoma.train.run`).

Recipe (§3.2 of the paper): cross-entropy, SGD(lr 1e-3, momentum 0.9), StepLR(7, 0.1) per epoch,
batch 32, epochs by number of datasets (1 → 30 … 10 → 50), melanoma oversampled by inverse class
frequency, the paper's augmentation, checkpoint = best validation epoch (default: validation loss).

One dispatcher, :func:`train_runs`, picks the path of a set of runs trained together:

* **fast** (``freeze=backbone``): the head on cached backbone features (:mod:`melanoma.train.features`)
  — identical to the loop path when augmentation is off; with ``solver: lbfgs`` a logistic-regression
  probe (:mod:`melanoma.train.probe`) instead of SGD epochs. Several runs train one after another.
* **DataLoader** (loop path, ``loader=dataloader``): the network runs every step on images
  decoded from the cache and augmented per image on CPU workers. One run.
* **resident** (loop path, ``loader=resident``): images kept in device memory and augmented there
  in batches (:mod:`melanoma.train.resident`); several runs of one model share each forward pass
  (:mod:`melanoma.train.sharedpass`).

Every path but the probe is driven by the same epoch loop, :func:`melanoma.train.loop.fit`; each gives
it a ``Steps`` object (one pass over the data, validation and evaluation logits).
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from melanoma.data.cache import ImageCache
from melanoma.data.manifest import read_manifest
from melanoma.train import features as feats
from melanoma.train.dataset import CachedImages, single_thread
from melanoma.train.loop import fit, predict_batches
from melanoma.train.models import set_train_mode, split_backbone_head
from melanoma.train.params import TrainParams, check_together
from melanoma.train.resident import EvalPool, TrainPool, augment, check_fits, normalise, pool_bytes
from melanoma.train.run import Run
from melanoma.train.sharedpass import GroupedModel
from melanoma.train.transforms import eval_transform, train_transform


# ----------------------------------------------------------------------------- the dispatcher

def train_run(p: TrainParams, *, progress: bool = True, stop_after: int | None = None,
              log=print) -> Path:
    """Train one model on one combination and score the evaluation sets. Resumable.

    ``stop_after=k`` stops after epoch k as if killed (the checkpoint stays): used by tests.
    """
    return train_runs([p], progress=progress, stop_after=stop_after, log=log)[0]


def train_runs(ps: list[TrainParams], *, progress: bool = True, stop_after: int | None = None,
               log=print) -> list[Path]:
    """Train runs ``ps`` of one model (:func:`melanoma.train.params.check_together`) in this process, by
    their path: fast (one after another), DataLoader (one run), resident (one run, or several
    sharing each forward pass). Returns the run directories, in order."""
    ps = [p.checked() for p in ps]
    check_together(ps)
    kw = dict(progress=progress, stop_after=stop_after, log=log)
    if ps[0].use_fast:
        return [_train_fast(p, **kw) for p in ps]
    if ps[0].loader == "dataloader":
        return [_train_dataloader(p, **kw) for p in ps]
    return _train_resident(ps, **kw)


# ----------------------------------------------------------------------------- fast path

def train_head_epoch(head, opt, X_views: list[np.ndarray], y: np.ndarray, order, p, epoch):
    """One SGD epoch of ``head`` on cached features (one augmented view drawn per sample, seeded
    by (seed, epoch)); returns (mean loss, accuracy, samples)."""
    loss, correct, n = _head_epoch(head, opt, X_views, y, order, p, epoch)
    return loss / max(n, 1), correct / max(n, 1), n


def _head_epoch(head, opt, X_views, y, order, p, epoch):
    # one thread: batches of 32 × d matmuls are far too small to split (measured 680 vs 101,519
    # features/s with 2 vs 1 threads on a busy 2-core machine, benchmarks/RESULTS.md)
    with single_thread():
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
    return tot, correct, n


class _HeadSteps:
    """The fast path's passes: the head on cached features (run 0 only)."""

    def __init__(self, r: Run, head, X_views, X_val, fkw: dict):
        self.r, self.head, self.X_views, self.X_val, self.fkw = r, head, X_views, X_val, fkw

    def train_epoch(self, epoch, orders):
        return {0: _head_epoch(self.head, self.r.opt, self.X_views, self.r.y_tr, orders[0], self.r.p, epoch)}

    @torch.no_grad()
    def val_logits(self, k):
        self.head.eval()
        return self.head(self.X_val)

    @torch.no_grad()
    def eval_logits(self, k):
        if not len(self.r.ev):
            return torch.zeros((0, 2))
        self.head.eval()
        return self.head(torch.from_numpy(feats.gather(self.r.p.work, self.r.ev, **self.fkw)))


def _cached_features(r: Run, progress: bool):
    """Features once per dataset (reused by every combination); the head, on the CPU; the
    training views, the validation features and the feature-cache keys."""
    p, combo, ev = r.p, r.combo, r.ev
    t = time.perf_counter()
    backbone, head = split_backbone_head(r.model)
    fkw = dict(model=p.model, weights=p.weights, size=p.image_size)
    n_views = p.views if p.augment else 0
    for ds in sorted(set(combo.train["dataset"]) | set(combo.val["dataset"]) | set(ev.get("dataset", []))):
        r.feat_facts.append(feats.ensure_features(
            p.work, ds, read_manifest(p.work, ds), backbone, resize=p.eval_resize, mean=r.mean, std=r.std,
            views=n_views, seed=p.seed, cache_size=p.cache_size, dtype=p.feature_dtype,
            device=r.device, workers=p.workers, progress=progress, **fkw))
    X_views = ([feats.gather(p.work, combo.train, view=f"aug-seed{p.seed}-v{k}", **fkw)
                for k in range(n_views)] if n_views else
               [feats.gather(p.work, combo.train, **fkw)])
    X_val = torch.from_numpy(feats.gather(p.work, combo.val, **fkw))
    r.timings["features"] = time.perf_counter() - t
    return head.cpu(), X_views, X_val, fkw


def _train_fast(p: TrainParams, *, progress: bool, stop_after: int | None, log) -> Path:
    r = Run(p, log=log)
    head, X_views, X_val, fkw = _cached_features(r, progress)
    if p.head_solver == "lbfgs":
        return _finish_probe(r, head, X_views, X_val, fkw)
    r.resume(head)
    return fit([r], _HeadSteps(r, head, X_views, X_val, fkw), stop_after=stop_after, log=log)[0]


def _finish_probe(r: Run, head, X_views: list[np.ndarray], X_val: torch.Tensor, fkw: dict) -> Path:
    """The fast path with ``solver: lbfgs``: fit the probe (:mod:`melanoma.train.probe`), score, finish.

    ``history.csv`` has one row per candidate ``C`` (column ``epoch`` = its 1-based index, so the
    "best epoch" of run.json is the chosen candidate); run.json's ``probe`` block names ``C``, the
    grid, whether the choice sits at its edge, and whether every fit converged."""
    from melanoma.train.probe import DEFAULT_C_GRID, fit_logistic_probe, load_into_head

    p = r.p
    t = time.perf_counter()
    X = np.concatenate(X_views) if len(X_views) > 1 else X_views[0]
    y = np.tile(r.y_tr, len(X_views))
    fit_ = fit_logistic_probe(X, y, X_val.numpy(), r.y_va, C_grid=p.reg_grid or DEFAULT_C_GRID,
                              balanced=p.oversample, select=p.select, log=r.log)
    load_into_head(head, fit_)
    r.history = [{"epoch": i + 1, "C": h["C"], "train_loss": h["train_loss"], "train_accuracy": h["train_accuracy"],
                  "val_loss": h["val_loss"], "val_accuracy": h["val_accuracy"], "val_auc": h["val_auc"],
                  "lr": float("nan"), "n_iter": h["n_iter"], "seconds": h["seconds"],
                  "img_per_s": len(y) / h["seconds"] if h["seconds"] > 0 else float("nan")}
                 for i, h in enumerate(fit_["history"])]
    r.best_state = copy.deepcopy(head.state_dict())
    r.extra.update(epochs=None, probe={"solver": "lbfgs", "C": fit_["C"], "C_grid": fit_["C_grid"],
                                       "at_edge": fit_["at_edge"], "converged": fit_["converged"],
                                       "balanced": bool(p.oversample), "select": p.select,
                                       "n_fit": int(len(y)), "views": len(X_views)})
    r.timings["train"] = time.perf_counter() - t
    t = time.perf_counter()
    logits = _HeadSteps(r, head, X_views, X_val, fkw).eval_logits(0)
    r.timings["predict"] = time.perf_counter() - t
    return r.finish(logits)


# ----------------------------------------------------------------------------- DataLoader path

def _loader(rows, cache: ImageCache, tf, order, p: TrainParams, batch_size: int, seed: int | None = None):
    """``seed`` (training): image k of the epoch is augmented under ``(seed, k)`` whichever worker
    loads it, so ``workers`` never changes results (:class:`melanoma.train.dataset.CachedImages`)."""
    ds = CachedImages(rows["content_hash"], rows["label"].clip(lower=0), cache, tf, seed=seed)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, sampler=list(enumerate(order)),
                                       num_workers=p.workers, persistent_workers=False)


class _DataLoaderSteps:
    """The loop path's passes with images streamed from the cache (run 0 only)."""

    def __init__(self, r: Run, progress: bool):
        p = r.p
        self.r, self.progress = r, progress
        self.cache = ImageCache(Path(p.work) / "cache", p.cache_size)
        self.ev_tf = eval_transform(p.image_size, p.eval_resize, mean=r.mean, std=r.std)
        self.tr_tf = train_transform(p.image_size, mean=r.mean, std=r.std) if p.augment else self.ev_tf

    def train_epoch(self, epoch, orders):
        r, p, dev = self.r, self.r.p, self.r.device
        set_train_mode(r.model, True)
        amp = dev.type == "cuda"
        tot, correct, n = 0.0, 0, 0
        aug_seed = int(torch.randint(0, 2**62, (1,)))  # from the epoch's seed (fit seeds torch per epoch)
        batches = _loader(r.combo.train, self.cache, self.tr_tf, orders[0], p, p.batch_size, seed=aug_seed)
        for x, y in tqdm(batches, desc=f"epoch {epoch + 1}/{r.n_epochs}", disable=not self.progress,
                         leave=False, unit="batch", mininterval=2.0):
            x, y = x.to(dev), y.to(dev)
            if amp:
                x = x.to(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                logits = r.model(x)
            loss = F.cross_entropy(logits.float(), y)
            r.opt.zero_grad(set_to_none=True)
            loss.backward()
            r.opt.step()
            tot += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
        return {0: (tot, correct, n)}

    def _predict(self, rows) -> torch.Tensor:
        p = self.r.p
        loader = _loader(rows, self.cache, self.ev_tf, range(len(rows)), p, max(p.batch_size, 64))
        return predict_batches(self.r.model, (x for x, _ in loader), self.r.device)

    def val_logits(self, k):
        return self._predict(self.r.combo.val)

    def eval_logits(self, k):
        return self._predict(self.r.ev) if len(self.r.ev) else torch.zeros((0, 2))


def _train_dataloader(p: TrainParams, *, progress: bool, stop_after: int | None, log) -> Path:
    r = Run(p, log=log)
    steps = _DataLoaderSteps(r, progress)
    r.resume()
    return fit([r], steps, stop_after=stop_after, log=log)[0]


# ----------------------------------------------------------------------------- resident path

def _generator(seed: int, epoch: int) -> torch.Generator:
    s = int(np.random.SeedSequence([seed, epoch, 11]).generate_state(1)[0])
    return torch.Generator().manual_seed(s)


class _ResidentSteps:
    """The loop path's passes on resident images, for one run or several sharing a forward pass."""

    def __init__(self, runs: list[Run], progress: bool, log):
        self.runs, self.progress = runs, progress
        self._pools()
        names = [r.out.name for r in runs]
        for r in runs:
            r.resume()
            r.rows_tr = (self.pool or self.epool).rows(r.combo.train["content_hash"])
            r.rows_va = self.epool.rows(r.combo.val["content_hash"])
            r.rows_ev = self.epool.rows(r.ev["content_hash"]) if len(r.ev) else torch.zeros(0, dtype=torch.long)
            r.timings["resident_pool"] = self.t_pool
            r.extra["resident_pool_mib"] = round(((self.pool.nbytes if self.pool else 0) + self.epool.nbytes) / 2**20, 1)
            if len(runs) > 1:
                r.extra["group"] = {"size": len(runs), "runs": names}
        self.grouped = GroupedModel([r.model for r in runs]) if len(runs) > 1 else None
        if self.grouped is not None:
            log(f"[group] {len(runs)} runs of {runs[0].p.model} share one forward pass; per-run modules: "
                f"{len(self.grouped.paths)}")
        self.last = max(r.n_epochs for r in runs)

    def _pools(self) -> None:
        runs, p0 = self.runs, self.runs[0].p
        t = time.perf_counter()
        cache = ImageCache(Path(p0.work) / "cache", p0.cache_size)
        ev_keys = [k for r in runs for k in [*r.combo.val["content_hash"], *r.ev.get("content_hash", [])]]
        tr_keys = [k for r in runs for k in r.combo.train["content_hash"]]
        ev_keys += [] if p0.augment else tr_keys
        # both pools against one reading of the free memory, before either is allocated
        check_fits(pool_bytes(tr_keys if p0.augment else [], ev_keys, cache, p0.image_size), runs[0].device,
                   f"the resident images of {len(runs)} run(s) of {p0.model}")
        self.pool = TrainPool(tr_keys, cache, runs[0].device, check=False) if p0.augment else None
        self.epool = EvalPool(ev_keys, cache, p0.image_size, p0.eval_resize, runs[0].device, check=False)
        self.t_pool = time.perf_counter() - t

    def train_epoch(self, epoch, orders):
        runs, bs = self.runs, self.runs[0].p.batch_size
        gens = {k: _generator(runs[k].p.seed, epoch) for k in orders}
        stats = {k: [0.0, 0, 0] for k in orders}  # loss sum, correct, n
        set_train_mode(self.grouped.net if self.grouped is not None else runs[0].model, True)
        n_steps = max(math.ceil(len(o) / bs) for o in orders.values())
        for s in tqdm(range(n_steps), desc=f"epoch {epoch + 1}/{self.last}", disable=not self.progress,
                      leave=False, unit="step", mininterval=2.0):
            members = [k for k in orders if s * bs < len(orders[k])]
            idx = {k: orders[k][s * bs:(s + 1) * bs] for k in members}
            self._step(members, self._batch(members, idx, gens), idx, stats)
        return {k: (float(st[0]), int(st[1]), st[2]) for k, st in stats.items()}

    def _batch(self, members, idx, gens) -> torch.Tensor:
        runs, size = self.runs, self.runs[0].p.image_size
        xs = []
        for k in members:
            rows = runs[k].rows_tr[idx[k]]
            xs.append(augment(self.pool, rows, gens[k], size, mean=runs[k].mean, std=runs[k].std)
                      if self.pool is not None else
                      normalise(self.epool.images[rows.to(runs[k].device)], runs[k].mean, runs[k].std))
        x = torch.cat(xs) if len(xs) > 1 else xs[0]
        return x.contiguous(memory_format=torch.channels_last) if runs[0].device.type == "cuda" else x

    def _step(self, members, x, idx, stats) -> None:
        """One SGD step of every member on its slice of ``x``: the loss is the sum of the runs' mean
        losses, so each run's gradients are its own."""
        runs, dev = self.runs, self.runs[0].device
        ys = [torch.from_numpy(runs[k].y_tr[idx[k]]).to(dev) for k in members]
        counts = [len(y) for y in ys]
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            logits = self.grouped(x, members, counts) if self.grouped is not None else runs[0].model(x)
        logits = logits.float()
        loss = 0.0
        for k, lg, y in zip(members, logits.split(counts), ys):
            lk = F.cross_entropy(lg, y)
            loss = loss + lk
            st = stats[k]  # summed on the device: no host sync per step
            st[0] = st[0] + lk.detach() * len(y)
            st[1] = st[1] + (lg.argmax(1) == y).sum()
            st[2] += len(y)
        for k in members:
            runs[k].opt.zero_grad(set_to_none=True)
        loss.backward()
        for k in members:
            runs[k].opt.step()

    def _predict(self, k: int, rows: torch.Tensor) -> torch.Tensor:
        r = self.runs[k]
        batch = max(r.p.batch_size, 64)
        batches = (normalise(self.epool.images[rows[s:s + batch].to(r.device)], r.mean, r.std)
                   for s in range(0, len(rows), batch))
        return predict_batches(r.model, batches, r.device)

    def val_logits(self, k):
        return self._predict(k, self.runs[k].rows_va)

    def eval_logits(self, k):
        return self._predict(k, self.runs[k].rows_ev)


def _train_resident(ps: list[TrainParams], *, progress: bool, stop_after: int | None, log) -> list[Path]:
    runs = [Run(p, log=log) for p in ps]
    return fit(runs, _ResidentSteps(runs, progress, log), stop_after=stop_after, log=log)

"""The resident loop path, for one run or several runs of one backbone in one forward pass.

With ``freeze="conv"`` (the paper's text) the convolutions of every run of a model are the same
frozen ImageNet tensors; what differs between the runs of one model on different combinations is
only what trains or keeps state: BatchNorm (weights and running statistics) and the head. So the
runs can share the frozen convolutions: :class:`GroupedModel` is one copy of the network in which
every module with trainable parameters or buffers is a :class:`PerRun` holding each run's own
module. A step concatenates the runs' batches (each run draws its own batch from its own epoch
order, with its own augmentation generator), the shared convolutions see one large batch, and each
``PerRun`` splits the batch so every run's BatchNorm normalises over its own images only. The loss
is the sum of the runs' mean losses, so each run's gradients are its own, and each run keeps its
own SGD and StepLR. A run in a group therefore trains as it would alone — ``tests/test_group.py``
checks the weights and predictions of a group of three against three separate runs — with two
exceptions: dropout / stochastic-depth masks come from one shared generator (models with dropout
train equally *in distribution*), and the larger batch may change floating-point summation order.

:func:`train_members` is the loop. Every run keeps its own run directory, checkpoint and outputs,
exactly as :func:`melanoma.train.train_run` writes them (``run.json`` says ``"group"``); a killed
group resumes each run from its own checkpoint, and runs with fewer epochs (the paper's schedule:
30 + 2 per extra dataset) leave the group when they finish. A job may also hold several fast-path
runs (cached features, ``freeze="backbone"``): they train one after another in one process, which
saves each run's process, kernel and ``import torch`` start-up.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .cache import ImageCache
from .models import set_train_mode
from .params import TrainParams
from .resident import EvalPool, TrainPool, augment, check_fits, normalise, pool_bytes
from .train import Run, _file_sha, _git_commit, _params_key, _val_metrics, epoch_order, predict_batches


class _Segments:
    """Which runs the current batch holds, in order, and how many images each."""

    def __init__(self):
        self.members: list[int] = []
        self.counts: list[int] = []


class PerRun(nn.Module):
    """Each run's own copy of one module; applies run k's copy to run k's slice of the batch.

    Assumes the module sees the batch on dimension 0, as every registered CNN's BatchNorm and
    Linear layers do; an input whose first dimension is not the runs' total is an error. (A model
    with sequence-first layers would need a check of its own before it is grouped.)"""

    def __init__(self, name: str, mods: list[nn.Module], seg: _Segments):
        super().__init__()
        self.name = name
        self.mods = nn.ModuleList(mods)
        self._seg = seg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        members, counts = self._seg.members, self._seg.counts
        if len(members) == 1:
            return self.mods[members[0]](x)
        if x.shape[0] != sum(counts):
            raise RuntimeError(f"{self.name}: input batch of {x.shape[0]} is not the runs' {sum(counts)} "
                               "images: this module does not keep the batch on dimension 0")
        return torch.cat([self.mods[k](c) for k, c in zip(members, x.split(counts))])


def _stateful(m: nn.Module) -> bool:
    return (any(q.requires_grad for q in m.parameters(recurse=False))
            or any(True for _ in m.buffers(recurse=False)))


def per_run_paths(model: nn.Module) -> list[str]:
    """Outermost modules with trainable parameters or buffers of their own (what differs per run)."""
    if _stateful(model):
        raise ValueError(f"{type(model).__name__} has trainable tensors of its own at the top level; "
                         "it cannot be grouped")
    paths: list[str] = []
    for name, m in model.named_modules():
        if name and not any(name.startswith(q + ".") for q in paths) and _stateful(m):
            paths.append(name)
    return paths


class GroupedModel(nn.Module):
    """One network over the batches of several runs: shared frozen tensors, per-run modules."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        self.paths = per_run_paths(models[0])
        ref = models[0].state_dict()
        per_run = tuple(q + "." for q in self.paths)
        for k, m in enumerate(models[1:], 1):
            if per_run_paths(m) != self.paths:
                raise ValueError(f"run {k} has another architecture or freeze policy than run 0")
            sd = m.state_dict()
            diff = [n for n, v in ref.items() if not n.startswith(per_run) and not torch.equal(v, sd[n])]
            if diff:
                raise ValueError(f"run {k}'s frozen tensors differ from run 0's (first: {diff[0]}); runs "
                                 "share a forward pass only with the same frozen weights (same "
                                 "`weights`, and the same `seed` when weights='none')")
        self.seg = _Segments()
        self.net = copy.deepcopy(models[0])
        for q in self.paths:
            self.net.set_submodule(q, PerRun(q, [m.get_submodule(q) for m in models], self.seg))

    def forward(self, x: torch.Tensor, members: list[int], counts: list[int]) -> torch.Tensor:
        self.seg.members, self.seg.counts = list(members), list(counts)
        return self.net(x)


def _check_compatible(ps: list[TrainParams]) -> None:
    shared = ("work", "model", "weights", "freeze", "image_size", "resize", "cache_size", "batch_size",
              "augment", "device")
    for name in shared:
        vals = {repr(getattr(p, name)) for p in ps}
        if len(vals) > 1:
            raise ValueError(f"runs trained together must share {name!r}; got {sorted(vals)}")
    if len({p.use_fast for p in ps}) > 1:
        raise ValueError("runs trained together are all on the fast path or all on the loop path")
    if len(ps) > 1 and not ps[0].use_fast and any(p.loader != "resident" for p in ps):
        raise ValueError("loop-path runs trained together need loader='resident'")
    outs = [str(Path(p.out).resolve()) for p in ps]
    if len(set(outs)) < len(outs):
        raise ValueError("runs trained together need distinct run directories")


def _generator(seed: int, epoch: int) -> torch.Generator:
    s = int(np.random.SeedSequence([seed, epoch, 11]).generate_state(1)[0])
    return torch.Generator().manual_seed(s)


def _predict(run: Run, pool: EvalPool, rows: torch.Tensor, batch: int) -> torch.Tensor:
    batches = (normalise(pool.images[rows[s:s + batch].to(run.device)], run.mean, run.std)
               for s in range(0, len(rows), batch))
    return predict_batches(run.model, batches, run.device)


def train_members(ps: list[TrainParams], *, progress: bool = True, stop_after: int | None = None,
                  log=print) -> list[Path]:
    """Train runs ``ps`` of one model in this process.

    Loop path (``loader="resident"``): on resident images, sharing each forward pass. Fast path
    (cached features), or a single run of any path (``train_run``): one after another — a grouped job then pays the process, kernel and
    ``import torch`` start-up once instead of once per run (``benchmarks/group_jobs.py``).

    Returns the run directories, in order. A run whose ``run.json`` says it finished with the same
    parameters, code commit and manifests is kept, not retrained (a rerun job holding finished runs
    redoes only the others; delete a run's ``run.json`` to force it).
    ``stop_after=k`` stops after epoch k as if killed.
    """
    for p in ps:
        p.validate()
    _check_compatible(ps)
    todo = [p for p in ps if not _finished(p)]
    for p in ps:
        if p not in todo:
            log(f"[train] {Path(p.out).name}: already finished with these parameters (run.json); kept")
    if todo and (todo[0].use_fast or len(todo) == 1):  # one after another, in this one process
        from .train import train_run

        for p in todo:
            train_run(p, progress=progress, stop_after=stop_after, log=log)
    elif todo:
        train_resident(todo, progress=progress, stop_after=stop_after, log=log)
    return [Path(p.out) for p in ps]


def _finished(p: TrainParams) -> bool:
    """``run.json`` exists and was made from these parameters, this code and these manifests (a
    re-ingested dataset, or another commit, retrains the run as a solo rerun would)."""
    f = Path(p.out) / "run.json"
    if not f.is_file():
        return False
    from .io import read_json

    run = read_json(f)
    manifests = run.get("manifests") or {}
    return (run.get("params_key") == _params_key(p) and run.get("git_commit") == _git_commit()
            and bool(manifests)
            and all(_file_sha(Path(p.work) / ds / "manifest.parquet") == sha for ds, sha in manifests.items()))


def train_resident(ps: list[TrainParams], *, progress: bool = True, stop_after: int | None = None,
                   log=print) -> list[Path]:
    """The resident loop: train runs ``ps`` (checked compatible) together; returns their directories."""
    p0 = ps[0]
    runs = [Run(p, log=log) for p in ps]
    dev = runs[0].device
    t = time.perf_counter()
    cache = ImageCache(Path(p0.work) / "cache", p0.cache_size)
    size = p0.image_size
    ev_keys = [k for r in runs for k in [*r.combo.val["content_hash"], *r.ev.get("content_hash", [])]]
    tr_keys = [k for r in runs for k in r.combo.train["content_hash"]]
    ev_keys += [] if p0.augment else tr_keys
    # both pools against one reading of the free memory, before either is allocated
    check_fits(pool_bytes(tr_keys if p0.augment else [], ev_keys, cache, size), dev,
               f"the resident images of {len(runs)} run(s) of {p0.model}")
    pool = TrainPool(tr_keys, cache, dev, check=False) if p0.augment else None
    epool = EvalPool(ev_keys, cache, size, p0.eval_resize, dev, check=False)
    t_pool = time.perf_counter() - t
    for r in runs:
        r.resume()
        r.rows_tr = (pool or epool).rows(r.combo.train["content_hash"])
        r.rows_va = epool.rows(r.combo.val["content_hash"])
        r.rows_ev = epool.rows(r.ev["content_hash"]) if len(r.ev) else torch.zeros(0, dtype=torch.long)
        r.timings["resident_pool"] = t_pool
        r.extra["resident_pool_mib"] = round(((pool.nbytes if pool else 0) + epool.nbytes) / 2**20, 1)
        if len(runs) > 1:
            r.extra["group"] = {"size": len(runs), "runs": [Path(q.out).name for q in ps]}
    grouped = GroupedModel([r.model for r in runs]) if len(runs) > 1 else None
    if len(runs) > 1:
        log(f"[group] {len(runs)} runs of {p0.model} share one forward pass; per-run modules: "
            f"{len(grouped.paths)}")
    amp = dev.type == "cuda"
    bs = p0.batch_size
    t_train = time.perf_counter()

    def finish(k: int) -> None:
        r = runs[k]
        r.timings["train"] = time.perf_counter() - t_train
        tp = time.perf_counter()
        r.use_best()
        logits = _predict(r, epool, r.rows_ev, max(bs, 64))
        r.timings["predict"] = time.perf_counter() - tp
        r.finish(logits)
        done[k] = True

    done = [False] * len(runs)
    for k, r in enumerate(runs):
        if r.start >= r.n_epochs:  # killed after its last checkpoint, before its outputs
            finish(k)
    first = min((r.start for r, d in zip(runs, done) if not d), default=0)
    last = max(r.n_epochs for r in runs)
    for epoch in range(first, last):
        active = [k for k, r in enumerate(runs) if not done[k] and r.start <= epoch < r.n_epochs]
        if not active:
            continue
        te = time.perf_counter()
        torch.manual_seed(ps[active[0]].seed * 100_003 + epoch)  # dropout / stochastic depth
        orders = {k: epoch_order(runs[k].y_tr, epoch, ps[k].seed, ps[k].oversample) for k in active}
        gens = {k: _generator(ps[k].seed, epoch) for k in active}
        lrs = {k: runs[k].opt.param_groups[0]["lr"] for k in active}
        stats = {k: [0.0, 0, 0] for k in active}  # loss sum, correct, n
        net = grouped if grouped is not None else runs[0].model
        set_train_mode(grouped.net if grouped is not None else net, True)
        n_steps = max(math.ceil(len(orders[k]) / bs) for k in active)
        for s in tqdm(range(n_steps), desc=f"epoch {epoch + 1}/{last}", disable=not progress,
                      leave=False, unit="step", mininterval=2.0):
            members = [k for k in active if s * bs < len(orders[k])]
            xs, ys = [], []
            for k in members:
                idx = orders[k][s * bs:(s + 1) * bs]
                rows = runs[k].rows_tr[idx]
                xs.append(augment(pool, rows, gens[k], size, mean=runs[k].mean, std=runs[k].std)
                          if pool is not None else
                          normalise(epool.images[rows.to(dev)], runs[k].mean, runs[k].std))
                ys.append(torch.from_numpy(runs[k].y_tr[idx]).to(dev))
            counts = [len(y) for y in ys]
            x = torch.cat(xs) if len(xs) > 1 else xs[0]
            if amp:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                logits = grouped(x, members, counts) if grouped is not None else net(x)
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
        dt = time.perf_counter() - te
        for k in active:
            r = runs[k]
            vm = _val_metrics(_predict(r, epool, r.rows_va, max(bs, 64)), r.y_va)
            ls, corr, n = float(stats[k][0]), int(stats[k][1]), stats[k][2]
            r.end_epoch(epoch, lrs[k], ls / max(n, 1), corr / max(n, 1), n, vm, dt)
            if epoch + 1 == r.n_epochs:
                finish(k)
        if stop_after is not None and epoch + 1 >= stop_after and not all(done):
            log(f"[train] stopping after epoch {epoch + 1} (stop_after)")
            break
    return [r.out for r in runs]

"""The epoch loop every training path shares, and what it needs: epoch orders, validation metrics.

:func:`fit` drives one or several :class:`~melanoma.train.run.Run` objects through their epochs — the
recipe's order of events, written once: the epoch's sampling order (:func:`epoch_order`), the
torch seed of its random draws, one training pass, validation metrics, the epoch's record and
checkpoint (:meth:`Run.end_epoch`), and, after a run's last epoch, its best state's predictions
and outputs (:meth:`Run.finish`). What one pass over the data *is* differs by path and is given by a
:class:`Steps` object (:mod:`melanoma.train.recipe`: the head on cached features, the DataLoader loop,
the resident loop for one run or several sharing a forward pass).
"""

from __future__ import annotations

import time
import warnings
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from melanoma.evaluate.metrics import auc
from melanoma.train.models import set_train_mode
from melanoma.train.run import Run


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


def val_metrics(logits: torch.Tensor, y: np.ndarray) -> dict:
    """Validation loss (cross-entropy), accuracy and AUC of ``logits`` (n, 2) for labels ``y``."""
    yt = torch.from_numpy(np.array(y, dtype=np.int64))
    p = torch.softmax(logits.float(), 1)[:, 1].numpy()
    return {"val_loss": float(F.cross_entropy(logits.float(), yt)),
            "val_accuracy": float((logits.argmax(1) == yt).float().mean()),
            "val_auc": _val_auc(y, p)}


def _val_auc(y: np.ndarray, p: np.ndarray) -> float:
    """:func:`melanoma.evaluate.metrics.auc`, quiet: a one-class validation set gives NaN every epoch."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return auc(y, p)


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


class Steps(Protocol):
    """One path's passes over the data, for runs ``0 … n-1`` of :func:`fit` (already resumed)."""

    def train_epoch(self, epoch: int, orders: dict[int, np.ndarray]) -> dict[int, tuple[float, int, int]]:
        """Train the runs of ``orders`` (run → this epoch's sample order) one epoch; per run:
        (summed loss, correct, images)."""

    def val_logits(self, k: int) -> torch.Tensor:
        """Run ``k``'s logits on its validation rows."""

    def eval_logits(self, k: int) -> torch.Tensor:
        """Run ``k``'s logits on its evaluation rows (called after :meth:`Run.use_best`)."""


def fit(runs: list[Run], steps: Steps, *, stop_after: int | None = None, log=print) -> list:
    """Train ``runs`` (resumed) to their last epoch through ``steps``, then write each one's outputs.

    Runs train side by side, epoch by epoch; a run with fewer epochs leaves when it is done. Each
    epoch: sample orders by (seed, epoch), torch seeded by the first active run's (seed, epoch)
    (augmentation, dropout), one pass, validation metrics, :meth:`Run.end_epoch`.
    ``stop_after=k`` stops after epoch k as if killed (checkpoints stay). Returns the run
    directories."""
    t_train = time.perf_counter()
    done = [False] * len(runs)

    def finish(k: int) -> None:
        r = runs[k]
        r.timings["train"] = time.perf_counter() - t_train
        t = time.perf_counter()
        r.use_best()
        logits = steps.eval_logits(k)
        r.timings["predict"] = time.perf_counter() - t
        r.finish(logits)
        done[k] = True

    for k, r in enumerate(runs):
        if r.start >= r.n_epochs:  # killed after its last checkpoint, before its outputs
            finish(k)
    first = min((r.start for r, d in zip(runs, done) if not d), default=0)
    for epoch in range(first, max(r.n_epochs for r in runs)):
        active = [k for k, r in enumerate(runs) if not done[k] and r.start <= epoch < r.n_epochs]
        if not active:
            continue
        te = time.perf_counter()
        orders = {k: epoch_order(runs[k].y_tr, epoch, runs[k].p.seed, runs[k].p.oversample) for k in active}
        torch.manual_seed(runs[active[0]].p.seed * 100_003 + epoch)
        lrs = {k: runs[k].opt.param_groups[0]["lr"] for k in active}
        stats = steps.train_epoch(epoch, orders)
        for k in active:
            r = runs[k]
            vm = val_metrics(steps.val_logits(k), r.y_va)
            loss, correct, n = stats[k]
            r.end_epoch(epoch, lrs[k], loss / max(n, 1), correct / max(n, 1), n, vm, time.perf_counter() - te)
            if epoch + 1 == r.n_epochs:
                finish(k)
        if stop_after is not None and epoch + 1 >= stop_after and not all(done):
            log(f"[train] stopping after epoch {epoch + 1} (stop_after)")
            break
    return [r.out for r in runs]

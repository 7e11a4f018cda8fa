"""One training run's state and its run directory: provenance, checkpoints, outputs.

A run directory (what :func:`melanoma.train.recipe.train_run` makes)::

    params.yaml          the resolved parameters
    model.pt             state_dict of the best epoch (load with ``torch.load(..., weights_only=True)``)
    history.csv          per epoch: losses, accuracies, val AUC, lr, seconds, img/s
    predictions.parquet  every val/test image of every evaluation set: p(melanoma), logits
    leakage.parquet      duplicates removed from this run's training data, per evaluation set
    run.json             timings, device, versions, git commit, manifest hashes, trainable params
                         (written last: its presence means the run finished)
    checkpoint.pt        the last finished epoch (resume point; removed when the run finishes)

:class:`Run` holds what every training path shares (data, model, optimiser, history, best state);
the epoch loop that drives it is :func:`melanoma.train.loop.fit`, the paths are in :mod:`melanoma.train.recipe`.
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

from melanoma.data.combine import combine
from melanoma.data.dedup import eval_frame, is_external
from melanoma.data.manifest import read_manifest
from melanoma.data.registry import get
from melanoma.io import (CorruptFileError, atomic_path, read_json, read_torch, write_json, write_parquet, write_text,
                         write_yaml)
from melanoma.provenance import versions
from melanoma.train.models import build_model, model_config, trainable_summary
from melanoma.train.params import TrainParams


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto``: CUDA, else MPS, else the CPU; any other spec as ``torch.device`` reads it."""
    if spec != "auto":
        return torch.device(spec)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


# ----------------------------------------------------------------------------- provenance

def git_commit() -> str:
    """The commit of the code that runs (``""`` outside a git checkout)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except Exception:
        return ""


def file_sha(path: Path) -> str:
    """First 16 hex digits of the file's SHA-256 (``""`` when it does not exist)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else ""


def params_key(p: TrainParams) -> str:
    """A hash of the parameters that change results (a checkpoint or run.json of another key is
    not this run's)."""
    d = p.to_dict()
    for k in ("workers", "device", "out"):  # do not change results (workers: tests/train/test_recipe.py)
        d.pop(k)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def is_finished(p: TrainParams) -> bool:
    """``run.json`` exists and was made from these parameters, this code and these manifests (a
    re-ingested dataset, or another commit, retrains the run as a solo rerun would)."""
    f = Path(p.out) / "run.json"
    if not f.is_file():
        return False
    run = read_json(f)
    manifests = run.get("manifests") or {}
    return (run.get("params_key") == params_key(p) and run.get("git_commit") == git_commit()
            and bool(manifests)
            and all(file_sha(Path(p.work) / ds / "manifest.parquet") == sha for ds, sha in manifests.items()))


# ----------------------------------------------------------------------------- data

def load_data(p: TrainParams):
    """The combination's train/val rows (cleaned of leakage), the evaluation rows, and where each
    evaluation set's val and test rows come from.

    An evaluation set outside the training combination without a labelled test split is scored
    whole (:func:`melanoma.data.dedup.eval_frame`); an evaluation set outside the combination
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


def _better(select: str, new: float, best: float | None) -> bool:
    if best is None or np.isnan(best):
        return not np.isnan(new)
    return new < best if select == "val_loss" else new > best


# ----------------------------------------------------------------------------- the run

class Run:
    """One run's state: data, model, optimiser, history, and its run directory.

    ``Run(p)`` (``p`` validated by the caller: :meth:`TrainParams.checked`) loads the combination,
    builds the model and the optimiser; :meth:`resume` picks up ``checkpoint.pt`` when it belongs
    to the same parameters; :meth:`end_epoch` records an epoch (history, best state, an atomic
    checkpoint) and :meth:`finish` writes the run's outputs. The epoch loop that drives it is
    :func:`melanoma.train.loop.fit`, for every path of :mod:`melanoma.train.recipe`.
    """

    def __init__(self, p: TrainParams, *, log=print):
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
        self._load(p)
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
        self.key = params_key(p)
        self.ck_path = self.out / "checkpoint.pt"

    def _load(self, p: TrainParams) -> None:
        t = time.perf_counter()
        self.combo, self.ev, self.eval_sources = load_data(p)
        self.timings["data"] = time.perf_counter() - t
        if not self.combo.leakage.empty:
            write_parquet(self.out / "leakage.parquet", self.combo.leakage)
        self.y_tr = self.combo.train["label"].to_numpy(np.int64)
        self.y_va = self.combo.val["label"].to_numpy(np.int64)
        if len(np.unique(self.y_tr)) < 2:
            raise ValueError(f"training data of {p.train!r} has only one class; cannot train a classifier")

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
            ck = self._read_checkpoint()
            if ck is None:
                return self.start
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
        self.history, start = ck["history"], ck["epoch"]
        self.best_state, self.best_score = ck["best_state"], ck["best_score"]
        self.start = start
        self.log(f"[train] resuming after epoch {self.start}")
        return self.start

    def _read_checkpoint(self) -> dict | None:
        """The checkpoint, loaded into the trained module, optimiser and scheduler; ``None`` when it
        belongs to other parameters. Raises when it cannot be read or does not fit."""
        ck = read_torch(self.ck_path, "checkpoint")
        need = {"key", "epoch", "model", "opt", "sched", "best_state", "best_score",
                "history_cols", "history"}
        if not isinstance(ck, dict) or not need <= set(ck):
            raise CorruptFileError(f"checkpoint {self.ck_path} lacks "
                                   f"{sorted(need - set(ck)) if isinstance(ck, dict) else 'everything'}")
        if ck["key"] != self.key:
            self.log("[train] checkpoint belongs to other parameters; starting over")
            return None
        self.trained.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["opt"])
        self.sched.load_state_dict(ck["sched"])
        history = [dict(zip(ck["history_cols"], row)) for row in ck["history"]]
        start = int(ck["epoch"])
        if len(history) != start or not 0 < start <= self.n_epochs:
            raise CorruptFileError(f"checkpoint {self.ck_path} says epoch {start} with "
                                   f"{len(history)} history rows")
        return {**ck, "history": history, "epoch": start}

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
        p, out = self.p, self.out
        t = time.perf_counter()
        pred = self._predictions(logits)
        self.timings["predict"] = self.timings.get("predict", 0.0) + time.perf_counter() - t
        with atomic_path(out / "model.pt") as tmp:
            torch.save(self.model.state_dict(), tmp)  # the whole model, with the best epoch's weights
        write_text(out / "history.csv", pd.DataFrame(self.history).to_csv(index=False))
        write_parquet(out / "predictions.parquet", pred)
        best = min(self.history, key=lambda r: r[p.select]) if p.select == "val_loss" else \
            max(self.history, key=lambda r: (np.nan_to_num(r[p.select], nan=-1)))
        self.timings["total"] = time.perf_counter() - self.t_start
        write_json(out / "run.json", self._provenance(best))
        self.ck_path.unlink(missing_ok=True)
        self.log(f"[train] done: best epoch {best['epoch']} ({p.select} {best[p.select]:.4f}); "
                 f"{len(pred)} predictions; {self.timings['total']:.1f} s")
        return out

    def _predictions(self, logits: torch.Tensor) -> pd.DataFrame:
        ev = self.ev
        prob = torch.softmax(logits.float(), 1)[:, 1].numpy()
        return pd.DataFrame({"run_id": self.out.name,
                             "eval_set": ev.get("eval_set", pd.Series(dtype=str)).values,
                             "dataset": ev.get("dataset", pd.Series(dtype=str)).values,
                             "split": ev.get("split", pd.Series(dtype=str)).values,
                             "image_id": ev.get("image_id", pd.Series(dtype=str)).values,
                             "label": ev.get("label", pd.Series(dtype=int)).values.astype(int),
                             "p_melanoma": prob.astype(np.float64),
                             "logit_0": logits[:, 0].numpy().astype(np.float64),
                             "logit_1": logits[:, 1].numpy().astype(np.float64)})

    def _provenance(self, best: dict) -> dict:
        """run.json: what was trained on what, how, where, with which code and data."""
        p, combo, y_tr, history = self.p, self.combo, self.y_tr, self.history
        run = {
            "run_id": self.out.name, "model": p.model, "train": p.train, "train_label": combo.label,
            "datasets": combo.datasets, "eval_sets": p.eval_sets,
            "n_train": len(y_tr), "n_val": len(self.y_va), "n_train_melanoma": int(y_tr.sum()),
            "eval_sources": self.eval_sources,
            "removed_for_leakage": combo.removed, "best_epoch": best["epoch"], "select": p.select,
            "best_score": best[p.select], "epochs": self.n_epochs,
            "path": "fast" if p.use_fast else "loop", "loader": None if p.use_fast else p.loader,
            "device": str(self.device), "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "train_img_per_s": round(float(np.mean([h["img_per_s"] for h in history])), 1) if history else None,
            "features": self.feat_facts, "trainable": self.summary,
            "synthetic": bool(pd.concat([combo.train["synthetic"],
                                         self.ev.get("synthetic", pd.Series(dtype=bool))]).any()),
            "versions": versions(),  # python, platform, torch + CUDA build, the packages that shape results
            "git_commit": git_commit(),
            "manifests": {ds: file_sha(Path(p.work) / ds / "manifest.parquet")
                          for ds in sorted(set(combo.datasets) | set(p.eval_sets))},
            "params_key": self.key,
        }
        run.update(self.extra)
        return run

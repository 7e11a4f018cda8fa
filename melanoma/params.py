"""Typed parameter schemas shared by the CLI, the notebooks and the workflow.

A run's parameters are one :class:`TrainParams`; ``from_dict`` validates every field and names
the bad one (``TrainParams.epochs: must be a positive integer, got -3``). The resolved parameters
are written beside every run (``params.yaml``), so a run directory says how it was made.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .io import read_yaml

FREEZE = ("conv", "backbone", "none")
WEIGHTS = ("imagenet", "none")
SELECT = ("val_loss", "val_accuracy", "val_auc")
LEAKAGE = ("drop", "keep")
LOADERS = ("dataloader", "resident")
SOLVERS = ("lbfgs", "sgd")


class ParamError(ValueError):
    pass


def epochs_for(n_datasets: int) -> int:
    """The paper's schedule: 1 dataset → 30 epochs, then 30 + 2·n (2 → 34, …, 10 → 50), at most 50."""
    if n_datasets < 1:
        raise ParamError(f"a combination needs at least one dataset, got {n_datasets}")
    return 30 if n_datasets == 1 else min(50, 30 + 2 * n_datasets)


@dataclass
class TrainParams:
    work: str = "work"                 # work folder made by `melanoma ingest` (manifests + cache)
    model: str = "efficientnet_lite0"  # a name from melanoma.models.available_models()
    train: str = "B"                   # training combination: letters, names joined by '+', ...
    eval_sets: list[str] = field(default_factory=lambda: ["isic2017"])  # val/test splits scored
    out: str = "runs/example"          # run directory
    weights: str = "imagenet"          # imagenet | none
    freeze: str = "backbone"           # conv (paper text) | backbone (linear probe) | none (seed code)
    epochs: int | None = None          # None: the paper's schedule by number of datasets
    image_size: int = 224              # crop size fed to the network
    resize: int | None = None          # eval resize before the centre crop (None: size·256/224)
    views: int = 0                     # fast path: augmented views cached per training image
    augment: bool = True               # the paper's augmentation (loop path) / use views (fast path)
    fast: bool | None = None           # feature-cache path; None: on when freeze == backbone
    solver: str | None = None          # head solver: lbfgs (fast path only: logistic regression, C chosen on
                                       # validation; melanoma.probe) | sgd (the paper's recipe: SGD + StepLR
                                       # over epochs); None: lbfgs on the fast path, sgd on the loop path
    reg_grid: list[float] | None = None  # lbfgs: candidates for C, the inverse L2 strength (None: 1e-5 … 1e2)
    seed: int = 0
    batch_size: int = 32
    lr: float = 1e-3
    momentum: float = 0.9
    step_size: int = 7
    gamma: float = 0.1
    oversample: bool = True            # sample melanoma by inverse class frequency
    select: str = "val_loss"           # checkpoint = best epoch by this validation metric
    leakage: str = "drop"              # drop | keep training images duplicating evaluation images
    cache_size: int = 256              # image cache (shorter side) to read
    feature_dtype: str = "float16"     # stored feature precision (float16 | float32)
    workers: int = 0                   # DataLoader workers
    loader: str = "dataloader"         # loop path's data: dataloader (per-image torchvision ops on CPU
                                       # workers) | resident (images kept in device memory, batched
                                       # augmentation there: melanoma.resident)
    device: str = "auto"               # auto (cuda → mps → cpu) | cpu | cuda | cuda:1 | mps

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainParams":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ParamError(f"TrainParams: unknown field(s) {unknown}; valid: {sorted(names)}")
        p = cls(**d)
        p.validate()
        return p

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainParams":
        d = read_yaml(path) or {}
        if not isinstance(d, dict):
            raise ParamError(f"{path}: expected a mapping of parameters, got {type(d).__name__}")
        return cls.from_dict(d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def _bad(self, name: str, msg: str):
        raise ParamError(f"TrainParams.{name}: {msg}, got {getattr(self, name)!r}")

    def validate(self) -> "TrainParams":
        from .datasets import get, parse_combo
        from .models import available_models

        if self.model not in available_models():
            self._bad("model", f"unknown model; valid: {', '.join(available_models())}")
        try:
            parse_combo(self.train)
        except (KeyError, ValueError) as e:
            raise ParamError(f"TrainParams.train: {e}") from None
        if isinstance(self.eval_sets, str):
            self.eval_sets = [s for s in self.eval_sets.replace("+", ",").split(",") if s]
        try:
            self.eval_sets = [get(e).short for e in self.eval_sets]
        except KeyError as e:
            raise ParamError(f"TrainParams.eval_sets: {e}") from None
        for name, choices in (("weights", WEIGHTS), ("freeze", FREEZE), ("select", SELECT),
                              ("leakage", LEAKAGE), ("feature_dtype", ("float16", "float32")),
                              ("loader", LOADERS)):
            if getattr(self, name) not in choices:
                self._bad(name, f"must be one of {choices}")
        for name in ("image_size", "batch_size", "step_size", "cache_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                self._bad(name, "must be a positive integer")
        if self.epochs is not None and (not isinstance(self.epochs, int) or self.epochs <= 0):
            self._bad("epochs", "must be a positive integer (or null for the paper's schedule)")
        if not isinstance(self.views, int) or self.views < 0:
            self._bad("views", "must be an integer >= 0")
        if not (isinstance(self.workers, int) and self.workers >= 0):
            self._bad("workers", "must be an integer >= 0")
        if not (self.lr > 0 and 0 <= self.momentum < 1 and 0 < self.gamma <= 1):
            raise ParamError(f"TrainParams: need lr > 0, 0 <= momentum < 1, 0 < gamma <= 1; got "
                             f"lr={self.lr}, momentum={self.momentum}, gamma={self.gamma}")
        if self.fast and self.freeze != "backbone":
            self._bad("fast", "the feature-cache path needs freeze='backbone' (a frozen backbone)")
        if self.solver is not None and self.solver not in SOLVERS:
            self._bad("solver", f"must be one of {SOLVERS} (or null: lbfgs on the fast path, sgd otherwise)")
        if self.solver == "lbfgs" and not self.use_fast:
            self._bad("solver", "lbfgs fits a linear probe on cached features: it needs the fast path "
                                "(freeze: backbone); the network-in-the-loop path trains with sgd")
        if self.reg_grid is not None:
            if isinstance(self.reg_grid, (int, float)):
                self.reg_grid = [self.reg_grid]
            if (not isinstance(self.reg_grid, list) or not self.reg_grid
                    or not all(isinstance(c, (int, float)) and not isinstance(c, bool) and c > 0
                               for c in self.reg_grid)):
                self._bad("reg_grid", "must be a non-empty list of positive numbers (candidates for C)")
        if not Path(self.work).is_dir():
            raise ParamError(f"TrainParams.work: work folder {self.work!r} does not exist; run "
                             "`melanoma ingest` first (or `melanoma demo`)")
        return self

    # ------------------------------------------------------------------ derived values
    @property
    def datasets(self) -> list[str]:
        from .datasets import parse_combo

        return parse_combo(self.train)

    @property
    def n_epochs(self) -> int:
        return self.epochs if self.epochs is not None else epochs_for(len(self.datasets))

    @property
    def use_fast(self) -> bool:
        return self.freeze == "backbone" if self.fast is None else bool(self.fast)

    @property
    def head_solver(self) -> str:
        """``lbfgs`` or ``sgd``: the solver this run's head is trained with."""
        return self.solver or ("lbfgs" if self.use_fast else "sgd")

    @property
    def eval_resize(self) -> int:
        return self.resize or round(self.image_size * 256 / 224)

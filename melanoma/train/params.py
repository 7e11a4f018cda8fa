"""Typed parameter schemas shared by the CLI, the notebooks and the workflow.

A run's parameters are one :class:`TrainParams`; ``from_dict`` validates every field and names
the bad one (``TrainParams.epochs: must be a positive integer, got -3``). The resolved parameters
are written beside every run (``params.yaml``), so a run directory says how it was made.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SELECT = ("val_loss", "val_accuracy", "val_auc")
LEAKAGE = ("drop", "keep")
LOADERS = ("dataloader", "resident")
SOLVERS = ("lbfgs", "sgd")


class ParamError(ValueError):
    pass


#: The smallest crop every registered network accepts (they downsample by 32; below that a
#: kernel no longer fits: measured for every model in ``models.available_models()``).
MIN_IMAGE_SIZE = 32


def did_you_mean(name: str, valid) -> str:
    """`` (did you mean 'train'?)`` for a near miss, else ``""``."""
    hit = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1, cutoff=0.6)
    return f" (did you mean {hit[0]!r}?)" if hit else ""


def unknown_keys(where: str, given, valid, noun: str = "key") -> None:
    """A :class:`ParamError` naming every unknown key of ``given`` with a did-you-mean."""
    bad = sorted(set(given) - set(valid), key=str)
    if bad:
        hints = "; ".join(f"{k!r}{did_you_mean(k, valid)}" for k in bad)
        raise ParamError(f"{where}: unknown {noun}(s) {hints}; valid: {', '.join(sorted(map(str, valid)))}")


def load_yaml(path: str | Path, what: str = "a YAML file") -> Any:
    """``yaml.safe_load`` of ``path``; a syntax error or a tag that would construct Python objects
    is a :class:`ParamError` naming the file, line and column (nothing in the file is executed)."""
    path = Path(path)
    if not path.is_file():
        raise ParamError(f"{what} {path} not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ParamError(f"{path}: not UTF-8 text ({e}); save it as UTF-8") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        hint = ""
        if isinstance(e, yaml.constructor.ConstructorError) and "tag" in str(problem):
            hint = ": tags such as !!python/... are not accepted in parameter files (plain values only)"
        raise ParamError(f"{path}: not valid YAML{where}: {problem}{hint}") from None


def load_mapping(path: str | Path, what: str) -> dict:
    """A YAML file that must hold a mapping (``key: value`` lines); empty → ``{}``."""
    d = load_yaml(path, what)
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ParamError(f"{path}: {what} is a mapping of `key: value` lines, got a "
                         f"{type(d).__name__}")
    return d


def epochs_for(n_datasets: int) -> int:
    """The paper's schedule: 1 dataset → 30 epochs, then 30 + 2·n (2 → 34, …, 10 → 50), at most 50."""
    if n_datasets < 1:
        raise ParamError(f"a combination needs at least one dataset, got {n_datasets}")
    return 30 if n_datasets == 1 else min(50, 30 + 2 * n_datasets)


@dataclass
class TrainParams:
    work: str = "work"                 # work folder made by `melanoma ingest` (manifests + cache)
    model: str = "efficientnet_lite0"  # a name from melanoma.train.models.available_models()
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
                                       # validation; melanoma.train.probe) | sgd (the paper's recipe: SGD + StepLR
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
                                       # augmentation there: melanoma.train.resident)
    device: str = "auto"               # auto (cuda → mps → cpu) | cpu | cuda | cuda:1 | mps

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "TrainParams") -> "TrainParams":
        """Validated parameters from a mapping (:meth:`validate`): unknown keys are errors."""
        if not isinstance(d, dict):
            raise ParamError(f"{where}: expected a mapping of parameters, got {type(d).__name__}")
        unknown_keys(where, d, {f.name for f in dataclasses.fields(cls)}, noun="field")
        return cls(**d).validate()

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainParams":
        return cls.from_dict(load_mapping(path, "a parameters file"), where=str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def _bad(self, name: str, msg: str):
        raise ParamError(f"TrainParams.{name}: {msg}, got {getattr(self, name)!r}")

    def validate(self, *, require_work: bool = True) -> "TrainParams":
        """Check every field (a :class:`ParamError` names the bad one) and return a normalised
        copy: ``eval_sets`` as a list of short names, ``reg_grid`` as a list. ``self`` is left as
        it is. ``require_work=False`` skips the check that the work folder exists (a grid expanded
        before ingest)."""
        out = dataclasses.replace(self, eval_sets=self._eval_sets(), reg_grid=self._reg_grid())
        out._check_choices()
        out._check_numbers()
        out._check_paths()
        if require_work:
            if not Path(out.work).is_dir():
                raise ParamError(f"TrainParams.work: work folder {out.work!r} does not exist; run "
                                 "`melanoma ingest` first (or `melanoma demo`)")
            out._valid_as = out.to_dict()  # see checked()
        return out

    def checked(self) -> "TrainParams":
        """``self`` when it is what :meth:`validate` returned and unchanged since, else
        :meth:`validate`'s copy: the training entry points call it, so parameters validated at
        the edge (``from_dict``, ``from_yaml``, the grid) are not validated again."""
        return self if self.__dict__.get("_valid_as") == self.to_dict() else self.validate()

    def _eval_sets(self) -> list[str]:
        from melanoma.data.registry import get

        evals = self.eval_sets
        if isinstance(evals, str):
            evals = [s.strip() for s in evals.replace("+", ",").split(",") if s.strip()]
        if not isinstance(evals, (list, tuple)) or not evals:
            self._bad("eval_sets", "needs at least one evaluation set (e.g. ISIC2017 or B); its val "
                      "split picks the rejection threshold and its test split is scored")
        try:
            return list(dict.fromkeys(get(str(e)).short for e in evals))
        except KeyError as e:
            raise ParamError(f"TrainParams.eval_sets: {e.args[0]}") from None

    def _reg_grid(self) -> list | None:
        reg = [self.reg_grid] if isinstance(self.reg_grid, (int, float)) else self.reg_grid
        if reg is not None and (not isinstance(reg, list) or not reg
                                or not all(isinstance(c, (int, float)) and not isinstance(c, bool) and c > 0
                                           for c in reg)):
            self._bad("reg_grid", "must be a non-empty list of positive numbers (candidates for C)")
        return reg

    def _check_choices(self) -> None:
        from melanoma.data.registry import parse_combo
        from melanoma.train.models import FREEZE, WEIGHTS, available_models

        if self.model not in available_models():
            self._bad("model", f"unknown model{did_you_mean(self.model, available_models())}; "
                      f"valid: {', '.join(available_models())}")
        try:
            parse_combo(self.train)
        except (KeyError, ValueError) as e:
            raise ParamError(f"TrainParams.train: {e}") from None
        for name, choices in (("weights", WEIGHTS), ("freeze", FREEZE), ("select", SELECT),
                              ("leakage", LEAKAGE), ("feature_dtype", ("float16", "float32")),
                              ("loader", LOADERS)):
            if getattr(self, name) not in choices:
                self._bad(name, f"must be one of {choices}")

    def _check_numbers(self) -> None:
        for name in ("image_size", "batch_size", "step_size", "cache_size"):
            v = getattr(self, name)
            if not _is_int(v) or v <= 0:
                self._bad(name, "must be a positive integer")
        if self.image_size < MIN_IMAGE_SIZE:
            self._bad("image_size", f"must be at least {MIN_IMAGE_SIZE} px: the networks downsample "
                      "by 32 (the paper uses 224)")
        if self.cache_size < 16:
            self._bad("cache_size", "must be at least 16 (the image cache's smallest side)")
        if self.resize is not None and (not _is_int(self.resize) or self.resize < self.image_size):
            self._bad("resize", f"must be an integer >= image_size ({self.image_size}), or null")
        if self.epochs is not None and (not _is_int(self.epochs) or self.epochs <= 0):
            self._bad("epochs", "must be a positive integer (or null for the paper's schedule)")
        for name in ("views", "workers", "seed"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 0:
                self._bad(name, "must be an integer >= 0")
        for name in ("augment", "oversample"):
            if not isinstance(getattr(self, name), bool):
                self._bad(name, "must be true or false")
        if self.fast is not None and not isinstance(self.fast, bool):
            self._bad("fast", "must be true, false or null (null: on when freeze is backbone)")
        for name in ("lr", "momentum", "gamma"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
                self._bad(name, "must be a number")
        if not (self.lr > 0 and 0 <= self.momentum < 1 and 0 < self.gamma <= 1):
            raise ParamError(f"TrainParams: need lr > 0, 0 <= momentum < 1, 0 < gamma <= 1; got "
                             f"lr={self.lr}, momentum={self.momentum}, gamma={self.gamma}")

    def _check_paths(self) -> None:
        for name in ("work", "model", "train", "out", "device"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                self._bad(name, "must be a non-empty string")
        if self.fast and self.freeze != "backbone":
            self._bad("fast", "the feature-cache path needs freeze='backbone' (a frozen backbone)")
        if self.solver is not None and self.solver not in SOLVERS:
            self._bad("solver", f"must be one of {SOLVERS} (or null: lbfgs on the fast path, sgd otherwise)")
        if self.solver == "lbfgs" and not self.use_fast:
            self._bad("solver", "lbfgs fits a linear probe on cached features: it needs the fast path "
                                "(freeze: backbone); the network-in-the-loop path trains with sgd")

    # ------------------------------------------------------------------ derived values
    @property
    def datasets(self) -> list[str]:
        from melanoma.data.registry import parse_combo

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


#: The fields in which runs trained in one job may differ (the grid's ``group:``); they share the rest.
PER_RUN_FIELDS = ("train", "out", "epochs")


def can_share_a_job(p: TrainParams) -> bool:
    """A run that may train in a job with others: the fast path (runs one after another) or the
    resident loop path (runs sharing each forward pass)."""
    return p.use_fast or p.loader == "resident"


def job_key(p: TrainParams) -> str:
    """What runs trained in one job must share: every field but :data:`PER_RUN_FIELDS`."""
    return repr(sorted((k, v) for k, v in p.to_dict().items() if k not in PER_RUN_FIELDS))


def check_together(ps: list[TrainParams]) -> None:
    """Refuse runs that cannot train in one job (the one definition; :func:`melanoma.pipeline.grid.groups`
    packs jobs by it): several runs must each :func:`can_share_a_job`, have one :func:`job_key`
    (the error names the first field in which they differ) and distinct run directories."""
    if len(ps) > 1 and not all(can_share_a_job(p) for p in ps):
        raise ValueError("loop-path runs trained together need loader='resident'")
    for f in dataclasses.fields(TrainParams):
        vals = {repr(getattr(p, f.name)) for p in ps}
        if f.name not in PER_RUN_FIELDS and len(vals) > 1:
            raise ValueError(f"runs trained together must share {f.name!r}; got {sorted(vals)}")
    outs = [str(Path(p.out).resolve()) for p in ps]
    if len(set(outs)) < len(outs):
        raise ValueError("runs trained together need distinct run directories")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)

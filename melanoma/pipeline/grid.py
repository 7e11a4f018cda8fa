"""Grid files: expand ``params/<grid>.yaml`` into runs with stable ids and one params file each.

A grid file names models, training combinations, evaluation sets and shared training settings
(with optional per-model overrides). Every (model, combination) pair is one run; its id is
``<model>__<letters>`` (``resnet50__ABCIJ``; HAM10000 spells ``HAM``), stable across machines,
orders and additions to the grid. ``melanoma grid expand params/X.yaml`` prints the ids and writes
``results/<grid>/params/<run_id>.yaml`` (the exact :class:`~melanoma.train.params.TrainParams` of the run).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from melanoma.data.registry import get, parse_combo
from melanoma.home import find_file, home, sources
from melanoma.io import read_yaml, write_yaml
from melanoma.train.params import (ParamError, TrainParams, can_share_a_job, did_you_mean, job_key, load_mapping,
                                   unknown_keys)

#: The project's sources (params, workflow, notebooks, book): the checkout, or the copy a
#: non-editable install carries (melanoma.home). Relative ``work``/``results`` go under
#: :func:`melanoma.home.home` instead (``$MELANOMA_HOME``, else this checkout).
REPO = sources()


@dataclass
class Grid:
    name: str
    path: Path
    data: str                      # "synthetic" or a folder holding <name>/ release folders
    work: Path
    results: Path
    models: list[str]
    combinations: list[str]        # short-name lists joined by '+'
    eval_sets: list[str]
    train: dict[str, Any]
    model_overrides: dict[str, dict[str, Any]]
    calibrate: dict[str, Any] = field(default_factory=dict)
    reject: dict[str, Any] = field(default_factory=dict)
    synthetic: dict[str, Any] = field(default_factory=dict)
    web: dict[str, Any] = field(default_factory=dict)
    submission: str | None = None  # dataset whose unlabelled test split makes the SIIM-ISIC CSV
    figures: dict[str, Any] = field(default_factory=dict)
    group: int = 1                 # runs of one model per training job (fast or resident loop path)
    data_dirs: dict[str, str] = field(default_factory=dict)  # release → folder, where not DATA/<name>
    leakage_keep: list[str] = field(default_factory=list)   # run ids trained a second time with leakage: keep
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def is_synthetic(self) -> bool:
        return self.data == "synthetic"

    @property
    def data_root(self) -> Path:
        return self.work / "synthetic" if self.is_synthetic else Path(self.data)

    def release_dir(self, dataset: str) -> Path:
        """The folder holding a release's official top-level items: ``DATA/<name>`` unless the
        grid's ``data_dirs`` names another (relative to the data root, or absolute)."""
        short = get(dataset).short
        if self.is_synthetic or short not in self.data_dirs:
            return self.data_root / short
        return _resolve(self.data_root, self.data_dirs[short])

    def reject_for(self, model: str) -> dict[str, Any]:
        """The rejection settings of a model's runs: the grid's, updated by ``model_overrides``."""
        return {**self.reject, **(self.model_overrides.get(model, {}).get("reject") or {})}

    def group_for(self, model: str) -> int:
        """How many runs of ``model`` one training job may hold (``group:``, per-model override)."""
        v = self.model_overrides.get(model, {}).get("group", self.group)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ParamError(f"{self.path}: group for {model} must be an integer >= 1, got {v!r}")
        return v

    def model_combinations(self, model: str) -> list[str]:
        """The grid's combinations, or the subset a model override names (``combinations:``)."""
        own = self.model_overrides.get(model, {}).get("combinations")
        if own is None:
            return self.combinations
        if not isinstance(own, list) or not own:
            raise ParamError(f"{self.path}: model_overrides.{model}.combinations must be a non-empty "
                             f"list, got {own!r}")
        out = []
        for c in own:
            try:
                out.append("+".join(parse_combo(str(c))))
            except (KeyError, ValueError) as e:
                raise ParamError(f"{self.path}: model_overrides.{model}.combinations: {c!r}: "
                                 f"{e.args[0] if e.args else e}") from None
        return out

    @property
    def datasets(self) -> list[str]:
        """Every release the grid touches (training members, evaluation sets, submission)."""
        names = {d for c in self.combinations for d in c.split("+")} | set(self.eval_sets)
        if self.submission:
            names.add(self.submission)
        from melanoma.data.registry import SHORT_NAMES

        return [s for s in SHORT_NAMES if s in names]


#: Keys of a grid file's sections (strict: anything else is an error with a did-you-mean). The
#: top-level keys are the fields of :class:`Grid` (less ``path``/``raw``).
RUN_KEYS = ("work", "model", "train", "eval_sets", "out")   # set per run by the grid, not in `train:`
SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "calibrate": ("bins", "bootstrap"),
    "reject": ("mode", "thresholds", "min_coverage", "bootstrap", "method", "alpha", "risk_target", "risk_delta"),
    "synthetic": ("scale", "seed"),
    "web": ("run",),
    "figures": ("rejection", "calibration_single", "calibration_combined"),
}
OVERRIDE_KEYS = ("combinations", "reject", "group")         # per model, besides TrainParams fields
#: Keys a section had under another name: ``{section: {old: (new, why)}}``. The old key is an error
#: that names the new one.
RENAMED_KEYS: dict[str, dict[str, tuple[str, str]]] = {
    "reject": {"grid": ("thresholds", "the candidate thresholds; `grid` names only the grid file")},
}


def grid_keys() -> list[str]:
    return [f.name for f in dataclasses.fields(Grid) if f.name not in ("path", "raw")]


def _train_keys() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainParams) if f.name not in RUN_KEYS]


def _mapping(path: Path, g: dict, key: str) -> dict:
    v = g.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ParamError(f"{path}: {key!r} must be a mapping (`{key}: {{a: 1, b: 2}}` or indented "
                         f"`a: 1` lines), got {type(v).__name__} {v!r}")
    return v


def _check_renamed(path: Path, where: str, sec: str, given: dict) -> None:
    """A :class:`ParamError` for a key of section ``sec`` (at ``where``) that was renamed."""
    for old, (new, why) in RENAMED_KEYS.get(sec, {}).items():
        if old in given:
            raise ParamError(f"{path}: {where}.{old} was renamed to {where}.{new} ({why}); write "
                             f"`{new}: {given[old]}`")


def _check_sections(path: Path, g: dict) -> None:
    """Every key of every section is known; values of the evaluation settings are valid."""
    unknown_keys(str(path), g, grid_keys())
    for sec, keys in SECTION_KEYS.items():
        _check_renamed(path, sec, sec, _mapping(path, g, sec))
        unknown_keys(f"{path}: {sec}", _mapping(path, g, sec), keys)
    unknown_keys(f"{path}: train", _mapping(path, g, "train"), _train_keys())
    for m, over in _mapping(path, g, "model_overrides").items():
        if over is None:
            continue
        if not isinstance(over, dict):
            raise ParamError(f"{path}: model_overrides.{m} must be a mapping, got {type(over).__name__}")
        unknown_keys(f"{path}: model_overrides.{m}", over, _train_keys() + list(OVERRIDE_KEYS))
        _check_renamed(path, f"model_overrides.{m}.reject", "reject", _mapping(path, over, "reject"))
        unknown_keys(f"{path}: model_overrides.{m}.reject", _mapping(path, over, "reject"),
                     SECTION_KEYS["reject"])
    for where, rej in [("reject", _mapping(path, g, "reject"))] + [
            (f"model_overrides.{m}.reject", _mapping(path, o, "reject"))
            for m, o in _mapping(path, g, "model_overrides").items() if isinstance(o, dict)]:
        _check_reject(path, where, rej)
    cal = _mapping(path, g, "calibrate")
    for k in ("bins", "bootstrap"):
        v = cal.get(k)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < (1 if k == "bins" else 0)):
            raise ParamError(f"{path}: calibrate.{k} must be an integer >= {1 if k == 'bins' else 0}, got {v!r}")


def _check_reject(path: Path, where: str, rej: dict) -> None:
    from melanoma.evaluate.reject import METHODS, MODES, parse_thresholds

    if "mode" in rej and rej["mode"] not in MODES:
        raise ParamError(f"{path}: {where}.mode must be one of {', '.join(MODES)}, got {rej['mode']!r}"
                         f"{did_you_mean(rej['mode'], list(MODES))}")
    if "thresholds" in rej and str(rej["thresholds"]).strip().lower() != "auto":
        try:
            parse_thresholds(str(rej["thresholds"]))
        except ValueError as e:
            raise ParamError(f"{path}: {where}.thresholds: {e}") from None
    if "method" in rej and rej["method"] not in METHODS:
        raise ParamError(f"{path}: {where}.method must be one of {', '.join(METHODS)}, got {rej['method']!r}"
                         f"{did_you_mean(rej['method'], list(METHODS))}")
    for k in ("alpha", "risk_target", "risk_delta"):
        v = rej.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1):
            raise ParamError(f"{path}: {where}.{k} must be a number in (0, 1), got {v!r}")
    mc = rej.get("min_coverage")
    if mc is not None and (isinstance(mc, bool) or not isinstance(mc, (int, float)) or not 0 <= mc <= 1):
        raise ParamError(f"{path}: {where}.min_coverage must be a number in [0, 1], got {mc!r}")
    b = rej.get("bootstrap")
    if b is not None and (not isinstance(b, int) or isinstance(b, bool) or b < 0):
        raise ParamError(f"{path}: {where}.bootstrap must be an integer >= 0, got {b!r}")


def run_id(model: str, combo: list[str]) -> str:
    letters = "".join(get(d).letter or "" for d in combo)
    extra = "".join(f"_{get(d).name.upper()[:3]}" for d in combo if not get(d).letter)
    return f"{model}__{letters}{extra}".replace("__" + "_", "__")


#: Suffix of a leakage twin: the same run trained with ``leakage: keep`` (grid key ``leakage_keep``).
KEEP_SUFFIX = "__keep"


def _resolve(base: Path, p: str | os.PathLike) -> Path:
    p = Path(os.path.expandvars(str(p)))
    return p if p.is_absolute() else (base / p)


def load_grid(path: str | os.PathLike, *, data: str | None = None, work: str | None = None,
              results: str | None = None) -> Grid:
    """Read and validate a grid file. ``data``/``work``/``results`` override the file (and the
    environment variables ``DATA_ROOT``/``WORK``/``RESULTS`` override those)."""
    path = Path(path)
    g = load_mapping(path, "a grid file (see params/demo.yaml)")
    for key in ("name", "models", "combinations", "eval_sets"):
        if key not in g:
            raise ParamError(f"{path}: missing key {key!r}")
    _check_sections(path, g)
    if not isinstance(g["name"], (str, int)) or not str(g["name"]).strip() or "/" in str(g["name"]):
        raise ParamError(f"{path}: name must be a short word (it names results/<name>), got {g['name']!r}")
    parsed = _combinations(path, g["combinations"])
    models = _models(path, g["models"])
    eval_sets, submission = _eval_sets(path, g)
    data_v, data_dirs = _data(path, g, data)
    work_v = work or os.environ.get("WORK") or g.get("work", "work")
    res_v = results or os.environ.get("RESULTS") or g.get("results", f"results/{g['name']}")
    grid = Grid(
        name=str(g["name"]), path=path, data=data_v,
        work=_resolve(home(), work_v), results=_resolve(home(), res_v), models=list(models),
        combinations=parsed, eval_sets=eval_sets, train=dict(_mapping(path, g, "train")),
        model_overrides={m: dict(o or {}) for m, o in _mapping(path, g, "model_overrides").items()},
        calibrate=dict(_mapping(path, g, "calibrate")),
        reject=dict(_mapping(path, g, "reject")), synthetic=dict(_mapping(path, g, "synthetic")),
        web=dict(_mapping(path, g, "web")), submission=submission,
        figures=dict(_mapping(path, g, "figures")), group=g.get("group", 1), data_dirs=data_dirs,
        leakage_keep=[str(r) for r in (g.get("leakage_keep") or [])], raw=g)
    _check_runs(path, grid)
    return grid


def _combinations(path: Path, combos) -> list[str]:
    """The grid's combinations as short names joined by '+' (a string: a file, one per line)."""
    if isinstance(combos, str):  # a file of combinations, one per line
        cfile = _resolve(path.parent.resolve(), combos)
        if not cfile.is_file():
            raise ParamError(f"{path}: combinations names the file {cfile}, which does not exist "
                             "(give a list, or a file with one combination per line)")
        combos = [l.strip() for l in cfile.read_text().splitlines() if l.strip() and not l.startswith("#")]
    if not isinstance(combos, list):
        raise ParamError(f"{path}: combinations must be a list (or a file name), got {combos!r}")
    if not combos:
        raise ParamError(f"{path}: combinations is empty: the grid would have 0 runs")
    parsed = []
    for c in combos:
        try:
            parsed.append("+".join(parse_combo(str(c))))
        except (KeyError, ValueError) as e:
            raise ParamError(f"{path}: combination {c!r}: {e}") from None
    if len(set(parsed)) != len(parsed):
        dup = sorted({c for c in parsed if parsed.count(c) > 1})
        raise ParamError(f"{path}: combinations listed twice: {dup}")
    return parsed


def _models(path: Path, models) -> list[str]:
    """The grid's models (``paper``: the paper's 24), each a registered name, none twice."""
    from melanoma.train.models import available_models, paper_models

    if isinstance(models, str) and models == "paper":
        models = paper_models()
    if not isinstance(models, list):
        raise ParamError(f"{path}: models must be a list of model names (or 'paper'), got {models!r}")
    if not models:
        raise ParamError(f"{path}: models is empty: the grid would have 0 runs")
    for m in models:
        if m not in available_models():
            raise ParamError(f"{path}: unknown model {m!r}{did_you_mean(m, available_models())}; "
                             f"valid: {', '.join(available_models())}")
    if len(set(models)) != len(models):
        raise ParamError(f"{path}: models listed twice: {sorted({m for m in models if models.count(m) > 1})}")
    return models


def _eval_sets(path: Path, g: dict) -> tuple[list[str], str | None]:
    """The evaluation sets and the submission set, as short names."""
    evs = g["eval_sets"]
    if isinstance(evs, str):
        evs = [e for e in evs.replace("+", ",").split(",") if e.strip()]
    if not isinstance(evs, list) or not evs:
        raise ParamError(f"{path}: eval_sets must be a non-empty list (e.g. [ISIC2017, ISIC2018])")
    try:
        return ([get(str(e)).short for e in evs],
                get(str(g["submission"])).short if g.get("submission") else None)
    except KeyError as e:
        raise ParamError(f"{path}: {e.args[0]}") from None


def _data(path: Path, g: dict, data: str | None) -> tuple[str, dict[str, str]]:
    """Where the releases are (``synthetic`` or a folder) and the per-release folders."""
    data_v = data or os.environ.get("DATA_ROOT")
    data_base = Path.cwd()  # a folder given on the command line / in the environment: from here
    if not data_v:
        data_v = g.get("data", "synthetic")
        data_base = REPO    # a folder written in the grid file: relative to the repository
    if "$" in str(os.path.expandvars(str(data_v))):
        raise ParamError(f"{path}: data is {data_v!r}; set DATA_ROOT to the folder holding the "
                         "releases as DATA_ROOT/<name>/ (see the README's 'Real data')")
    data_dirs = g.get("data_dirs") or {}
    if not isinstance(data_dirs, dict):
        raise ParamError(f"{path}: data_dirs must map release names to folders, got {data_dirs!r}")
    try:
        data_dirs = {get(k).short: str(v) for k, v in data_dirs.items()}
    except KeyError as e:
        raise ParamError(f"{path}: data_dirs: {e}") from None
    return (str(data_v) if data_v == "synthetic" else str(_resolve(data_base, data_v))), data_dirs


def _check_runs(path: Path, grid: Grid) -> None:
    """Overrides name models of the grid, group sizes are valid, leakage twins name its runs."""
    unknown = sorted(set(grid.model_overrides) - set(grid.models))
    if unknown:
        raise ParamError(f"{path}: model_overrides for models not in the grid: "
                         + ", ".join(f"{u!r}{did_you_mean(u, grid.models)}" for u in unknown))
    for m in grid.models:
        grid.group_for(m)
    ids = {run_id(m, c.split("+")) for m in grid.models for c in grid.model_combinations(m)}
    bad = [r for r in grid.leakage_keep if r not in ids]
    if bad:
        raise ParamError(f"{path}: leakage_keep names run(s) not in the grid: "
                         + ", ".join(f"{r!r}{did_you_mean(r, ids)}" for r in bad) + f"; valid: {sorted(ids)}")

def run_params(grid: Grid, model: str, combo: str, keep: bool = False) -> TrainParams:
    rid = run_id(model, combo.split("+")) + (KEEP_SUFFIX if keep else "")
    evals = list(grid.eval_sets)
    if grid.submission and grid.submission not in evals:
        evals.append(grid.submission)
    over = {k: v for k, v in grid.model_overrides.get(model, {}).items()
            if k not in ("combinations", "reject", "group")}
    d = {**grid.train, **over,
         "work": str(grid.work), "model": model, "train": combo, "eval_sets": evals,
         "out": str(grid.results / "runs" / rid)}
    if keep:
        d["leakage"] = "keep"
    where = f"{grid.path}: run {rid}"
    try:
        return TrainParams.from_dict(d, where=where) if grid.work.is_dir() else _unvalidated(d)
    except ParamError as e:
        msg = str(e)
        raise ParamError(msg if msg.startswith(str(grid.path)) else f"{where}: {msg}") from None


def _unvalidated(d: dict) -> TrainParams:
    """Parameters before ingest has made the work folder: checked except for its existence."""
    return TrainParams(**d).validate(require_work=False)


def expand(grid: Grid) -> dict[str, TrainParams]:
    """run id → parameters, in grid order (models outer, combinations inner), then the leakage
    twins (``leakage_keep``: the named runs again with ``leakage: keep``, id ``<run>__keep``)."""
    runs: dict[str, TrainParams] = {}
    twins = set(grid.leakage_keep)
    for keep in (False, True):
        for m in grid.models:
            for c in grid.model_combinations(m):
                if keep and run_id(m, c.split("+")) not in twins:
                    continue
                p = run_params(grid, m, c, keep=keep)
                rid = Path(p.out).name
                if rid in runs:
                    raise ParamError(f"{grid.path}: two runs share the id {rid}")
                runs[rid] = p
    if not runs:
        raise ParamError(f"{grid.path}: the grid has 0 runs (models {grid.models} × their combinations)")
    for where, rid in [("web.run", grid.web.get("run"))] + [(f"figures.{k}", v) for k, v in grid.figures.items()]:
        if rid is not None and rid not in runs:
            raise ParamError(f"{grid.path}: {where} is {rid!r}, not a run of this grid"
                             f"{did_you_mean(rid, runs)}; `melanoma grid expand {grid.path}` lists them")
    return runs


def groups(grid: Grid, runs: dict[str, TrainParams] | None = None) -> dict[str, list[str]]:
    """Training jobs that hold several runs: group id → run ids (see :mod:`melanoma.train.group`).

    Runs of one model whose parameters differ only in ``train``/``out``/``epochs`` and that take
    the fast path or the resident loop path (the one definition: :func:`melanoma.train.params.job_key`,
    :func:`~melanoma.train.params.can_share_a_job`) are packed, in grid order, ``grid.group_for(model)`` to
    a job, with the id ``<model>__group<k>`` (k from 1 per model). Runs in no group train alone
    (rule ``train``). A job that fails marks all its runs failed; rerun, it retrains only those
    without a finished ``run.json``.
    """
    runs = expand(grid) if runs is None else runs
    out: dict[str, list[str]] = {}
    for m in grid.models:
        size = grid.group_for(m)
        if size < 2:
            continue
        buckets: dict[str, list[str]] = {}
        for rid, p in runs.items():
            if p.model == m and can_share_a_job(p):
                buckets.setdefault(job_key(p), []).append(rid)
        k = 0
        for ids in buckets.values():
            for s in range(0, len(ids), size):
                chunk = ids[s:s + size]
                if len(chunk) > 1:
                    k += 1
                    out[f"{m}__group{k}"] = chunk
    return out


def write_run_params(grid: Grid) -> dict[str, Path]:
    """Write ``results/<grid>/params/<run_id>.yaml`` for every run (unchanged files untouched, so
    Snakemake's mtime logic does not rerun finished work)."""
    out = {}
    copy = grid.results / "grid.yaml"  # so `melanoma report --grid results/<grid>` finds it
    src = grid.path.read_text()
    if not copy.is_file() or copy.read_text() != src:
        from melanoma.io import write_text

        write_text(copy, src)
    for rid, p in expand(grid).items():
        f = grid.results / "params" / f"{rid}.yaml"
        text_new = p.to_dict()
        if not f.is_file() or read_yaml(f) != text_new:
            write_yaml(f, text_new)
        out[rid] = f
    return out


def find_grid_file(arg: str | os.PathLike) -> Path:
    """A grid YAML, or a results folder holding the copy ``grid.yaml`` that expand wrote; a
    relative path is looked up in the current folder first, then in the home, then in the
    project's sources (so ``params/demo.yaml`` works from any folder). Returns an absolute path."""
    try:
        p = find_file(arg, "grid")
    except FileNotFoundError as e:
        raise ParamError(str(e)) from None
    if p.is_dir():
        if (p / "grid.yaml").is_file():
            return p / "grid.yaml"
        raise ParamError(f"{p} holds no grid.yaml; pass the grid file (params/<grid>.yaml)")
    if not p.is_file():
        raise ParamError(f"grid {p} not found")
    return p

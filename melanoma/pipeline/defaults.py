"""The embedded default of the notebooks: one data folder and one run, made on first use.

Every notebook (``01_ingest`` … ``04_reject``) run with its defaults uses the same work folder
(``HOME/work``, :func:`melanoma.home.home`) and, for 02–04, the same run (``HOME/work/runs/example``),
trained by one recipe (:data:`RECIPE`, which is also notebook 02's defaults). Whatever notebook
runs first makes what it needs, so the notebooks run in any order:

* :func:`ensure_data` — the SYNTHETIC replicas of the releases (written once, as ``melanoma synth``
  writes them for the demo grid) and a manifest for **every** release asked for;
* :func:`ensure_run` — the default run (trained with :data:`RECIPE` when absent).

Both show progress (tqdm: a widget in Jupyter, text elsewhere) and never mix synthetic data into
a work folder that holds real releases: there a missing manifest is an error saying how to ingest it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from melanoma.data.registry import get, parse_combo
from melanoma.home import resolve
from melanoma.io import read_json, write_json

#: The synthetic replicas the defaults write (the demo grid's: ``params/demo.yaml``).
SYNTHETIC = {"scale": 1.0, "seed": 0}
#: The evaluation sets notebook 01 reports leakage against by default.
EVAL_SETS = "ISIC2017,ISIC2018,_7_point_criteria,KaggleMB"
#: The default run's recipe: notebook 02's parameter defaults, and the run 03/04 use by default.
#: A linear probe on cached EfficientNet-Lite0 ImageNet features (the fast path: about a minute on a
#: CPU the first time, for the features; the demo grid caches the same ones).
RECIPE: dict[str, Any] = dict(
    model="efficientnet_lite0", weights="imagenet", freeze="backbone", train="B",
    eval_sets="ISIC2017,ISIC2018", leakage="drop", epochs=0, image_size=128, views=0,
    select="val_loss", seed=0, loader="dataloader")
#: The default run's folder, under the work folder.
RUN_NAME = "runs/example"


def work_dir(work: str | Path = "") -> Path:
    """The work folder: ``work`` (relative to the home), or ``HOME/work`` when empty."""
    return resolve(work, "work")


def _is_synthetic_work(work: Path) -> bool:
    reports = sorted(work.glob("*/report.json"))
    return all(read_json(r).get("synthetic", False) for r in reports)


def ensure_replicas(work: str | Path = "", *, scale: float | None = None, seed: int | None = None) -> Path:
    """``WORK/synthetic``, written once (``replicas.json`` is the done flag, as the workflow's)."""
    from melanoma.data.synthetic import write_replicas

    out = work_dir(work) / "synthetic"
    if not (out / "replicas.json").is_file():
        scale = SYNTHETIC["scale"] if scale is None else scale
        seed = SYNTHETIC["seed"] if seed is None else seed
        print(f"writing the SYNTHETIC replicas of the 11 releases to {out} (first use; scale {scale}, seed {seed})",
              flush=True)
        summary = write_replicas(out, scale=scale, seed=seed, progress=True)
        write_json(out / "replicas.json", summary)
    return out


def ensure_data(work: str | Path = "", datasets: str | list[str] = EVAL_SETS, *,
                progress: bool = True) -> Path:
    """A manifest in ``work`` for every release of ``datasets`` (names, letters, ``A-C,I`` or a
    list); missing ones are ingested from the SYNTHETIC replicas. Returns the work folder.

    A work folder that holds a real release (``report.json`` not synthetic) gets no synthetic
    data: a missing manifest there is a ``FileNotFoundError`` naming how to ingest it."""
    from melanoma.data.ingest import ingest_dataset

    w = work_dir(work)
    names = datasets if isinstance(datasets, list) else parse_combo(datasets)
    missing = [get(d).short for d in names if not (w / get(d).short / "manifest.parquet").is_file()]
    if not missing:
        return w
    if not _is_synthetic_work(w):
        raise FileNotFoundError(
            f"no manifest for {', '.join(missing)} in {w}, which holds real releases: ingest them "
            f"first (notebook 01_ingest with data_root, or `melanoma ingest --root DATA/<name> --out {w}`)")
    root = ensure_replicas(w)
    for short in missing:
        print(f"ingesting the SYNTHETIC {short} replica into {w / short} (first use)", flush=True)
        ingest_dataset(short, root / short, w, progress=progress)
    return w


def train_params(work: str | Path = "", out: str | Path = "", params_file: str = "", params_files: str = "",
                 **values: Any) -> list:
    """The :class:`~melanoma.train.params.TrainParams` notebook 02 trains: from the workflow's params
    file(s), or from the notebook's values (``work``/``out`` empty: the defaults; relative paths
    under the home). ``out`` empty is the default run's folder for :data:`RECIPE`, else
    ``WORK/runs/<model>__<letters>``, so the default run only ever holds the default recipe."""
    from melanoma.pipeline.grid import run_id
    from melanoma.train.params import TrainParams

    if params_files:  # the workflow: several runs of one model in one job
        return [TrainParams.from_yaml(f) for f in params_files.split(",")]
    if params_file:  # the workflow: one run of a grid
        return [TrainParams.from_yaml(params_file)]
    unknown = set(values) - set(RECIPE)
    if unknown:
        raise TypeError(f"train_params: unknown value(s) {sorted(unknown)}; valid: {sorted(RECIPE)}")
    v = {**RECIPE, **values}
    w = work_dir(work)
    if out:
        run = resolve(out)
    elif v == RECIPE:
        run = w / RUN_NAME
    else:
        run = w / "runs" / run_id(v["model"], parse_combo(v["train"]))
    ev = [e for e in str(v["eval_sets"]).split(",") if e.strip()]
    ensure_data(w, sorted(set(parse_combo(v["train"])) | {get(e).short for e in ev}))
    return [TrainParams.from_dict({**v, "eval_sets": ev, "epochs": v["epochs"] or None,
                                   "work": str(w), "out": str(run)})]


def ensure_run(run_dir: str | Path = "", work: str | Path = "", *, progress: bool = True) -> Path:
    """A finished run's folder: ``run_dir`` (relative to the home), or, when empty, the default
    run (``WORK/runs/example``), trained with :data:`RECIPE` on first use. A ``run_dir`` given
    but not finished is a ``FileNotFoundError`` (nothing is trained into a folder you named)."""
    if run_dir:
        d = resolve(run_dir)
        if not (d / "run.json").is_file():
            raise FileNotFoundError(f"{d} is not a finished run (no run.json): train it first "
                                    "(notebook 02_train, `melanoma train`), or leave run_dir empty "
                                    "for the default run")
        return d
    from melanoma.train.group import train_members

    (p,) = train_params(work)
    if not (Path(p.out) / "run.json").is_file():
        print(f"training the default run into {p.out} (first use): {p.model}, {p.freeze} frozen, on "
              f"{p.train}", flush=True)
    return train_members([p], progress=progress)[0]


def ingest_inputs(dataset: str, data_root: str | Path = "", work: str | Path = "", *,
                  eval_sets: str = EVAL_SETS, scale: float | None = None) -> tuple[Path, Path]:
    """Notebook 01's ``(work folder, release folder)``: ``data_root`` as given (relative to the
    home), or, when empty, the release's SYNTHETIC replica — and then the evaluation sets its
    leakage section compares against are ingested too (from their replicas, when missing)."""
    w = work_dir(work)
    if data_root:
        root = resolve(data_root)
        if not root.is_dir():
            raise FileNotFoundError(f"data_root {root} is not a folder: point it at the folder holding "
                                    f"the official top-level items of {get(dataset).title}")
        return w, root
    short = get(dataset).short
    others = [e for e in parse_combo(eval_sets) if e != short] if eval_sets else []
    if others:
        ensure_data(w, others)
    return w, ensure_replicas(w, scale=scale) / short


def ingested(work: str | Path, datasets: str) -> list[str]:
    """The releases of ``datasets`` (names, letters) that have a manifest in ``work``."""
    w = work_dir(work)
    return [d for d in parse_combo(datasets) if (w / d / "manifest.parquet").is_file()] if datasets else []


def record_params(path: str | Path, **params: Any) -> dict:
    """Write a notebook's resolved parameters beside its outputs (YAML, atomically) and return them."""
    from melanoma.io import write_yaml

    write_yaml(path, params)
    return params

"""A training job holding several runs of one model (the grid's ``group: N``; :func:`melanoma.pipeline.grid.groups`).

:func:`train_members` is what a training job runs (notebook ``02_train``): it keeps the runs that
already finished with the same parameters, code and data, and trains the others together
through :func:`melanoma.train.recipe.train_runs` — fast-path runs one after another in this one process
(one process, kernel and ``import torch`` start-up for the whole job), resident loop-path runs in
one shared forward pass (:mod:`melanoma.train.sharedpass`). Every run keeps its own run directory,
checkpoint and outputs, exactly as :func:`melanoma.train.recipe.train_run` writes them (``run.json`` says
``"group"``); a killed group resumes each run from its own checkpoint, and runs with fewer epochs
(the paper's schedule: 30 + 2 per extra dataset) leave the group when they finish.
"""

from __future__ import annotations

from pathlib import Path

from melanoma.train.params import TrainParams, check_together
from melanoma.train.recipe import train_runs
from melanoma.train.run import is_finished


def train_members(ps: list[TrainParams], *, progress: bool = True, stop_after: int | None = None,
                  log=print) -> list[Path]:
    """Train runs ``ps`` of one model in this process.

    Loop path (``loader="resident"``): on resident images, sharing each forward pass. Fast path
    (cached features), or a single run of any path: one after another — a grouped job then pays
    the process, kernel and ``import torch`` start-up once instead of once per run
    (``benchmarks/group_jobs.py``).

    Returns the run directories, in order. A run whose ``run.json`` says it finished with the same
    parameters, code commit and manifests is kept, not retrained (a rerun job holding finished runs
    redoes only the others; delete a run's ``run.json`` to force it).
    ``stop_after=k`` stops after epoch k as if killed.
    """
    ps = [p.checked() for p in ps]
    check_together(ps)
    todo = [p for p in ps if not is_finished(p)]
    for p in ps:
        if p not in todo:
            log(f"[train] {Path(p.out).name}: already finished with these parameters (run.json); kept")
    if todo:
        train_runs(todo, progress=progress, stop_after=stop_after, log=log)
    return [Path(p.out) for p in ps]

"""Run one parameterised notebook with papermill for the workflow, and record how it went.

``melanoma nbrun NOTEBOOK OUTPUT.ipynb --status STATUS.json [-p key value ...] [--params-file F]``
executes NOTEBOOK into OUTPUT.ipynb (kept beside the run's outputs, errors included) and writes
STATUS.json atomically: ``{"status": "ok" | "failed" | "skipped", "notebook", "seconds", "error"}``.
A failed notebook is *recorded*, not raised, so one failed run does not stop the grid and the book
can list it with the path to the executed notebook that shows the error. ``--after S1.json ...``
makes the step a recorded skip when an upstream step did not succeed.

GPUs: when several are visible, each job takes one (``CUDA_VISIBLE_DEVICES``) through a lock file
per device, so concurrent Snakemake jobs on one machine never share a card.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from pathlib import Path

from .io import read_json, write_json


def _visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    # nvidia-smi, not torch: querying CUDA here would initialise it in this process before
    # CUDA_VISIBLE_DEVICES is set (the features step claims its GPU in-process)
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(l for l in out.splitlines() if l.startswith("GPU "))]


@contextlib.contextmanager
def claim_gpu(lock_dir: str | None = None, poll_s: float = 2.0):
    """Hold one GPU (by lock file) for the duration; yields its id, or None without GPUs."""
    gpus = _visible_gpus()
    if len(gpus) <= 1:
        yield gpus[0] if gpus else None
        return
    d = Path(lock_dir or tempfile.gettempdir())
    while True:
        for g in gpus:
            f = open(d / f"melanoma-gpu-{g}.lock", "w")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                continue
            try:
                yield g
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
                f.close()
            return
        time.sleep(poll_s)


def run_notebook(notebook: str | Path, output: str | Path, status: str | Path | list, *,
                 parameters: dict | None = None, after: list[str | Path] = (),
                 cwd: str | Path | None = None, kernel: str = "python3") -> dict:
    """Execute ``notebook`` into ``output``; write the result to ``status`` (one file, or a list of
    files that all get it: a training job holding several runs writes one per run)."""
    import papermill as pm

    output = Path(output)
    statuses = [Path(s) for s in (status if isinstance(status, (list, tuple)) else [status])]

    def record(res: dict) -> dict:
        for f in statuses:
            write_json(f, res)
        return res

    for s in after:
        st = read_json(s) if Path(s).is_file() else {"status": "missing"}
        if st.get("status") != "ok":
            return record({"status": "skipped", "notebook": str(output), "seconds": 0.0,
                           "error": f"upstream step {s} is {st.get('status')}"})
    output.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res = {"status": "ok", "notebook": str(output), "error": ""}
    with claim_gpu() as gpu:
        env_before = os.environ.get("CUDA_VISIBLE_DEVICES")
        if gpu is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu
            res["gpu"] = gpu
        try:
            pm.execute_notebook(str(notebook), str(output), parameters=parameters or {},
                                cwd=str(cwd or Path(notebook).parent), kernel_name=kernel,
                                progress_bar=False)
        except pm.PapermillExecutionError as e:
            res.update(status="failed", error=f"{e.ename}: {e.evalue}")
        except Exception as e:  # kernel death, missing notebook: still recorded
            res.update(status="failed", error=f"{type(e).__name__}: {e}")
        finally:
            if gpu is not None:
                if env_before is None:
                    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                else:
                    os.environ["CUDA_VISIBLE_DEVICES"] = env_before
    res["seconds"] = round(time.perf_counter() - t0, 3)
    return record(res)

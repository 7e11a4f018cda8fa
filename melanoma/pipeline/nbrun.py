"""Run one parameterised notebook with papermill for the workflow, and record how it went.

``melanoma nbrun NOTEBOOK OUTPUT.ipynb --status STATUS.json [-p key value ...] [--params-file F]``
executes NOTEBOOK into OUTPUT.ipynb (kept beside the run's outputs, errors included) and writes
STATUS.json atomically: ``{"status": "ok" | "failed" | "skipped", "notebook", "seconds", "error"}``.
A failed notebook is *recorded*, not raised, so one failed run does not stop the grid and the book
can list it with the path to the executed notebook that shows the error. ``--after S1.json ...``
makes the step a recorded skip when an upstream step did not succeed.

Several steps in one call (``... --then NOTEBOOK OUTPUT --status S ... --then ...``; the
workflow's training job calibrates and rejects each of its runs this way): the steps run one after
another in **one kernel**, started once; before each step the kernel's namespace is reset
(``%reset -f``, figures closed, garbage collected, execution counter back to 1), so a step sees only
its own parameters and cells, as in a fresh kernel, but imports already made (torch, pandas, the
package) are not paid again. A step whose kernel died gets a new one; a failed step is recorded and
the next step still runs (or is a recorded skip, per its ``--after``).

GPUs: when several are visible, each job takes one (``CUDA_VISIBLE_DEVICES``) through a lock file
per device (:func:`melanoma.pipeline.gpus.claim_gpu`), so concurrent Snakemake jobs on one machine
never share a card.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from melanoma.io import read_json, write_json
from melanoma.pipeline.gpus import claim_gpu


def run_notebook(notebook: str | Path, output: str | Path, status: str | Path | list, *,
                 parameters: dict | None = None, after: list[str | Path] = (),
                 cwd: str | Path | None = None, kernel: str = "python3") -> dict:
    """Execute ``notebook`` into ``output``; write the result to ``status`` (one file, or a list of
    files that all get it: a training job holding several runs writes one per run)."""
    return run_steps([Step(notebook, output, status, parameters or {}, list(after), cwd)], kernel=kernel)[0]


@dataclass
class Step:
    """One notebook step: execute ``notebook`` into ``output`` with ``parameters`` (after the status
    files ``after`` say ok), and write its result to every file of ``status``."""

    notebook: str | Path
    output: str | Path
    status: str | Path | list
    parameters: dict = field(default_factory=dict)
    after: list = field(default_factory=list)
    cwd: str | Path | None = None

    @property
    def statuses(self) -> list[Path]:
        s = self.status
        return [Path(x) for x in (s if isinstance(s, (list, tuple)) else [s])]

    @property
    def kernel_cwd(self) -> str:
        return str(Path(self.cwd or Path(self.notebook).parent).resolve())


def _record(step: Step, res: dict) -> dict:
    for f in step.statuses:
        write_json(f, res)
    return res


def _upstream_problem(step: Step) -> str | None:
    for s in step.after:
        st = read_json(s) if Path(s).is_file() else {"status": "missing"}
        if st.get("status") != "ok":
            return f"upstream step {s} is {st.get('status')}"
    return None


_RESET = """\
get_ipython().run_line_magic("reset", "-f")
import gc as _gc, sys as _sys
if "matplotlib.pyplot" in _sys.modules:
    _sys.modules["matplotlib.pyplot"].close("all")
if "torch" in _sys.modules and _sys.modules["torch"].cuda.is_initialized():
    _sys.modules["torch"].cuda.empty_cache()
_gc.collect()
get_ipython().run_line_magic("reset", "-f")
get_ipython().execution_count = 1
"""


class _SharedKernel:
    """One kernel for several steps: started on first use, reset between steps, replaced when it
    died or will not reset, shut down at the end. An AsyncKernelManager, as nbclient makes for
    itself: nbclient awaits its liveness checks (a blocking manager there never notices a kernel
    that died, and the step hangs)."""

    def __init__(self, kernel: str):
        self.kernel = kernel
        self.km = None
        self.cwd = None
        self.used = False

    def get(self, cwd: str):
        from jupyter_core.utils import run_sync

        if self.km is not None and (self.cwd != cwd or not run_sync(self.km.is_alive)() or not self._reset()):
            self.close()
        if self.km is None:
            from jupyter_client import AsyncKernelManager

            self.km = AsyncKernelManager(kernel_name=self.kernel)
            run_sync(self.km.start_kernel)(cwd=cwd)
            self.cwd, self.used = cwd, False
        self.used = True
        return self.km

    def _reset(self) -> bool:
        if not self.used:
            return True
        kc = self.km.blocking_client()
        try:
            kc.start_channels()
            kc.wait_for_ready(timeout=60)
            reply = kc.execute_interactive(_RESET, timeout=120, store_history=False)
            return reply["content"]["status"] == "ok"
        except Exception:  # a kernel that does not answer is replaced, not trusted
            return False
        finally:
            kc.stop_channels()

    def close(self) -> None:
        if self.km is not None:
            from jupyter_core.utils import run_sync

            with contextlib.suppress(Exception):
                run_sync(self.km.shutdown_kernel)(now=True)
        self.km = None


def run_steps(steps: list[Step], *, kernel: str = "python3") -> list[dict]:
    """Run ``steps`` in order and return their results (each also written to its status files).

    One step: papermill starts and stops its own kernel (as ``papermill`` itself does). Several:
    they share one kernel (see the module's docstring). A GPU, where several are visible, is
    claimed at the first step that runs, for all of them (a skipped step waits for none)."""
    import papermill as pm

    shared = _SharedKernel(kernel) if len(steps) > 1 else None
    results = []
    env_before = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpu, claimed = None, False
    with contextlib.ExitStack() as stack:
        if shared:
            stack.callback(shared.close)
        for step in steps:
            output = Path(step.output)
            problem = _upstream_problem(step)
            if problem:
                results.append(_record(step, {"status": "skipped", "notebook": str(output),
                                              "seconds": 0.0, "error": problem}))
                continue
            if not claimed:  # before any kernel starts: the kernels inherit CUDA_VISIBLE_DEVICES
                gpu, claimed = stack.enter_context(claim_gpu()), True
                if gpu is not None:
                    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
                    stack.callback(_restore_env, "CUDA_VISIBLE_DEVICES", env_before)
            output.parent.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            res = {"status": "ok", "notebook": str(output), "error": ""}
            if gpu is not None:
                res["gpu"] = gpu
            try:
                km = shared.get(step.kernel_cwd) if shared else None
                pm.execute_notebook(str(step.notebook), str(output), parameters=step.parameters,
                                    cwd=step.kernel_cwd, kernel_name=kernel, progress_bar=False,
                                    **({"km": km} if km is not None else {}))
            except pm.PapermillExecutionError as e:
                res.update(status="failed", error=f"{e.ename}: {e.evalue}")
            except Exception as e:  # kernel death, missing notebook: still recorded
                res.update(status="failed", error=f"{type(e).__name__}: {e}")
            res["seconds"] = round(time.perf_counter() - t0, 3)
            results.append(_record(step, res))
    return results


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value

"""One GPU per notebook job on a machine with several: :func:`claim_gpu` holds one card by lock file.

The visible devices are ``CUDA_VISIBLE_DEVICES`` (else ``nvidia-smi -L``); each has a lock file
(``melanoma-gpu-<id>.lock`` in the temporary folder). A job takes the first free one (waiting while
all are held) and sets ``CUDA_VISIBLE_DEVICES`` to the id it got, before any kernel or CUDA starts,
so concurrent Snakemake jobs on one machine never share a card. With one GPU or none, nothing is
locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from pathlib import Path


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

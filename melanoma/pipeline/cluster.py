"""Resume on a SLURM cluster: never submit a job again while the one an earlier run submitted runs.

The Snakemake head process submits jobs with ``sbatch`` and follows them; the jobs run on without
it. When the head is killed (a lost login session, a crash) and the same command is run again,
Snakemake sees the outputs of the jobs still running as incomplete and, with
``--rerun-incomplete``, would submit them a second time, two jobs then writing the same files.
So before the workflow's job graph is built, :func:`wait_for_earlier_jobs` asks ``squeue`` for the
jobs of this user that an earlier head of this workflow submitted and that are still queued or
running, and waits until they have ended. A job that finished wrote its outputs and cleared its
"incomplete" mark (the job's own Snakemake does that), so the rerun takes its outputs as they
are; a job that failed or was cancelled leaves them incomplete, and the rerun submits it again.

Which jobs are "of this workflow": the SLURM executor plugin gives every job the working
directory of the head (``sbatch -D``) and the comment ``rule_<rule>`` or
``rule_<rule>_wildcards_<values joined by _>``; a job counts when both match this workflow (the
Snakefile passes the comments its grid's jobs would carry). Another workflow's jobs, or another
grid's in the same folder, are not waited for.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

#: squeue states of a job that has not ended yet (queued, running, or finishing).
ACTIVE_STATES = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED",
                 "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED")


def job_comment(rule: str, wildcards: Iterable[str] = ()) -> str:
    """The comment snakemake-executor-plugin-slurm gives a job of ``rule`` with these wildcard
    values (in the order of the rule's output pattern)."""
    wc = "_".join(str(w) for w in wildcards).replace("/", "_")
    return f"rule_{rule}_wildcards_{wc}" if wc else f"rule_{rule}"


def earlier_jobs(workdir: str | Path, comments: set[str], *, timeout_s: float = 30) -> list[dict] | None:
    """This user's not-yet-ended SLURM jobs in ``workdir`` whose comment is in ``comments``:
    ``[{"id", "state", "comment"}]``; None when there is no SLURM here to ask (no squeue, or no
    controller answering)."""
    if not shutil.which("squeue"):
        return None
    cmd = ["squeue", "--me", "--noheader", "--states", ",".join(ACTIVE_STATES), "--format", "%i|%T|%k|%Z"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.SubprocessError):
        return None
    if r.returncode != 0:
        return None
    workdir = Path(workdir).resolve()
    jobs = []
    for line in r.stdout.splitlines():
        parts = line.strip().split("|", 3)
        if len(parts) != 4:
            continue
        jid, state, comment, wd = parts
        try:
            same_dir = Path(wd).resolve() == workdir
        except OSError:
            same_dir = False
        if same_dir and comment in comments:
            jobs.append({"id": jid, "state": state, "comment": comment})
    return jobs


def wait_for_earlier_jobs(workdir: str | Path, comments: set[str], *, dry_run: bool = False,
                          poll_s: float = 10, log: Callable[[str], None] | None = None,
                          _sleep: Callable[[float], None] = time.sleep) -> list[str]:
    """Wait until no job of an earlier head of this workflow is queued or running (see the module
    docstring); return the ids waited for. ``dry_run``: only say which jobs a real run would wait
    for."""
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    jobs = earlier_jobs(workdir, comments)
    if not jobs:
        return []
    ids = [j["id"] for j in jobs]
    head = (f"{len(jobs)} SLURM job(s) of an earlier run of this workflow are not finished "
            f"({', '.join(j['id'] + ' ' + j['comment'] + ' ' + j['state'] for j in jobs[:10])}"
            f"{', ...' if len(jobs) > 10 else ''})")
    if dry_run:
        log(f"{head}: a real run waits for them before it builds the job graph, so that none is "
            "submitted twice.")
        return ids
    log(f"{head}: waiting for them to end before building the job graph, so that none is submitted "
        f"twice (finished ones are then taken as done). To rerun them instead: scancel {' '.join(ids)}")
    t0 = time.monotonic()
    last = t0
    while True:
        _sleep(poll_s)
        now_jobs = earlier_jobs(workdir, comments)
        if now_jobs is None:
            log("squeue stopped answering; not waiting any longer")
            break
        if not now_jobs:
            break
        if time.monotonic() - last >= 60:
            last = time.monotonic()
            log(f"still waiting for {len(now_jobs)} job(s) ({', '.join(j['id'] for j in now_jobs[:10])}; "
                f"{time.monotonic() - t0:.0f} s)")
    log(f"the earlier run's jobs have ended ({time.monotonic() - t0:.0f} s); building the job graph")
    return ids

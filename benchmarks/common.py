"""Shared helpers of the benchmark scripts: timers, peak memory, machine facts, a synthetic work
folder (cached between scripts through ``--work``) and the writer of ``benchmarks/RESULTS.md``.

Benchmarks print numbers and never assert on timings. Every script records the machine load
(``os.getloadavg``) when it starts and ends, so a reader can judge how noisy its numbers are:
on a shared machine other jobs compete for the same cores.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import fcntl
import json
import os
import platform
import re
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:  # `python benchmarks/x.py` from anywhere finds the package
    sys.path.insert(0, str(REPO))
# `python benchmarks/x.py` puts benchmarks/ first on sys.path, where a file can shadow an installed
# package (a benchmarks/bottleneck.py hides the `bottleneck` that pandas imports): once `common` is
# imported, drop the folder (the scripts import nothing else from it).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
RESULTS = HERE / "RESULTS.md"
REALDATA = REPO.parent / "shared" / "realdata"
SPEC = REPO.parent / "shared" / "spec"

#: Order of the sections in RESULTS.md (a new section is placed by it).
SECTIONS = ("machine", "image_loading", "train_throughput", "scaling", "demo_breakdown", "workflow_jobs",
            "projection")

TITLE = """# Benchmarks

Measured by the scripts in `benchmarks/` (`make bench` = `benchmarks/run_all.py`). Each section is
rewritten by its own script (between its `begin`/`end` markers) and names its machine, date and the
load average at its start and end: the machine is shared, so compare ratios measured within one
section (same process, interleaved), not absolute numbers across sections or dates.
"""


# ------------------------------------------------------------------------------------ timing

class Timer:
    """``with Timer() as t: ...`` → ``t.s`` seconds (perf_counter)."""

    def __enter__(self) -> "Timer":
        self.t0 = time.perf_counter()
        self.s = float("nan")
        return self

    def __exit__(self, *exc) -> None:
        self.s = time.perf_counter() - self.t0


def timed(fn, *a, **kw):
    """(result, seconds) of ``fn(*a, **kw)``."""
    t0 = time.perf_counter()
    r = fn(*a, **kw)
    return r, time.perf_counter() - t0


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident memory (MiB) of this process, or of its largest finished child
    (``resource.getrusage``; ``ru_maxrss`` is in KiB on Linux)."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    kb = resource.getrusage(who).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def loadavg() -> tuple[float, float, float]:
    try:
        return tuple(round(x, 2) for x in os.getloadavg())
    except OSError:
        return (float("nan"),) * 3


def median(xs) -> float:
    xs = sorted(xs)
    n = len(xs)
    if n == 0:
        return float("nan")
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


# ------------------------------------------------------------------------------------ machine

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_facts() -> dict:
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(), "cores": os.cpu_count(), "usable_cores": usable, "mem_gib": mem_gib,
        "gpu": gpu, "python": platform.python_version(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
        "platform": platform.platform(), "load": loadavg(),
    }


def machine_line(facts: dict, load_end=None) -> str:
    dev = f"GPU {facts['gpu']}" if facts.get("gpu") else "no GPU"
    s = (f"Measured {facts['date']} on {facts['cpu']} ({facts['usable_cores']} usable cores, "
         f"{facts['mem_gib']} GiB), {dev}; Python {facts['python']}, torch {facts['torch']} "
         f"({facts['torch_threads']} threads). Load average (1/5/15 min) at start "
         f"{'/'.join(map(str, facts['load']))}")
    if load_end is not None:
        s += f", at end {'/'.join(map(str, load_end))}"
    return s + "."


def load_note(facts: dict, load_end=None) -> str:
    """A warning sentence when the machine was busy (load above the number of cores)."""
    cores = facts.get("usable_cores") or 1
    worst = max([facts["load"][0]] + ([load_end[0]] if load_end else []))
    if worst > 0.5 * cores:
        return (f"**The machine was shared** (1-min load up to {worst:.1f} on {cores} cores): other "
                "jobs competed for the CPU, so absolute numbers are low and noisy; the ratios are "
                "measured interleaved within one process and are the numbers to read.")
    return ""


# ------------------------------------------------------------------------------------ tables

def fmt(v, nd: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if v != v:
            return "–"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{nd}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def md_table(rows: list[dict], cols: list[str] | None = None, nd: int = 1) -> str:
    if not rows:
        return "(no rows)\n"
    cols = cols or list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        out.append("| " + " | ".join(fmt(r.get(c), nd) for c in cols) + " |")
    return "\n".join(out) + "\n"


def print_table(rows: list[dict], cols: list[str] | None = None, nd: int = 1) -> None:
    if not rows:
        print("(no rows)")
        return
    cols = cols or list(rows[0])
    cells = [[fmt(r.get(c), nd) for c in cols] for r in rows]
    w = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w[i]) for i, c in enumerate(cols)))
    for x in cells:
        print("  ".join(v.rjust(w[i]) if i else v.ljust(w[i]) for i, v in enumerate(x)))


def json_comment(data) -> str:
    """Machine-readable copy of a section's numbers (read by ``projection.py``)."""
    return "<!-- json: " + json.dumps(data, default=str).replace("--", "- -") + " -->\n"


def read_section_json(name: str, path: Path = RESULTS):
    """The ``json_comment`` of section ``name`` in RESULTS.md, or None."""
    if not path.is_file():
        return None
    m = re.search(rf"<!-- begin {re.escape(name)} -->(.*?)<!-- end {re.escape(name)} -->",
                  path.read_text(), re.S)
    if not m:
        return None
    j = re.search(r"<!-- json: (.*?) -->", m.group(1), re.S)
    try:
        return json.loads(j.group(1)) if j else None
    except json.JSONDecodeError:
        return None


# ------------------------------------------------------------------------------------ RESULTS.md

def _place(text: str, name: str, block: str) -> str:
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    pat = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pat.search(text):
        return pat.sub(lambda _: block, text, count=1)
    # a new section: after the last existing section that comes before it in SECTIONS
    order = list(SECTIONS) + ([name] if name not in SECTIONS else [])
    pos = len(text)
    before = order[: order.index(name)]
    after = order[order.index(name) + 1:]
    ends = [text.find(f"<!-- end {s} -->") for s in before if f"<!-- end {s} -->" in text]
    starts = [text.find(f"<!-- begin {s} -->") for s in after if f"<!-- begin {s} -->" in text]
    if ends:
        e = max(ends)
        pos = text.find("-->", e) + 3
        return text[:pos] + "\n\n" + block + text[pos:]
    if starts:
        pos = min(starts)
        return text[:pos] + block + "\n\n" + text[pos:]
    return text.rstrip("\n") + "\n\n" + block + "\n"


def write_results(section: str, markdown: str, path: Path | str = RESULTS) -> Path:
    """Replace section ``section`` of RESULTS.md (between ``<!-- begin NAME -->`` and
    ``<!-- end NAME -->``) with ``markdown``, leaving every other section as it is. Atomic (temp
    file + ``os.replace``) and serialised by a lock file, so concurrent scripts never lose a section."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    block = f"<!-- begin {section} -->\n{markdown.rstrip()}\n<!-- end {section} -->"
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            text = path.read_text() if path.is_file() else TITLE
            new = _place(text, section, block)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                os.chmod(tmp, path.stat().st_mode & 0o777 if path.is_file() else 0o644)
                with os.fdopen(fd, "w") as f:
                    f.write(new if new.endswith("\n") else new + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    with contextlib.suppress(OSError):
        path.with_suffix(".lock").unlink()
    return path


# ------------------------------------------------------------------------------------ work folder

MARKER = ".bench_work.json"


def synthetic_work(work: str | Path | None = None, *, scale: float = 0.3, seed: int = 0,
                   log=print) -> Path:
    """A work folder holding SYNTHETIC replicas ingested (manifests + image cache).

    ``work`` given: reused when it already holds this scale and seed (marker file), rebuilt when it
    holds another benchmark's; a non-empty folder without the marker is refused (never clobber a
    user's work folder). ``work`` None: a temporary folder, removed when the process exits.
    """
    from melanoma.data.registry import SHORT_NAMES

    if work is None:
        import atexit

        work = Path(tempfile.mkdtemp(prefix="melanoma-bench-work-"))
        atexit.register(shutil.rmtree, work, True)
    work = Path(work).resolve()
    want = {"scale": float(scale), "seed": int(seed)}
    marker = work / MARKER
    if marker.is_file():
        have = json.loads(marker.read_text())
        if {k: have.get(k) for k in want} == want and all(
                (work / s / "manifest.parquet").is_file() for s in SHORT_NAMES):
            return work
        log(f"[bench] {work} holds another synthetic work folder ({have}); rebuilding")
        for child in work.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    elif work.is_dir() and any(work.iterdir()):
        raise SystemExit(f"{work} is not empty and was not made by the benchmarks (no {MARKER}); "
                         "pass an empty or new folder to --work")
    work.mkdir(parents=True, exist_ok=True)
    facts = make_synthetic(work, scale=scale, seed=seed, log=log)
    marker.write_text(json.dumps({**want, **facts}))
    return work


def make_synthetic(work: Path, *, scale: float, seed: int = 0, log=print) -> dict:
    """write_replicas + ingest_all into ``work``; returns timings and counts."""
    from melanoma.data.ingest import ingest_all
    from melanoma.data.synthetic import write_replicas

    log(f"[bench] SYNTHETIC replicas at scale {scale} → {work}")
    t0 = time.perf_counter()
    summ = write_replicas(work / "synthetic", scale=scale, seed=seed)
    t1 = time.perf_counter()
    reports = ingest_all(work / "synthetic", work, progress=False)
    t2 = time.perf_counter()
    return {"synth_s": round(t1 - t0, 3), "ingest_s": round(t2 - t1, 3),
            "n_images": int(summ["n_images"]),
            "n_ingested": int(sum(r["n_images"] for r in reports.values()))}


def manifests(work: Path):
    """All manifests of ``work`` concatenated (pandas DataFrame)."""
    import pandas as pd
    from melanoma.data.manifest import read_manifest
    from melanoma.data.registry import SHORT_NAMES

    return pd.concat([read_manifest(work, s) for s in SHORT_NAMES
                      if (Path(work) / s / "manifest.parquet").is_file()], ignore_index=True)


# ------------------------------------------------------------------------------------ CLI

def parser(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=None,
                    help="benchmark work folder (SYNTHETIC replicas + ingest), reused between "
                         "scripts; default: a temporary folder removed at exit")
    ap.add_argument("--quick", action="store_true", help="fewer repeats / smaller sizes")
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    ap.add_argument("--results", default=str(RESULTS), help="the Markdown file to update")
    return ap


def section_header(title: str, facts: dict, load_end, command: str) -> str:
    note = load_note(facts, load_end)
    return (f"## {title}\n\n{machine_line(facts, load_end)}\n"
            + (f"\n{note}\n" if note else "")
            + f"\nCommand: `{command}`\n\n")


def command_line() -> str:
    args = [a if re.fullmatch(r"[\w./:=,+-]+", a) else repr(a) for a in sys.argv[1:]]
    return " ".join([".venv/bin/python", os.path.relpath(sys.argv[0], REPO)] + args)

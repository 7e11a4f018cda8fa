"""Run every benchmark and write ``benchmarks/RESULTS.md`` (``make bench``).

Each script runs in its own process (clean memory, one failure does not stop the others) and
rewrites its own section of RESULTS.md; this script writes the ``machine`` section (machine, date,
load average at start and end, which scripts ran, how long, exit codes). The scripts share one
SYNTHETIC work folder (``--work``; default a temporary folder removed at the end).

Default: quick settings (a shared 2-core machine: ~10–20 minutes). ``--full``: more repeats,
224 px throughput, the larger scaling series and the end-to-end demo with/without the feature cache
(``demo_breakdown.py --run``, slow).

    .venv/bin/python benchmarks/run_all.py [--full] [--only image_loading,projection] [--work DIR]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401
from common import (HERE, RESULTS, command_line, loadavg, load_note, machine_facts, machine_line,
                    md_table, write_results)

ORDER = ["image_loading", "train_throughput", "paper_mode", "oversubscription", "scaling", "group_jobs",
         "demo_breakdown", "workflow_jobs", "projection"]


def script_args(name: str, full: bool) -> list[str]:
    if name == "image_loading":
        return [] if full else ["--quick"]
    if name == "train_throughput":
        return ["--sizes", "128,224"] if full else ["--quick"]
    if name in ("paper_mode", "group_jobs"):
        return [] if full else ["--quick"]
    if name == "scaling":
        return ["--scales", "0.25,0.5,1,2"] if full else []
    if name == "demo_breakdown":
        return ["--run"] if full else []
    if name == "workflow_jobs":
        return ["--demo"] if full else []
    return []


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="longer settings + the end-to-end demo run")
    ap.add_argument("--only", default=None, help=f"comma list among {','.join(ORDER)}")
    ap.add_argument("--work", default=None, help="shared SYNTHETIC work folder (kept)")
    ap.add_argument("--results", default=str(RESULTS))
    args = ap.parse_args(argv)
    names = [n for n in ORDER if not args.only or n in args.only.split(",")]
    facts = machine_facts()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="melanoma-bench-work-"))
    ran = []
    try:
        for name in names:
            cmd = [sys.executable, str(HERE / f"{name}.py"), "--results", args.results]
            if name in ("image_loading", "train_throughput", "paper_mode", "scaling", "group_jobs"):
                cmd += ["--work", str(work)]
            cmd += script_args(name, args.full)
            print(f"\n===== {name}: {' '.join(cmd)}", flush=True)
            l0 = loadavg()
            t0 = time.perf_counter()
            rc = subprocess.run(cmd).returncode
            ran.append({"script": f"benchmarks/{name}.py", "args": " ".join(cmd[4:]) or "–",
                        "seconds": time.perf_counter() - t0, "exit": rc,
                        "load at start": "/".join(map(str, l0)), "load at end": "/".join(map(str, loadavg()))})
            print(f"===== {name}: exit {rc}, {ran[-1]['seconds']:.0f} s", flush=True)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    load_end = loadavg()
    note = load_note(facts, load_end)
    md = ("## Machine and run\n\n" + machine_line(facts, load_end) + "\n"
          + (f"\n{note}\n" if note else "")
          + f"\nCommand: `{command_line()}` ({'full' if args.full else 'quick'} settings). "
          "Platform: " + facts["platform"] + ".\n\n")
    md += md_table(ran, ["script", "args", "seconds", "exit", "load at start", "load at end"], nd=0)
    if not args.full:
        md += ("\nNot run by the quick settings: the end-to-end demo with and without the feature "
               "cache (`benchmarks/demo_breakdown.py --run`, or `run_all.py --full`) and 224-px "
               "throughput (`train_throughput.py --sizes 128,224`).\n")
    write_results("machine", md, args.results)
    print(f"\nwrote {args.results}")
    return max((r["exit"] for r in ran), default=0)


if __name__ == "__main__":
    sys.exit(main())

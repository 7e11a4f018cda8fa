"""The grid on SLURM: the profiles' resources (dry runs of the paper and demo grids), and a real
single-node SLURM cluster (workflow/slurm/local-cluster.sh) that runs a reduced demo through
`sbatch` to the book (workflow/slurm/demo.sh, i.e. `make slurm-demo`), with its head process
SIGKILLed while jobs run and the same command run again."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.tiny_grid import REPO, SNAKEMAKE, write_grid

CLUSTER = REPO / "workflow" / "slurm" / "local-cluster.sh"
DEMO = REPO / "workflow" / "slurm" / "demo.sh"
PROFILES = REPO / "workflow" / "profiles"
STATE = Path(os.environ.get("MELANOMA_SLURM_DIR", REPO / ".slurm"))
needs_snakemake = pytest.mark.skipif(not SNAKEMAKE.exists(), reason="snakemake is not installed")


# ----------------------------------------------------------------------------- dry runs: resources

def _dry_run_jobs(grid: str, tmp_path: Path) -> list[dict]:
    """Every job of a dry run with the GPU profile: rule, threads, resources. `--cores` is large
    because a dry run otherwise caps threads at 1 core (a real SLURM run has no such cap)."""
    env = dict(os.environ, WORK=str(tmp_path / "work"), RESULTS=str(tmp_path / "results"),
               MELANOMA_BOOK=str(tmp_path / "book"))
    env.pop("DATA_ROOT", None)
    if "paper" in grid:  # real data only (DATA_ROOT would make the synthetic demo a real-data grid)
        env["DATA_ROOT"] = str(tmp_path / "data")
    r = subprocess.run([str(SNAKEMAKE), "-s", str(REPO / "workflow" / "Snakefile"), "-n", "--cores", "1024",
                        "--directory", str(tmp_path), "--config", f"grid={grid}",
                        "--workflow-profile", str(PROFILES / "slurm")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", r.stdout + "\n" + r.stderr):
        m = re.match(r"(?:local)?rule (\w+):\n", block)
        if not m:
            continue
        res = re.search(r"^\s+resources: (.*)$", block, re.M)
        thr = re.search(r"^\s+threads: (\d+)$", block, re.M)
        jobs.append({"rule": m.group(1), "threads": int(thr.group(1)) if thr else 1,
                     "resources": dict(kv.split("=", 1) for kv in res.group(1).split(", ")) if res else {}})
    return jobs


@needs_snakemake
def test_gpu_profile_gives_every_training_and_features_job_one_gpu(tmp_path):
    """Whatever the rule is called (train, train_<model>__group<k>, features), the profile's entry
    for its kind applies: one GPU by gres and the intended threads, memory and wall time."""
    want = {"train": {"gres": "gpu:1", "mem_mb": "64000", "runtime": "720", "threads": 8},
            "features": {"gres": "gpu:1", "mem_mb": "32000", "runtime": "240", "threads": 8}}
    seen = {}
    for grid in ("params/paper.yaml", "params/demo.yaml"):  # paper: grouped jobs; demo: + solo, features
        jobs = _dry_run_jobs(grid, tmp_path / Path(grid).stem)
        for j in jobs:
            kind = "train" if j["rule"] == "train" or j["rule"].startswith("train_") else j["rule"]
            if kind not in want:
                assert "gres" not in j["resources"], j  # no GPU for ingest, report, book, ...
                continue
            seen.setdefault(grid, []).append(j["rule"])
            w = want[kind]
            assert j["resources"].get("gres") == w["gres"], j
            assert j["resources"].get("gpu") == "0", j  # no second request (the plugin's --gpus)
            assert (j["resources"]["mem_mb"], j["resources"]["runtime"], j["threads"]) == \
                (w["mem_mb"], w["runtime"], w["threads"]), j
        if grid == "params/paper.yaml":
            print(f"paper grid dry run: {len(jobs)} jobs "
                  f"({sum(j['rule'].startswith('train_') for j in jobs)} training jobs)")
            assert len(jobs) <= 300
            assert sum(j["rule"].startswith("train_") for j in jobs) == 216
            assert not {"calibrate", "reject"} & {j["rule"] for j in jobs}  # inside the training jobs
    demo = seen["params/demo.yaml"]
    assert "train" in demo and "features" in demo and any(r.startswith("train_") for r in demo)


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_cpu_profile_differs_from_the_gpu_profile_only_where_it_must():
    gpu = _flat(yaml.safe_load((PROFILES / "slurm" / "config.yaml").read_text()))
    cpu = _flat(yaml.safe_load((PROFILES / "slurm-cpu" / "config.yaml").read_text()))
    diff = {k for k in gpu.keys() | cpu.keys() if gpu.get(k) != cpu.get(k)}
    must = {
        "set-resources.train.gres", "set-resources.features.gres",      # no GPUs
        "slurm-status-command",                                         # no slurmdbd: squeue
        "default-resources.mem_mb", "set-resources.train.mem_mb",       # a small node
        "set-resources.features.mem_mb",
        "set-threads.train", "set-threads.features", "set-threads.ingest",
    }
    assert diff <= must, sorted(diff - must)
    assert not any(k.endswith("gres") for k in cpu) and cpu["slurm-status-command"] == "squeue"
    assert cpu["executor"] == gpu["executor"] == "slurm"


# ----------------------------------------------------------------------------- the local cluster

def _cluster_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return ("not root: the local SLURM test cluster (workflow/slurm/local-cluster.sh) installs "
                "slurm-wlm/munge and starts their daemons as root")
    if not all(shutil.which(b) for b in ("slurmctld", "slurmd", "munged", "sinfo")) and not shutil.which("apt-get"):
        return "slurm-wlm/munge are not installed and apt-get is not there to install them (Debian only)"
    return None


def _recorded() -> list[tuple[str, int]]:
    f = STATE / "pids"
    return [(n, int(p)) for n, p in (l.split() for l in f.read_text().splitlines() if l.strip())] if f.is_file() else []


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended (PID 1 here may not reap)


@pytest.fixture(scope="module")
def cluster():
    """The local cluster: reused when it is up already, else started here and stopped afterwards
    (and then every daemon it recorded must be gone)."""
    reason = _cluster_skip_reason()
    if reason:
        pytest.skip(reason)
    started = subprocess.run([str(CLUSTER), "status"], capture_output=True).returncode != 0
    if started:
        t0 = time.perf_counter()
        r = subprocess.run([str(CLUSTER), "up"], capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
        print(f"\nlocal SLURM cluster up in {time.perf_counter() - t0:.0f} s")
    pids = _recorded()
    assert {n for n, _ in pids} == {"munged", "slurmctld", "slurmd"} and all(_alive(p) for _, p in pids), pids
    yield {"SLURM_CONF": str(STATE / "etc" / "slurm.conf")}
    if started:
        r = subprocess.run([str(CLUSTER), "down"], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        assert not [(n, p) for n, p in pids if _alive(p)], "daemons still running after down"
        assert not (STATE / "pids").exists()


def _slurm_jobs(conf: str, workdir: Path) -> list[dict]:
    """Every job the controller still knows (MinJobAge: a day) that ran in ``workdir``."""
    r = subprocess.run(["squeue", "--states=all", "--noheader", "--format", "%i|%T|%k|%Z"],
                       env=dict(os.environ, SLURM_CONF=conf), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    jobs = []
    for line in r.stdout.splitlines():
        jid, state, comment, wd = line.strip().split("|", 3)
        if Path(wd).resolve() == workdir.resolve():
            jobs.append({"id": jid, "state": state, "comment": comment})
    return jobs


def _submitted(log: str) -> dict[str, str]:
    """SLURM job id → the Snakemake log of the job, from an executor's output."""
    return dict((m.group(1), m.group(2)) for m in
                re.finditer(r"has been submitted with SLURM jobid (\d+) \(log: ([^)]+)\)", log))


@pytest.mark.slow
@needs_snakemake
def test_demo_through_slurm_survives_a_killed_head(cluster, tiny_local_run, tmp_path):
    """`make slurm-demo` on the reduced grid: its head is SIGKILLed while a features job runs on the
    cluster (ingest done, more features queued, training not yet submitted); the same command
    again waits for the earlier jobs instead of submitting them twice, keeps the finished ones,
    submits the rest, and builds the book, with the numbers of a local run."""
    root = tmp_path / "slurm"
    grid = write_grid(root, "tiny")
    wd = root / "snakemake"  # Snakemake's working directory: .snakemake/ (locks, logs, SLURM logs)
    wd.mkdir()
    env = dict(os.environ, **cluster, GRID=str(grid), SNAKEMAKE_DIR=str(wd), WORK=str(root / "work"),
               RESULTS=str(root / "results"), MELANOMA_BOOK=str(root / "book"), PY=sys.executable,
               PYTHONUNBUFFERED="1")
    first_log = root / "first.log"
    t0 = time.perf_counter()
    with open(first_log, "w") as out:
        head = subprocess.Popen(["bash", str(DEMO)], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 1500
        while True:
            jobs = _slurm_jobs(cluster["SLURM_CONF"], wd)
            if any(j["comment"].startswith("rule_features") and j["state"] == "RUNNING" for j in jobs):
                break
            assert head.poll() is None, "the run ended before a features job ran:\n" + first_log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no features job ran on the cluster in time"
            time.sleep(0.5)
    finally:
        os.killpg(head.pid, signal.SIGKILL)  # the head (and demo.sh); the SLURM jobs run on
        head.wait()
    t_kill = time.perf_counter() - t0
    at_kill = _slurm_jobs(cluster["SLURM_CONF"], wd)
    unfinished = {j["id"] for j in at_kill if j["state"] in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING")}
    assert unfinished, at_kill
    assert not any(j["comment"].startswith("rule_train") for j in at_kill)  # not submitted yet

    r = subprocess.run(["bash", str(DEMO)], cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    second_log = r.stdout + r.stderr
    (root / "second.log").write_text(second_log)
    assert r.returncode == 0, second_log[-5000:]
    print(f"\nSLURM demo: head killed after {t_kill:.0f} s, rerun {time.perf_counter() - t0 - t_kill:.0f} s")

    # the rerun waited for the earlier head's unfinished jobs ...
    m = re.search(r"\d+ SLURM job\(s\) of an earlier run of this workflow are not finished \(([^)]*)\): waiting",
                  second_log)
    assert m, second_log[-3000:]
    waited = set(re.findall(r"(\d+) rule_", m.group(1)))
    assert waited and waited <= unfinished, (waited, unfinished)  # (others may end before it looks)
    # ... and submitted only what the first had not: every job exactly once, all completed
    first, second = _submitted(first_log.read_text()), _submitted(second_log)
    assert first and second and not set(first) & set(second)
    # the rerun submits the training jobs, and any features job whose ingest ended after the kill
    # (the first head may not have reached it); never one the first submitted (checked above)
    assert all("rule_train" in p or "rule_features" in p for p in second.values()), second
    assert any("rule_train" in p for p in second.values()), second
    assert f"jobs this run submitted to SLURM: {len(second)} " in second_log
    history = _slurm_jobs(cluster["SLURM_CONF"], wd)
    assert {j["id"] for j in history} == set(first) | set(second)
    comments = [j["comment"] for j in history]
    assert len(comments) == len(set(comments)), sorted(comments)  # nothing submitted twice
    assert all(j["state"] == "COMPLETED" for j in history), history
    kinds = {c.split("_wildcards_")[0] for c in comments}
    assert kinds == {"rule_ingest", "rule_features", "rule_train", "rule_train_efficientnet_lite0__group1"}
    assert sum(c.startswith("rule_ingest") for c in comments) == 11
    # each job's SLURM log is where the executor said; the training ran its notebooks in the job
    for jid, log in {**first, **second}.items():
        assert Path(log).is_file() and Path(log).name == f"{jid}.log", log
    group_log = Path(next(p for p in second.values() if "group1" in p)).read_text()
    for nb in ("02_train.ipynb", "03_calibrate.ipynb", "04_reject.ipynb"):
        assert re.search(rf"{nb} → \S+: ok", group_log), nb

    res = root / "results"
    runs = pd.read_parquet(res / "runs.parquet")
    assert len(runs) == 3 and (runs["status_reject"] == "ok").all()
    for rid in runs["run_id"]:
        for f in ("03_calibrate.ipynb", "04_reject.ipynb", "status-calibrate.json", "status-reject.json"):
            assert (res / "runs" / rid / f).is_file(), (rid, f)
    assert "SYNTHETIC DATA" in (root / "book" / "_build" / "html" / "results.html").read_text()
    pd.testing.assert_frame_equal(pd.read_parquet(res / "summary.parquet"),
                                  pd.read_parquet(tiny_local_run / "results" / "summary.parquet"))

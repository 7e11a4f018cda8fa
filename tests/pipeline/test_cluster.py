"""Resume on a cluster without a cluster: melanoma.pipeline.cluster against a stand-in `squeue`, and
workflow/slurm/local-cluster.sh's refusal to signal a process it did not start."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from melanoma.pipeline.cluster import earlier_jobs, job_comment, wait_for_earlier_jobs

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake_squeue(tmp_path, monkeypatch):
    """A `squeue` on PATH that prints, per call, the next file of answers (the last one repeats)
    and records its arguments."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "squeue").write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {tmp_path}/calls\n'
        f'n=$(wc -l < {tmp_path}/calls)\n'
        f'f={tmp_path}/answer.$n; [ -f "$f" ] || f=$(ls {tmp_path}/answer.* | sort -t. -k2 -n | tail -n1)\n'
        'cat "$f"\n')
    (bindir / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")

    def answers(*texts):
        for i, t in enumerate(texts, 1):
            (tmp_path / f"answer.{i}").write_text(t)
    return answers


def test_job_comment_is_the_executors():
    assert job_comment("train_resnet50__group1") == "rule_train_resnet50__group1"
    assert job_comment("train", ["resnet50__ABC"]) == "rule_train_wildcards_resnet50__ABC"
    assert job_comment("features", ["efficientnet_lite0", "imagenet", 96, "isic2017"]) == \
        "rule_features_wildcards_efficientnet_lite0_imagenet_96_isic2017"


def test_only_this_workflows_unfinished_jobs_count(fake_squeue, tmp_path):
    wd, other = tmp_path / "wd", tmp_path / "other"
    wd.mkdir(), other.mkdir()
    fake_squeue(f"11|RUNNING|rule_train_wildcards_r1|{wd}\n"
                f"12|PENDING|rule_ingest_wildcards_isic2017|{wd}\n"
                f"13|RUNNING|rule_train_wildcards_r1|{other}\n"        # another folder
                f"14|RUNNING|rule_train_wildcards_elsewhere|{wd}\n")   # not this grid's job
    jobs = earlier_jobs(wd, {"rule_train_wildcards_r1", "rule_ingest_wildcards_isic2017"})
    assert [(j["id"], j["state"]) for j in jobs] == [("11", "RUNNING"), ("12", "PENDING")]
    args = (tmp_path / "calls").read_text()
    assert "--me" in args and "RUNNING" in args and "PENDING" in args and "COMPLETED" not in args


def test_waits_until_the_earlier_jobs_ended(fake_squeue, tmp_path):
    wd = tmp_path / "wd"
    wd.mkdir()
    line = f"7|RUNNING|rule_train_x|{wd}\n"
    fake_squeue(line, line, "")  # running, still running, gone
    logs, sleeps = [], []
    ids = wait_for_earlier_jobs(wd, {"rule_train_x"}, poll_s=3, log=logs.append, _sleep=sleeps.append)
    assert ids == ["7"] and sleeps == [3, 3]
    assert "waiting for them to end" in logs[0] and "scancel 7" in logs[0] and "have ended" in logs[-1]


def test_dry_run_and_no_jobs_do_not_wait(fake_squeue, tmp_path):
    wd = tmp_path / "wd"
    wd.mkdir()
    fake_squeue(f"7|RUNNING|rule_train_x|{wd}\n")
    logs, sleeps = [], []
    assert wait_for_earlier_jobs(wd, {"rule_train_x"}, dry_run=True, log=logs.append, _sleep=sleeps.append) == ["7"]
    assert not sleeps and "a real run waits" in logs[0]
    assert wait_for_earlier_jobs(wd, {"rule_other"}, log=logs.append, _sleep=sleeps.append) == []
    assert not sleeps


def test_no_slurm_here_means_no_wait(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no squeue
    assert earlier_jobs(tmp_path, {"rule_x"}) is None
    assert wait_for_earlier_jobs(tmp_path, {"rule_x"}, _sleep=lambda s: pytest.fail("waited")) == []


def test_local_cluster_down_never_signals_a_process_it_did_not_start(tmp_path):
    """A recorded PID that is not a daemon `up` started for this state folder (a recycled PID, or
    a daemon of another cluster) is left alone."""
    state = tmp_path / "state"
    state.mkdir()
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)  # slurmd munged"])
    try:
        (state / "pids").write_text(f"slurmd {bystander.pid}\nmunged {bystander.pid}\n")
        env = dict(os.environ, MELANOMA_SLURM_DIR=str(state), MELANOMA_SLURM_PORT="16817")
        r = subprocess.run([str(REPO / "workflow" / "slurm" / "local-cluster.sh"), "down"], env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        time.sleep(0.5)
        assert bystander.poll() is None, "down signalled a process it did not start"
        assert "no longer running" in r.stderr and not (state / "pids").exists()
        r = subprocess.run([str(REPO / "workflow" / "slurm" / "local-cluster.sh"), "status"], env=env,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and "not running" in r.stderr
    finally:
        bystander.kill()
        bystander.wait()

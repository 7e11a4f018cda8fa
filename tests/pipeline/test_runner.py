"""melanoma.pipeline.runner: one writer per grid (a lock released when its owner dies), the
Snakemake command line, run statuses, and what `melanoma retry` forces to run again."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from melanoma.pipeline import runner
from melanoma.pipeline.runner import GridBusyError, grid_lock, run_locked, run_status, snakemake_cmd
from melanoma.train.params import ParamError
from tests.badinput import lock_holder

REPO = Path(__file__).resolve().parents[2]


def _grid(tmp: Path) -> Path:
    p = tmp / "g.yaml"
    p.write_text(f"name: g\ndata: synthetic\nwork: {tmp}/work\nresults: {tmp}/results\n"
                 "models: [meshnet]\ncombinations: [B, C]\neval_sets: [ISIC2017]\n")
    return p


def test_the_lock_names_its_owner_and_refuses_a_second_writer(tmp_path):
    g = _grid(tmp_path)
    lock = tmp_path / "results" / ".melanoma.lock"
    with grid_lock(g) as grid:
        assert grid.name == "g" and grid.results == tmp_path / "results"
        owner = json.loads(lock.read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        assert owner["command"] == " ".join(sys.argv)
        with pytest.raises(GridBusyError, match=rf"grid 'g' \({tmp_path / 'results'}\) is being run by pid "
                                                rf"{os.getpid()} on {socket.gethostname()} since .*one run per grid at a time"):
            with grid_lock(g):
                pytest.fail("a second writer got the lock")
        assert json.loads(lock.read_text()) == owner          # the refused one left the owner's record alone
    assert lock.read_text() == ""                             # released: no owner
    with grid_lock(g):
        assert json.loads(lock.read_text())["pid"] == os.getpid()


def test_an_unreadable_owner_record_still_refuses(tmp_path):
    g = _grid(tmp_path)
    with grid_lock(g):
        (tmp_path / "results" / ".melanoma.lock").write_text("{garbage")
        with pytest.raises(GridBusyError, match=r"being run by pid \? on \? since \?"):
            with grid_lock(g):
                pass


def test_the_lock_is_released_when_its_owner_dies(tmp_path):
    g = _grid(tmp_path)
    p = lock_holder(g, tmp_path)
    try:
        with pytest.raises(GridBusyError, match=f"being run by pid {p.pid} "):
            with grid_lock(g):
                pass
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        with grid_lock(g):                                    # no cleanup needed: the kernel dropped it
            assert json.loads((tmp_path / "results" / ".melanoma.lock").read_text())["pid"] == os.getpid()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_run_status_of_each_step(tmp_path):
    (tmp_path / "status-train.json").write_text('{"status": "ok"}')
    (tmp_path / "status-calibrate.json").write_text('{"status": "failed", "error": "boom"}')
    (tmp_path / "status-reject.json").write_text("{torn")
    assert run_status(tmp_path) == {"train": "ok", "calibrate": "failed", "reject": "unreadable"}
    (tmp_path / "status-reject.json").write_text("{}")
    assert run_status(tmp_path)["reject"] == "?"
    assert run_status(tmp_path / "nowhere") == {"train": "not run", "calibrate": "not run", "reject": "not run"}


def test_the_snakemake_command(tmp_path, monkeypatch):
    g = _grid(tmp_path)
    monkeypatch.chdir(tmp_path)
    cmd = snakemake_cmd("g.yaml", 3, ["--dry-run"], targets=["book"])
    assert cmd == [str(Path(sys.executable).parent / "snakemake"), "book", "-s", str(REPO / "workflow" / "Snakefile"),
                   "--config", f"grid={g}", "--cores", "3", "--keep-going", "--rerun-incomplete",
                   "--printshellcmds", "--dry-run"]
    assert snakemake_cmd(g)[snakemake_cmd(g).index("--cores") + 1] == str(os.cpu_count() or 1)
    with pytest.raises(ParamError, match="grid nope.yaml not found in the current folder"):
        snakemake_cmd("nope.yaml")


def test_run_locked_runs_the_command_under_the_lock(tmp_path):
    g = _grid(tmp_path)
    lock = tmp_path / "results" / ".melanoma.lock"
    probe = ("import fcntl, sys\nf = open(sys.argv[1], 'a')\n"
             "try:\n    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept OSError:\n    sys.exit(7)\nsys.exit(0)\n")
    assert run_locked(g, [sys.executable, "-c", probe, str(lock)], tmp_path) == 7   # held while it ran
    assert run_locked(g, [sys.executable, "-c", "import sys; sys.exit(3)"], tmp_path) == 3
    with pytest.raises(ValueError, match="no command to run"):
        run_locked(g, [], tmp_path)


@pytest.fixture
def retry_grid(tmp_path, monkeypatch):
    """A grid with meshnet__B failed in calibrate and meshnet__C done; Snakemake replaced by a
    recorder that also checks the grid's lock is held while it runs."""
    g = _grid(tmp_path)
    runs = tmp_path / "results" / "runs"
    for rid, st in (("meshnet__B", ("ok", "failed", "skipped")), ("meshnet__C", ("ok", "ok", "ok"))):
        (runs / rid).mkdir(parents=True)
        for step, s in zip(runner.STEPS, st):
            (runs / rid / f"status-{step}.json").write_text(json.dumps({"status": s}))
        (runs / rid / "run.json").write_text("{}")
    calls = []

    def fake(grid_file, cores, extra=(), targets=()):
        with pytest.raises(GridBusyError):
            with grid_lock(grid_file):
                pass
        calls.append((cores, list(extra), list(targets)))
        return fake.rc
    fake.rc = 0
    monkeypatch.setattr(runner, "_snakemake", fake)
    return g, runs, calls, fake


def test_retry_forces_the_failed_runs_training_job_only(retry_grid, capsys):
    g, runs, calls, _ = retry_grid
    done = runner.retry(g, ["meshnet__B", "meshnet__C", "meshnet__B"], cores=2)
    assert done == {"meshnet__B": {"train": "ok", "calibrate": "failed", "reject": "skipped"}}
    assert calls == [(2, ["--forcerun", str(runs / "meshnet__B" / "status-train.json")], [])]
    out = capsys.readouterr().out
    assert "meshnet__C: did not fail (train ok, calibrate ok, reject ok); nothing to retry" in out
    assert "meshnet__B: was train ok, calibrate failed, reject skipped; retrying" in out
    assert (runs / "meshnet__B" / "run.json").is_file()      # a finished training is kept, not retrained


def test_retry_force_retrains_and_nothing_to_do_runs_nothing(retry_grid):
    g, runs, calls, _ = retry_grid
    assert runner.retry(g, ["meshnet__C"]) == {} and calls == []
    runner.retry(g, ["meshnet__C"], force=True)
    assert calls[0][1] == ["--forcerun", str(runs / "meshnet__C" / "status-train.json")]
    assert not (runs / "meshnet__C" / "run.json").exists()


def test_retry_refuses_unknown_runs_and_reports_a_failed_snakemake(retry_grid):
    g, _, calls, fake = retry_grid
    with pytest.raises(ParamError, match=r"no run 'meshnet_B' in this grid \(did you mean 'meshnet__B'\?\)"):
        runner.retry(g, ["meshnet__B", "meshnet_B"])
    assert calls == []                                        # nothing ran for the valid one either
    fake.rc = 1
    with pytest.raises(RuntimeError, match="snakemake exited with 1; see its log above"):
        runner.retry(g, ["meshnet__B"])


def test_run_grid_holds_the_lock(retry_grid):
    g, _, calls, _ = retry_grid
    assert runner.run_grid(g, cores=1) == 0 and calls == [(1, [], [])]
    with grid_lock(g):
        with pytest.raises(GridBusyError):
            runner.run_grid(g, cores=1)
    assert len(calls) == 1

"""melanoma.cli: every subcommand has --help; a bad argument or a failure is one clear line on stderr
and a non-zero exit, never a traceback; flags reach the package functions they wrap."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest

from melanoma.cli import COMMANDS, _scalar, build_parser, main

REPO = Path(__file__).resolve().parents[1]


def test_every_subcommand_has_help():  # moved from test_packaging.py
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert {"synth", "ingest", "leakage", "train", "grid", "report", "book"} <= set(sub.choices)
    for name in sub.choices:
        r = subprocess.run([sys.executable, "-m", "melanoma.cli", name, "--help"], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0 and "usage: melanoma" in r.stdout, name


def test_version_flag():  # moved from test_packaging.py
    from melanoma import __version__

    r = subprocess.run([sys.executable, "-m", "melanoma.cli", "--version"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and r.stdout.count("\n") == 1, r.stdout + r.stderr
    assert r.stdout.startswith(f"melanoma {__version__} (Python ") and "torch " in r.stdout
    assert f"sources: {REPO}" in r.stdout


def test_parameter_values_keep_their_text():  # moved from test_nbrun.py
    assert _scalar("0:1:0.02") == "0:1:0.02"  # YAML 1.1 would read 60.02
    assert _scalar("10") == 10 and _scalar("0.8") == 0.8 and _scalar("true") is True
    assert _scalar("ISIC2017") == "ISIC2017" and _scalar("/a/b") == "/a/b"


def test_more_parameter_values():
    assert _scalar("None") is None and _scalar("null") is None and _scalar(" FALSE ") is False
    assert _scalar("1e-3") == 0.001 and _scalar("-2") == -2 and isinstance(_scalar("-2"), int)
    assert _scalar("1,2") == "1,2" and _scalar("") == ""


def test_the_parser_holds_every_command_with_its_help_line():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert list(sub.choices) == list(COMMANDS)
    helps = {a.dest: a.help for a in sub._choices_actions}
    assert all(helps[name] == c.help and c.help for name, c in COMMANDS.items())


def _run(argv, capsys):
    """main(argv) in-process: (exit code, stdout, stderr); argparse's exits included."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (1 if e.code else 0)
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("argv,message", [
    ([], "the following arguments are required: COMMAND"),
    (["nosuch"], "argument COMMAND: invalid choice: 'nosuch'"),
    (["train"], "the following arguments are required: --work, --out"),
    (["train", "--work", "w", "--out", "o", "--reg-grid", "0.1,x"],
     "argument --reg-grid: expected numbers separated by commas, got '0.1,x'"),
    (["train", "--work", "w", "--out", "o", "--freeze", "all"], "argument --freeze: invalid choice: 'all'"),
    (["train", "--work", "w", "--out", "o", "--epochs", "many"], "argument --epochs: invalid int value: 'many'"),
    (["reject", "run", "--thresholds", "0.2:0.1"],
     "argument --thresholds: thresholds must look like START:STOP:STEP (e.g. 0:0.2:0.01), got '0.2:0.1'"),
    (["reject", "run", "--grid", "0:1:0.1"],
     "the candidate thresholds are now --thresholds 0:1:0.1 (START:STOP:STEP); --grid names a grid file"),
    (["leakage", "--work", "w", "--train", "A", "--eval", "B", "--policy", "all"],
     "argument --policy: invalid choice: 'all'"),
    (["grid", "shrink", "params/demo.yaml"], "argument action: invalid choice: 'shrink'"),
])
def test_bad_arguments_are_one_clear_error(argv, message, capsys):
    rc, out, err = _run(argv, capsys)
    assert rc == 2 and message in err and "usage: melanoma" in err, err
    assert "Traceback" not in err + out


@pytest.mark.parametrize("argv,message", [
    (["leakage", "--work", "{tmp}", "--train", "Q", "--eval", "B"],
     "melanoma leakage: error: unknown dataset 'Q'; valid:"),
    (["train", "--work", "{tmp}/nowhere", "--out", "{tmp}/o", "--model", "meshnet"],
     "melanoma train: error: TrainParams.work: work folder"),
    (["calibrate", "{tmp}/not_a_run"], "melanoma calibrate: error: run directory {tmp}/not_a_run does not exist"),
    (["export", "{tmp}", "--out", "{tmp}/web"], "melanoma export: error: {tmp}/params.yaml not found: {tmp} is not a "
                                                "finished run"),
    (["serve", "--dir", "{tmp}"], "no built book in {tmp}: build it first"),
])
def test_failures_are_one_line_and_exit_2(argv, message, tmp_path, capsys):
    rc, out, err = _run([a.format(tmp=tmp_path) for a in argv], capsys)
    assert rc == 2 and message.format(tmp=tmp_path) in err, err
    assert "Traceback" not in err + out and err.count("\n") == 1


@pytest.mark.parametrize("argv,message", [
    (["summary", "--work", "{tmp}"], "no ingest reports under {tmp}; run `melanoma ingest` first"),
    (["ingest", "--root", "{tmp}", "--out", "{tmp}/w"], "melanoma ingest: give a DATASET (letter A–J or name) or --all"),
    (["screenshot", "{tmp}", "--out", "{tmp}/s.png"], "melanoma screenshot: give --image or --work"),
])
def test_missing_choices_exit_with_a_message(argv, message, tmp_path, capsys):
    rc, out, err = _run([a.format(tmp=tmp_path) for a in argv], capsys)
    assert rc == 1 and message.format(tmp=tmp_path) in err and "Traceback" not in err + out


def test_a_full_disk_is_named_with_what_to_do(tmp_path, capsys, monkeypatch):
    import melanoma.data.fingerprint as fp

    def full(root, out):
        raise OSError(errno.ENOSPC, "No space left on device", str(out))
    monkeypatch.setattr(fp, "update_stamp", full)
    rc, out, err = _run(["fingerprint", "--root", tmp_path, "--out", tmp_path / "release.json"], capsys)
    assert rc == 2 and "melanoma fingerprint: error: [Errno 28] No space left on device" in err
    assert "the disk is full: free space (or use another --out/work folder) and rerun" in err


def test_as_a_process_a_failure_is_exit_2_without_a_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "melanoma.cli", "leakage", "--work", str(tmp_path), "--train", "B",
                        "--eval", "B"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("melanoma leakage: error: no manifest for isic2017 at "), r.stderr


def test_fingerprint_writes_the_stamp(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "a.jpg").write_bytes(b"12345")
    rc, out, _ = _run(["fingerprint", "--root", tmp_path / "r", "--out", tmp_path / "w" / "release.json"], capsys)
    from melanoma.data.fingerprint import fingerprint

    fp = fingerprint(tmp_path / "r")
    assert rc == 0 and f"1 files, 5 bytes, fingerprint {fp['sha256'][:16]}" in out
    assert (tmp_path / "w" / "release.json").is_file()


def test_train_flags_reach_the_parameters(tmp_path, capsys, monkeypatch):
    import melanoma.train.recipe as recipe

    seen = []
    monkeypatch.setattr(recipe, "train_run", lambda p, progress: seen.append((p, progress)))
    (tmp_path / "w").mkdir()
    (tmp_path / "p.yaml").write_text("model: resnet18\nepochs: 7\nlr: 0.01\nimage_size: 64\n")
    rc, out, _ = _run(["train", "--work", tmp_path / "w", "--out", tmp_path / "o", "--model", "meshnet",
                       "--train", "A-C", "--eval", "B,ISIC2018", "--freeze", "backbone", "--no-fast",
                       "--reg-grid", "0.1,1", "--params", tmp_path / "p.yaml", "--quiet"], capsys)
    assert rc == 0 and f"run written to {tmp_path / 'o'}" in out
    (p, progress), = seen
    assert progress is False
    assert (p.model, p.train, p.eval_sets, p.freeze, p.fast) == ("meshnet", "A-C", ["isic2017", "isic2018"],
                                                                 "backbone", False)
    assert p.reg_grid == [0.1, 1.0] and p.solver is None
    assert (p.epochs, p.lr, p.image_size) == (7, 0.01, 64)      # from the file where no flag was given
    assert p.weights == "imagenet" and p.seed == 0              # the defaults otherwise


def test_locked_workdir_defaults_to_the_folder_the_parser_is_built_in(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = build_parser().parse_args(["locked", "--grid", "g.yaml", "--", "snakemake", "-n"])
    assert a.workdir == tmp_path and a.command_ == ["--", "snakemake", "-n"]

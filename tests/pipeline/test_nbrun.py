"""A notebook step records ok / failed / skipped instead of stopping the grid."""

from __future__ import annotations

import json

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from melanoma.pipeline.nbrun import run_notebook

pytestmark = pytest.mark.slow


def _nb(path, body: str):
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    p = new_code_cell("x = 1")
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, new_code_cell(body)]
    nbformat.write(nb, path)
    return path


def test_ok_failed_and_skipped(tmp_path):
    good = _nb(tmp_path / "good.ipynb", "assert x == 5")
    bad = _nb(tmp_path / "bad.ipynb", "raise ValueError('boom ' + str(x))")
    r = run_notebook(good, tmp_path / "out" / "good.ipynb", tmp_path / "good.json", parameters={"x": 5})
    assert r["status"] == "ok" and json.loads((tmp_path / "good.json").read_text())["status"] == "ok"
    r = run_notebook(bad, tmp_path / "out" / "bad.ipynb", tmp_path / "bad.json", parameters={"x": 7})
    assert r["status"] == "failed" and "ValueError: boom 7" in r["error"]
    executed = nbformat.read(tmp_path / "out" / "bad.ipynb", as_version=4)  # kept, error included
    assert any(o.get("ename") == "ValueError" for c in executed.cells for o in c.get("outputs", []))
    r = run_notebook(good, tmp_path / "out" / "after.ipynb", tmp_path / "after.json",
                     after=[tmp_path / "bad.json"])
    assert r["status"] == "skipped" and "failed" in r["error"]
    assert not (tmp_path / "out" / "after.ipynb").exists()


def test_cli_nbrun_parses_parameter_types(tmp_path):
    from melanoma.cli import main

    nb = _nb(tmp_path / "t.ipynb", "assert x == 0.8 and isinstance(x, float)")
    assert main(["nbrun", str(nb), str(tmp_path / "o.ipynb"), "--status", str(tmp_path / "s.json"),
                 "-p", "x", "0.8"]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["status"] == "ok"


def test_steps_of_one_call_share_a_kernel_with_a_clean_namespace(tmp_path):
    """`nbrun A … --then B … --then …`: one kernel for the steps (imports paid once), a fresh
    namespace for each, a failed step recorded without stopping the next, a dead kernel replaced."""
    from melanoma.cli import main

    probe = _nb(tmp_path / "probe.ipynb",
                "import json, os\n"
                "json.dump({'pid': os.getpid(), 'leaked': 'leak' in globals(), 'x': x}, open(out, 'w'))\n"
                "leak = x")
    nb = nbformat.read(probe, as_version=4)
    nb.cells[0].source = "x = 1\nout = ''"
    nbformat.write(nb, probe)
    bad = _nb(tmp_path / "bad.ipynb", "leak = 1\nraise ValueError('boom')")
    die = _nb(tmp_path / "die.ipynb", "import os\nos._exit(3)")

    def step(nb, name, x=None, after=None):
        a = [str(nb), str(tmp_path / "out" / f"{name}.ipynb"), "--status", str(tmp_path / f"{name}.json")]
        if x is not None:
            a += ["-p", "x", str(x), "-p", "out", str(tmp_path / f"{name}.probe.json")]
        if after:
            a += ["--after", str(tmp_path / f"{after}.json")]
        return a

    argv = ["nbrun"] + step(probe, "p1", 1)
    for s in (step(bad, "bad"), step(probe, "p2", 2, after="p1"), step(die, "die"), step(probe, "p3", 3),
              step(probe, "p4", 4, after="bad")):
        argv += ["--then"] + s
    assert main(argv) == 0
    st = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in ("p1", "bad", "p2", "die", "p3", "p4")}
    assert [st[n]["status"] for n in ("p1", "bad", "p2", "die", "p3", "p4")] == \
        ["ok", "failed", "ok", "failed", "ok", "skipped"]
    assert "ValueError: boom" in st["bad"]["error"] and "bad.json is failed" in st["p4"]["error"]
    pr = {n: json.loads((tmp_path / f"{n}.probe.json").read_text()) for n in ("p1", "p2", "p3")}
    assert [pr[n]["x"] for n in ("p1", "p2", "p3")] == [1, 2, 3]          # each step its own parameters
    assert not any(p["leaked"] for p in pr.values())                      # nothing left by earlier steps
    assert pr["p1"]["pid"] == pr["p2"]["pid"]                             # one kernel for the steps...
    assert pr["p3"]["pid"] != pr["p1"]["pid"]                             # ...a new one after it died
    executed = nbformat.read(tmp_path / "out" / "p2.ipynb", as_version=4)
    assert [c.execution_count for c in executed.cells if c.cell_type == "code"][0] == 1
    assert not (tmp_path / "out" / "p4.ipynb").exists()

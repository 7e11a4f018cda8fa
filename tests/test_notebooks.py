"""The parameterised notebooks run end to end under papermill."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from tests.test_evaluate import make_run

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _parameters_cell(nb):
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    return tagged[0]


@pytest.mark.parametrize("name", ["03_calibrate.ipynb", "04_reject.ipynb"])
def test_notebook_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0] is _parameters_cell(nb)
    assert all(not c.outputs and c.execution_count is None for c in code)
    params = [ln for ln in code[0].source.splitlines() if ln.strip() and not ln.startswith("# ---")]
    assert all("=" in ln and "#" in ln.split("=", 1)[1] for ln in params), "every parameter: default + comment"
    assert 'run_dir = "../work/runs/example"' in code[0].source


@pytest.mark.slow
def test_calibrate_and_reject_notebooks(tmp_path):
    papermill = pytest.importorskip("papermill")
    run_dir = make_run(tmp_path / "run")
    for name, out_json, extra in (
        ("03_calibrate.ipynb", "metrics.json", {}),
        ("04_reject.ipynb", "rejection.json", {"min_coverage": 0.5, "temperature": True}),
    ):
        papermill.execute_notebook(
            str(NOTEBOOKS / name), str(tmp_path / name),
            parameters=dict(run_dir=str(run_dir), bootstrap=20, **extra),
            cwd=str(NOTEBOOKS), kernel_name="python3", progress_bar=False,
        )
        data = json.loads((run_dir / out_json).read_text())
        assert data["run_id"] == "handmade" and data["B"] == 20
        assert {"before", "after"} <= data["eval_sets"]["isic2017"].keys()
        assert (run_dir / name.replace(".ipynb", ".params.yaml")).is_file()
        executed = nbformat.read(tmp_path / name, as_version=4)
        images = sum("image/png" in o.get("data", {}) for c in executed.cells if c.cell_type == "code"
                     for o in c.outputs)
        assert images >= (1 if name.startswith("03") else 5)
        text = json.dumps([c.outputs for c in executed.cells if c.cell_type == "code"])
        assert "SYNTHETIC" in text

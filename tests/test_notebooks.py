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


@pytest.mark.slow
def test_ingest_notebook_under_papermill(synth_data, tmp_path):
    papermill = pytest.importorskip("papermill")
    out = tmp_path / "01.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOKS / "01_ingest.ipynb"), str(out),
        parameters=dict(dataset="ISIC2017", data_root=str(synth_data / "isic2017"), work=str(tmp_path / "w")),
        cwd=str(NOTEBOOKS), kernel_name="python3", progress_bar=False)
    import pandas as pd

    m = pd.read_parquet(tmp_path / "w" / "isic2017" / "manifest.parquet")
    truth = pd.read_csv(synth_data / "isic2017" / "SYNTHETIC_truth.csv")
    assert len(m) == len(truth)
    assert (tmp_path / "w" / "isic2017" / "01_ingest.params.yaml").is_file()
    executed = nbformat.read(out, as_version=4)
    images = sum("image/png" in o.get("data", {}) for c in executed.cells if c.cell_type == "code"
                 for o in c.outputs)
    assert images >= 1  # the sample grid
    assert "SYNTHETIC" in json.dumps([c.outputs for c in executed.cells if c.cell_type == "code"])


@pytest.mark.slow
def test_train_notebook_under_papermill(synth_work, tmp_path):
    papermill = pytest.importorskip("papermill")
    out = tmp_path / "02.ipynb"
    run = tmp_path / "run"
    papermill.execute_notebook(
        str(NOTEBOOKS / "02_train.ipynb"), str(out),
        parameters=dict(work=str(synth_work), model="resnet18", weights="none", train="B", epochs=2,
                        image_size=64, eval_sets="ISIC2017", out=str(run)),
        cwd=str(NOTEBOOKS), kernel_name="python3", progress_bar=False)
    assert (run / "run.json").is_file() and (run / "predictions.parquet").is_file()
    executed = nbformat.read(out, as_version=4)
    images = sum("image/png" in o.get("data", {}) for c in executed.cells if c.cell_type == "code"
                 for o in c.outputs)
    assert images >= 1  # the learning curves


@pytest.mark.slow
def test_train_notebook_runs_a_group_job_with_one_status_per_run(synth_work, tmp_path):
    """What the workflow's grouped job runs: `melanoma nbrun 02_train … --status S1 S2 -p params_files F1,F2`."""
    pytest.importorskip("papermill")
    from melanoma.cli import main
    from melanoma.io import read_json, write_yaml
    from melanoma.params import TrainParams

    files, statuses = [], []
    for combo in ("B", "E"):
        p = TrainParams.from_dict(dict(work=str(synth_work), out=str(tmp_path / f"resnet18__{combo}"),
                                       model="resnet18", weights="none", freeze="conv", train=combo,
                                       eval_sets=["isic2017"], image_size=32, epochs=1, loader="resident"))
        write_yaml(tmp_path / f"{combo}.yaml", p.to_dict())
        files.append(str(tmp_path / f"{combo}.yaml"))
        statuses.append(str(tmp_path / f"status-{combo}.json"))
    out = tmp_path / "group.ipynb"
    assert main(["nbrun", str(NOTEBOOKS / "02_train.ipynb"), str(out), "--status", *statuses,
                 "-p", "params_files", ",".join(files)]) == 0
    assert [read_json(s)["status"] for s in statuses] == ["ok", "ok"], read_json(statuses[0])
    for combo in ("B", "E"):
        run = read_json(tmp_path / f"resnet18__{combo}" / "run.json")
        assert run["group"]["size"] == 2 and run["loader"] == "resident"
    assert "resnet18__E" in json.dumps([c.outputs for c in nbformat.read(out, as_version=4).cells
                                        if c.cell_type == "code"])

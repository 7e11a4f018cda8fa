"""The parameterised notebooks run end to end under papermill."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest

from tests.runs import make_run

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


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
    assert 'run_dir: str = ""' in code[0].source  # empty: the default run (melanoma.pipeline.defaults)


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
    from melanoma.train.params import TrainParams

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


# --- notebooks as their users run them: any order, defaults, any folder ---------------------------------

ORDER = ["01_ingest.ipynb", "02_train.ipynb", "03_calibrate.ipynb", "04_reject.ipynb"]
VENV_BIN = Path(sys.executable).parent


def _code(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


@pytest.mark.parametrize("name", ORDER)
def test_every_parameter_is_typed_and_described_for_papermill(name):
    """`papermill --help-notebook` shows every parameter of the cell with its type and its comment
    (papermill drops a line it cannot parse, e.g. one with a second `=`, and says "Unknown type"
    for an unannotated one)."""
    import ast

    cell = _parameters_cell(nbformat.read(NOTEBOOKS / name, as_version=4))
    tree = ast.parse(cell.source)
    assert all(isinstance(n, ast.AnnAssign) for n in tree.body), "every parameter: name: type = default"
    declared = {n.target.id: ast.unparse(n.annotation) for n in tree.body}
    r = subprocess.run([str(VENV_BIN / "papermill"), "--help-notebook", str(NOTEBOOKS / name)],
                       capture_output=True, text=True, timeout=120, cwd=tempfile.gettempdir())
    assert r.returncode == 0, r.stderr
    shown = dict(re.findall(r"^  (\w+): (\w+) \(default", r.stdout, flags=re.M))
    assert shown == declared, r.stdout
    assert "Unknown type" not in r.stdout and "Unable to parse" not in r.stdout + r.stderr
    import papermill

    described = papermill.inspect_notebook(str(NOTEBOOKS / name))
    assert all(p["help"].strip() for p in described.values()), [k for k, p in described.items() if not p["help"]]


@pytest.mark.parametrize("name", ORDER)
def test_notebooks_stay_thin(name):
    """No figure drawn inline (plots come from melanoma.report.plots) and no block of 10 lines or more."""
    code = _code(nbformat.read(NOTEBOOKS / name, as_version=4))
    for cell in code[1:]:
        lines = [ln for ln in cell.source.splitlines() if ln.strip() and not ln.strip().startswith("#")]
        assert len(lines) < 10, f"{name}: a cell of {len(lines)} lines:\n{cell.source}"
        assert not re.search(r"matplotlib\.pyplot|\bplt\.|\.subplots\(|\bax\w*\.(plot|set|bar)", cell.source), \
            f"{name}: a figure drawn inline:\n{cell.source}"


def _outputs(nb_path):
    nb = nbformat.read(nb_path, as_version=4)
    return [o for c in _code(nb) for o in c.outputs]


def _check_home(home: Path, executed: dict[str, Path]) -> None:
    work = home / "work"
    for d in ("isic2017", "isic2018", "derm7pt", "kaggle"):  # every manifest the defaults need
        assert (work / d / "manifest.parquet").is_file(), d
    run = work / "runs" / "example"
    for f in ("run.json", "metrics.json", "rejection.json", "03_calibrate.params.yaml", "04_reject.params.yaml"):
        assert (run / f).is_file(), f
    from melanoma.io import read_json, read_yaml
    from melanoma.pipeline.defaults import train_params

    (recipe,) = train_params(work)  # the one recipe, as the notebooks make it
    assert read_yaml(run / "params.yaml") == recipe.to_dict()
    made = read_json(run / "run.json")
    assert read_json(run / "metrics.json")["run_id"] == made["run_id"] == read_json(run / "rejection.json")["run_id"]
    outs = {n: _outputs(p) for n, p in executed.items()}
    text = json.dumps(outs)
    assert "IProgress not found" not in text and "TqdmWarning" not in text
    assert "SYNTHETIC" in text
    # long steps (ingest, features) show progress: tqdm bars rendered as Jupyter widgets
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
               for n in ("01_ingest.ipynb", "02_train.ipynb") for o in outs[n])
    assert sum("image/png" in o.get("data", {}) for o in outs["04_reject.ipynb"]) >= 5


@pytest.mark.slow
def test_notebooks_run_in_order_with_defaults_on_an_empty_home(tmp_path):
    """01 → 04 with their defaults, as `jupyter execute` runs them (kernel in the notebook's
    folder), on an empty MELANOMA_HOME; then again under papermill from an unrelated folder. Every
    output lands in HOME/work — not in `../work` beside the kernel's folder — and 02–04 share one run."""
    env = dict(os.environ, MELANOMA_HOME=str(tmp_path / "home"))
    copies = tmp_path / "nbs" / "notebooks"
    copies.mkdir(parents=True)
    executed = {}
    for name in ORDER:
        shutil.copy(NOTEBOOKS / name, copies / name)
        t0 = time.perf_counter()
        r = subprocess.run([str(VENV_BIN / "jupyter"), "execute", "--inplace", name], cwd=copies, env=env,
                           capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"{name}: {r.stderr[-3000:]}"
        print(f"jupyter execute {name}: {time.perf_counter() - t0:.0f} s")
        executed[name] = copies / name
        if name == "02_train.ipynb":
            run_json = (tmp_path / "home" / "work" / "runs" / "example" / "run.json").read_bytes()
    assert not (tmp_path / "nbs" / "work").exists(), "../work of the kernel's folder was written"
    _check_home(tmp_path / "home", executed)
    assert (tmp_path / "home" / "work" / "runs" / "example" / "run.json").read_bytes() == run_json, \
        "03/04 retrained the default run: one recipe for 02-04"

    # papermill from another folder (its kernel runs in the caller's folder), on another empty home
    env["MELANOMA_HOME"] = str(tmp_path / "home2")
    cwd = tmp_path / "elsewhere" / "deeper"
    cwd.mkdir(parents=True)
    executed = {}
    for name in ORDER:
        t0 = time.perf_counter()
        r = subprocess.run([str(VENV_BIN / "papermill"), str(NOTEBOOKS / name), str(tmp_path / f"pm-{name}")],
                           cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"{name}: {r.stderr[-3000:]}"
        print(f"papermill {name}: {time.perf_counter() - t0:.0f} s")
        executed[name] = tmp_path / f"pm-{name}"
    assert not (tmp_path / "elsewhere" / "work").exists() and not any(cwd.iterdir())
    _check_home(tmp_path / "home2", executed)


def test_notebook_02_defaults_are_the_default_recipe():
    """One recipe: what 02 trains with its defaults is the run 03 and 04 use (melanoma.pipeline.defaults.RECIPE)."""
    import ast

    from melanoma.pipeline.defaults import RECIPE

    cell = _parameters_cell(nbformat.read(NOTEBOOKS / "02_train.ipynb", as_version=4))
    values = {n.target.id: ast.literal_eval(n.value) for n in ast.parse(cell.source).body}
    assert {k: values[k] for k in RECIPE} == RECIPE
    assert values["out"] == values["work"] == values["params_file"] == values["params_files"] == ""

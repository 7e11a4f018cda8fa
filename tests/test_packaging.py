"""Project hygiene: the two dependency lists agree; safe loading only (every subcommand's --help: test_cli.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def _norm(req: str) -> str:
    return re.sub(r"\s+", "", req).lower()


def test_environment_yml_lists_the_pyproject_dependencies():
    import tomllib

    py = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    want = {_norm(r) for r in py["dependencies"]}
    for extra in py["optional-dependencies"].values():
        want |= {_norm(r) for r in extra}
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert {_norm(r) for r in pip} == want


def test_no_unsafe_loading_in_the_package():
    """yaml.safe_load only; torch.load always with weights_only=True; no pickle."""
    for f in (REPO / "melanoma").rglob("*.py"):
        text = f.read_text()
        assert not re.search(r"yaml\.load\(", text), f
        assert not re.search(r"\bimport pickle\b|pickle\.load", text), f
        for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
            assert "weights_only=True" in m.group(1), f"{f}: {m.group(0)}"


@pytest.mark.parametrize("nb", sorted((REPO / "notebooks").rglob("*.ipynb")))  # the book pages too
def test_notebooks_committed_without_outputs_and_with_parameters(nb):
    import json

    d = json.loads(nb.read_text())
    code = [c for c in d["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), nb.name
    assert "parameters" in code[0].get("metadata", {}).get("tags", []), nb.name


# --- what a user expects of an installed project (issue 14) -----------------------------------------

VENV_BIN = Path(sys.executable).parent


def test_license_file_matches_pyproject():
    import tomllib

    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"] == "MIT"
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Copyright (c) 2026 the melanoma authors" in text


def test_lock_file_pins_every_dependency_within_its_range():
    """requirements.lock (``make lock``) pins each dependency of pyproject.toml (dev extras too) to
    one version inside its range, so `pip install -r requirements.lock` is an exact environment."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    py = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = [ln.strip() for ln in (REPO / "requirements.lock").read_text().splitlines()]
    assert "pip install -r requirements.lock" in "\n".join(lines[:5])
    pins = {}
    for ln in lines:
        if ln and not ln.startswith("#"):
            name, sep, version = ln.partition("==")
            assert sep and version, f"not an exact pin: {ln!r}"
            pins[canonicalize_name(name)] = version
    assert "melanoma" not in pins
    for spec in py["dependencies"] + [r for extra in py["optional-dependencies"].values() for r in extra]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in requirements.lock: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"requirements.lock pins {req.name}=={pins[name]} outside {req.specifier}: run `make lock`"


def test_jupyter_lab_uses_the_project_kernel(tmp_path):
    """`.venv/bin/jupyter lab --version` works, and under `make lab` the notebooks' kernel
    (`python3`) is .venv's Python even when the user has a `python3` kernel of another Python."""
    import json

    r = subprocess.run([str(VENV_BIN / "jupyter"), "lab", "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip()[0].isdigit(), r.stdout + r.stderr
    names = {json.loads(nb.read_text())["metadata"]["kernelspec"]["name"]
             for nb in (REPO / "notebooks").glob("*.ipynb")}
    assert names == {"python3"}
    dry = subprocess.run(["make", "-n", "lab", "STAMP=/dev/null"], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    line = next(ln for ln in dry.stdout.splitlines() if "jupyter lab" in ln)
    jupyter_path = re.search(r'JUPYTER_PATH="([^"]+)"', line).group(1)
    assert "notebooks/01_ingest.ipynb" in line
    user = tmp_path / "user-data"  # a user-level python3 kernel of another Python
    (user / "kernels" / "python3").mkdir(parents=True)
    (user / "kernels" / "python3" / "kernel.json").write_text(json.dumps(
        {"argv": ["/usr/bin/python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
         "display_name": "Python 3 (system)", "language": "python"}))
    env = dict(os.environ, JUPYTER_DATA_DIR=str(user), JUPYTER_PATH=jupyter_path)
    r = subprocess.run([str(VENV_BIN / "jupyter"), "kernelspec", "list", "--json"], capture_output=True, text=True,
                       timeout=120, env=env)
    spec = json.loads(r.stdout)["kernelspecs"]["python3"]["spec"]
    assert Path(spec["argv"][0]).resolve() == Path(sys.executable).resolve(), spec


def test_relative_grid_paths_resolve_against_the_current_folder(tmp_path):
    """`melanoma grid expand params/demo.yaml` reads the current folder's file when there is one,
    the project's otherwise; relative results go under MELANOMA_HOME."""
    g = yaml.safe_load((REPO / "params" / "demo.yaml").read_text())
    g.update(name="mine", results="results/mine", models=["resnet18"], model_overrides={}, leakage_keep=[], group=1,
             web={}, figures={}, combinations=["B"])
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "demo.yaml").write_text(yaml.safe_dump(g))
    env = dict(os.environ, MELANOMA_HOME=str(tmp_path / "home"))
    run = lambda cwd: subprocess.run([sys.executable, "-m", "melanoma.cli", "grid", "expand", "params/demo.yaml"],
                                     cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    r = run(tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["resnet18__B"]
    assert (tmp_path / "home" / "results" / "mine" / "params" / "resnet18__B.yaml").is_file()
    (tmp_path / "elsewhere").mkdir()
    r = run(tmp_path / "elsewhere")  # no params/ here: the project's demo grid
    assert r.returncode == 0 and len(r.stdout.split()) > 1 and "resnet18__B" in r.stdout.split()
    assert (tmp_path / "home" / "results" / "demo" / "params").is_dir()
    r = subprocess.run([sys.executable, "-m", "melanoma.cli", "grid", "expand", "nope.yaml"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "nope.yaml not found in the current folder" in r.stderr


@pytest.mark.slow
def test_non_editable_install_carries_the_workflow_and_notebooks(tmp_path):
    """`pip install .` (not editable): the workflow, notebooks and params come as package data;
    from a folder outside the repository the grid expands, Snakemake plans the demo, and outputs
    go to the current folder (the home of an installed package)."""
    import shutil

    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "work", "results", "build", "_build", "_generated", "node_modules", "*.egg-info",
        "__pycache__", ".pytest_cache", ".snakemake", ".slurm"))
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--target", str(target), str(src)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    project = target / "melanoma" / "_project"
    from melanoma.home import PROJECT_DIRS

    assert sorted(p.name for p in project.iterdir()) == sorted(PROJECT_DIRS)
    assert (project / "workflow" / "Snakefile").is_file() and (project / "params" / "demo.yaml").is_file()
    assert sorted(p.name for p in (project / "notebooks").glob("*.ipynb")) == sorted(
        p.name for p in (REPO / "notebooks").glob("*.ipynb"))
    cwd = tmp_path / "user"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("MELANOMA_HOME", "MELANOMA_BOOK")}
    env["PYTHONPATH"] = str(target)
    py = lambda *a, **kw: subprocess.run([sys.executable, *a], cwd=cwd, env=env, capture_output=True, text=True,
                                         timeout=300, **kw)
    r = py("-m", "melanoma.cli", "--version")
    assert r.returncode == 0 and f"sources: {project} (packaged)" in r.stdout, r.stdout + r.stderr
    r = py("-m", "melanoma.cli", "grid", "expand", "params/demo.yaml")
    assert r.returncode == 0 and "efficientnet_lite0__B" in r.stdout.split(), r.stderr
    assert (cwd / "results" / "demo" / "params" / "efficientnet_lite0__B.yaml").is_file()
    r = py("-c", "from melanoma.report.book import BOOK; print(BOOK)")  # built in the home, not in the package
    assert r.returncode == 0 and r.stdout.strip() == str(cwd / "book"), r.stdout + r.stderr
    r = subprocess.run([str(VENV_BIN / "snakemake"), "-n", "-s", str(project / "workflow" / "Snakefile"),
                        "--config", f"grid={project / 'params' / 'demo.yaml'}", "--cores", "2"],
                       cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "rule book" in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]

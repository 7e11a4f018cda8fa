"""Project hygiene: the two dependency lists agree; every subcommand has --help; safe loading only."""

from __future__ import annotations

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


def test_every_subcommand_has_help():
    from melanoma.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert {"synth", "ingest", "leakage", "train", "grid", "report", "book"} <= set(sub.choices)
    for name in sub.choices:
        r = subprocess.run([sys.executable, "-m", "melanoma.cli", name, "--help"], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0 and "usage: melanoma" in r.stdout, name


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

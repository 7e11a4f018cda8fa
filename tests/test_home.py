"""melanoma.home: the sources (a checkout, or the copy a non-editable install carries), the home
for outputs, and how a path named by a user is found. (The checkout's own case, MELANOMA_HOME and
the basic look-up are in test_defaults.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from melanoma import home

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """The package as a non-editable install sees itself: site-packages/melanoma, no checkout."""
    pkg = tmp_path / "site-packages" / "melanoma"
    pkg.mkdir(parents=True)
    monkeypatch.setattr(home, "PACKAGE", pkg)
    monkeypatch.delenv(home.ENV, raising=False)
    return pkg


def test_a_checkout_needs_both_the_workflow_and_pyproject(installed):
    root = installed.parent
    assert home.repository() is None
    (root / "workflow").mkdir()
    (root / "workflow" / "Snakefile").write_text("")
    assert home.repository() is None                  # a Snakefile alone is not a checkout
    (root / "pyproject.toml").write_text("")
    assert home.repository() == root


def test_an_install_uses_its_packaged_sources_and_the_current_folder(installed, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"has neither its source checkout nor the packaged workflow "
                                                r"\(.*_project/workflow/Snakefile\): reinstall it"):
        home.sources()
    (installed / "_project" / "workflow").mkdir(parents=True)
    (installed / "_project" / "workflow" / "Snakefile").write_text("")
    assert home.sources() == installed / "_project"
    cwd = tmp_path / "user"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert home.home() == cwd and home.resolve("work") == cwd / "work"
    assert home.resolve(None, "results") == cwd / "results"


def test_melanoma_home_is_expanded_and_blank_means_unset(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(home.ENV, "~/mh")
    assert home.home() == tmp_path / "mh"
    monkeypatch.setenv(home.ENV, "   ")
    assert home.home() == REPO
    monkeypatch.setenv(home.ENV, "relative/h")
    monkeypatch.chdir(tmp_path)
    assert home.home() == tmp_path / "relative" / "h"  # made absolute, from where it was read


def test_find_file_tries_the_home_before_the_sources(monkeypatch, tmp_path):
    h = tmp_path / "h"
    (h / "params").mkdir(parents=True)
    (h / "params" / "demo.yaml").write_text("name: mine\n")
    monkeypatch.setenv(home.ENV, str(h))
    monkeypatch.chdir(tmp_path)
    assert home.find_file("params/demo.yaml") == h / "params" / "demo.yaml"
    assert home.find_file("params/paper.yaml") == REPO / "params" / "paper.yaml"   # not in the home: the sources
    with pytest.raises(FileNotFoundError, match=re.escape(f"grid nope.yaml not found in the current folder "
                                                          f"({tmp_path}) nor in {h} nor in {REPO}")):
        home.find_file("nope.yaml", "grid")


def test_find_file_returns_absolute_paths(monkeypatch, tmp_path):
    monkeypatch.delenv(home.ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "g.yaml").write_text("")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert home.find_file("../g.yaml") == tmp_path / "g.yaml"        # from here, resolved
    assert home.find_file("~/g.yaml") == tmp_path / "g.yaml"         # ~ expanded
    assert home.find_file(tmp_path / "g.yaml") == tmp_path / "g.yaml"
    with pytest.raises(FileNotFoundError) as e:
        home.find_file("absent.yaml")
    assert str(e.value).count(str(REPO)) == 1                        # home and sources are one place here

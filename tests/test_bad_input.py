"""Runs the bad-input corpus (``tests/badinput.py``) and checks the README's table is its rendering."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from .badinput import CASES, REFERENCES, Ctx, markdown, readme_section

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_case(c, tmp_path, tmp_path_factory, monkeypatch):
    c.check(tmp_path, Ctx(tmp_path_factory, monkeypatch))


def test_corpus_size_and_unique_ids():
    assert len(CASES) >= 100
    assert len({c.id for c in CASES}) == len(CASES)


def test_referenced_tests_exist():
    for *_, ref in REFERENCES:
        path, _, name = ref.partition("::")
        mod = importlib.import_module(".".join(Path(path).with_suffix("").parts))
        if name:
            assert hasattr(mod, name), ref


def test_readme_table_is_the_corpus():
    """Regenerate with `python -m tests.badinput --write` after adding a case."""
    assert readme_section((REPO / "README.md").read_text()) == markdown()

"""melanoma.report.pages: the book's notebook pages show tables built from the grid's summary,
runs and run folders (a hand-made grid: tests/gridruns.py)."""

from __future__ import annotations

import pandas as pd
import pytest

from melanoma.pipeline.grid import REPO, load_grid
from melanoma.report import pages
from melanoma.report.summary import aggregate, fmt, fmt_ci
from melanoma.train.params import ParamError

from tests.gridruns import write_grid


@pytest.fixture(scope="module")
def grid_file(tmp_path_factory):
    g = write_grid(tmp_path_factory.mktemp("pages_grid"))
    aggregate(load_grid(g))
    return g


@pytest.fixture
def shown(monkeypatch):
    """What the page displays: Markdown strings and (figure, caption) pairs, in order."""
    out = []
    monkeypatch.setattr(pages, "show", lambda md: out.append(md))
    monkeypatch.setattr(pages, "show_figure", lambda fig, caption="": out.append((fig, caption)))
    return out


@pytest.fixture(scope="module")
def page(grid_file):
    return pages.Pages(grid_file)


def _summary(grid_file):
    return pd.read_parquet(load_grid(grid_file).results / "summary.parquet")


def _top(s, es):
    """The unflagged run with the best precision before rejection on ``es`` (Table 1's ranking)."""
    b = s[(s["eval_set"] == es) & (s["phase"] == "before") & ~s["flagged"].astype(bool)]
    return b.sort_values(["precision", "auc"], ascending=False).iloc[0]


def _line(md, *cells):
    """The table line holding every one of ``cells``."""
    lines = [ln for ln in md.splitlines() if ln.startswith("|") and all(c in ln for c in cells)]
    assert len(lines) == 1, (cells, md)
    return lines[0]


def test_table1_ranks_unflagged_runs_by_precision_from_the_summary(page, grid_file, shown):
    s = _summary(grid_file)
    page.table1()
    (md,) = shown
    for es, name in (("isic2017", "ISIC2017"), ("isic2018", "ISIC2018")):
        top = _top(s, es)
        after = s[(s["run_id"] == top["run_id"]) & (s["eval_set"] == es) & (s["phase"] == "after")].iloc[0]
        line = _line(md, f"| {name} |", f"`{top['run_id']}`")
        assert f"| {top['model']} | [{top['train']}] |" in line
        assert f"{fmt(top['precision'])} / {fmt(after['precision'])}" in line
        assert f"{fmt(top['auc'])} / {fmt(after['auc'])}" in line
    # PH2's rejection was skipped (one-class validation split): listed apart with its reason, not ranked
    head, flagged = md.split("**Flagged results, not ranked**")
    assert "| PH2 |" not in head and "| PH2 |" in flagged
    assert _line(flagged, "| PH2 |", "`meshnet__B`").endswith(
        "| the validation split has one class only (20 non-melanoma); need both classes | `meshnet__B` |")
    assert md.rstrip().endswith("_All numbers: SYNTHETIC data._")


def test_the_featured_run_is_the_top_run_of_the_first_evaluation_set(page, grid_file):
    assert page.run == _top(_summary(grid_file), "isic2017")["run_id"]
    assert set(page.blocks) == {"ISIC2017", "ISIC2018"}     # its rejection results, PH2's skipped


def test_table3_holds_the_calibration_of_the_chosen_runs(page, grid_file, shown):
    s = _summary(grid_file)
    page.table3()
    (md,) = shown
    top = _top(s, "isic2018")
    a = s[(s["run_id"] == top["run_id"]) & (s["eval_set"] == "isic2018") & (s["phase"] == "after")].iloc[0]
    line = _line(md, "| ISIC2018 |", f"`{top['run_id']}`")
    assert fmt_ci(top["brier"], top["brier_low"], top["brier_high"], pct=False) in line
    assert fmt_ci(a["ece"], a["ece_low"], a["ece_high"], pct=False) in line


def test_table2_is_the_leaderboard(page, grid_file, shown):
    s = _summary(grid_file)
    page.table2()
    (md,) = shown
    lb = s[s["phase"] == "leaderboard"].sort_values("auc", ascending=False)
    rows = [ln for ln in md.splitlines() if ln.startswith("| meshnet")]
    assert [r.split("|")[4].strip() for r in rows] == [f"`{rid}`" for rid in lb["run_id"]]
    assert [r.split("|")[3].strip() for r in rows] == [fmt(v) for v in lb["auc"]]
    assert "Score source: held-out labels of the SYNTHETIC ISIC 2020 replica." in md
    assert "Each AUC is measured on 30 held-out images" in md


def test_runs_table_lists_every_run_and_the_failed_one_with_its_error(page, shown):
    page.runs_table()
    (md,) = shown
    for rid, st in (("meshnet__B", "ok"), ("meshnet__AB", "ok"), ("resnet18__B", "failed"), ("resnet18__AB", "not run")):
        assert f"| `{rid}` |" in _line(md, f"`{rid}`", f"| {st} |")
    assert "- `resnet18__B` failed at train: RuntimeError: out of memory" in md
    assert "## Rejection per run" in md and md.count("`meshnet__B`") >= 3


def test_banner_says_synthetic(page, shown):
    page.banner()
    assert "**SYNTHETIC DATA.**" in shown[0] and "Grid: `g.yaml`" in shown[0]


def test_fig5_is_a_figure_then_the_referral_table(page, shown):
    import matplotlib.pyplot as plt

    page.fig5()
    (fig, caption), table = shown
    assert isinstance(fig, plt.Figure) and caption and isinstance(table, str) and table.startswith("|")
    plt.close(fig)


def test_a_grid_file_relative_to_the_current_folder(grid_file, monkeypatch, shown):
    monkeypatch.chdir(grid_file.parent)
    p = pages.Pages("g.yaml")
    assert p.grid.path == grid_file.relative_to(grid_file.parent) and len(p.runs) == 4
    with pytest.raises(ParamError, match=f"{REPO}/params/nope.yaml not found"):
        pages.Pages("params/nope.yaml")     # not here: looked up in the project, and not there either

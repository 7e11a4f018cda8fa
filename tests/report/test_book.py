"""Report/book helpers (the end-to-end build is in test_workflow.py)."""

import math
from pathlib import Path

import pytest

from melanoma.report.book import paper_tables
from melanoma.report.summary import fmt, fmt_ci


def test_formatting():
    assert fmt(0.8384) == "83.8%"
    assert fmt(float("nan")) == "–"
    assert fmt(0.08321, pct=False) == "0.0832"
    assert fmt_ci(0.5, 0.4, 0.6) == "50.0% [40.0%, 60.0%]"
    assert fmt_ci(0.5, math.nan, 0.6) == "50.0%"


def test_paper_reference_tables_render():
    t = paper_tables()
    assert "Reported in the paper, on real data" in t["table1"]
    assert "83.8% / 85.3%" in t["table1"]          # DenseNet201 on ISIC 2017, precision
    assert "90.7%" in t["table2"]                    # EfficientNetB1, private leaderboard
    assert "0.0832" in t["table3"] and "0.0478" in t["table3"]
    assert t["table1"].count("\n| ") == 13          # header + 12 rows


def test_aurc_table_without_bootstrap_columns():
    """A grid whose runs had no bootstrap (or no rejection at all) still renders the AURC table."""
    import pandas as pd

    from melanoma.report.book import aurc_table

    base = {"phase": ["before", "after"], "eval_set": ["isic2017"] * 2, "model": ["m"] * 2,
            "train": ["B"] * 2, "run_id": ["m__B"] * 2}
    assert aurc_table(pd.DataFrame(base)) == "_No AURC results._\n"
    t = aurc_table(pd.DataFrame({**base, "aurc": [0.1234, 0.1]}))
    assert "| ISIC2017 | m | [B] | 0.1234 | – | `m__B` |" in t
    t = aurc_table(pd.DataFrame({**base, "aurc": [0.1234, 0.1], "aurc_low": [0.1, 0.1],
                                 "aurc_high": [0.2, 0.2], "eaurc": [0.05, 0.05]}))
    assert "0.1" in t and "0.2" in t


def _flagged_grid(tmp_path):
    """A hand-made run whose ISIC 2017 test split is far less confident than its validation split
    (so the threshold from validation keeps little of test: flagged), and a healthy ISIC 2018."""
    from types import SimpleNamespace

    import numpy as np
    import pandas as pd

    from melanoma.evaluate.calibrate import calibrate_run
    from melanoma.evaluate.reject import reject_run
    from melanoma.io import write_json

    from tests.conftest import logit_scores, prediction_rows

    rng = np.random.default_rng(3)
    parts = []
    for es, (sv, st) in {"isic2017": (6, 3), "isic2018": (6, 6)}.items():
        for split, strength in (("val", sv), ("test", st)):
            y = (rng.random(100) < 0.3).astype(int)
            parts.append(prediction_rows(es, split, y, logit_scores(rng, y, strength=strength, noise=1)))
    results = tmp_path / "results"
    rd = results / "runs" / "m__B"
    rd.mkdir(parents=True)
    pd.concat(parts, ignore_index=True).to_parquet(rd / "predictions.parquet", index=False)
    write_json(rd / "run.json", {"run_id": "m__B", "model": "m", "train": "B", "synthetic": True,
                                 "eval_sets": ["isic2017", "isic2018"]})
    calibrate_run(rd, B=20)
    reject_run(rd, B=20)
    grid = SimpleNamespace(name="t", eval_sets=["isic2017", "isic2018"], results=results, is_synthetic=True,
                           figures={"rejection": "m__B"})
    return grid, rd


def test_flagged_rejection_in_summary_tables_and_captions(tmp_path, monkeypatch):
    import pandas as pd

    from melanoma.report import book
    from melanoma.report import summary

    grid, rd = _flagged_grid(tmp_path)
    s = pd.DataFrame(summary.run_rows(grid, "m__B", rd))
    f17 = s[(s["eval_set"] == "isic2017") & s["phase"].isin(["before", "after"])]
    assert f17["flagged"].all() and "low-coverage" in f17["flags"].iloc[0]
    assert "test coverage" in f17[f17["phase"] == "after"]["rejection_note"].iloc[0]
    assert not s[s["eval_set"] == "isic2018"]["flagged"].any()
    # the three rejection methods side by side, one row each
    m = s[s["phase"].str.startswith("method_")]
    assert sorted(m["rejection_method"].unique()) == ["conformal", "entropy", "sgr"]
    assert (m.groupby("eval_set").size() == 3).all()
    a17 = f17[f17["phase"] == "after"].iloc[0]
    assert a17["test_coverage"] < 0.7 <= a17["val_coverage"]
    # referral counts in the summary add up, before and after
    for _, r in s[s["phase"].isin(["before", "after"])].iterrows():
        assert r["melanoma_caught"] + r["melanoma_missed"] + r["melanoma_referred"] == r["n_melanoma"]
    # Table 1 ranks the healthy result only; the flagged one is listed apart with its reason
    t1, chosen, flagged = book.table1(grid, s)
    assert chosen == [("isic2018", "m__B")]
    assert list(flagged["Test set"]) == ["ISIC2017"] and "test coverage" in flagged["Flag"].iloc[0]
    cov = t1["Coverage val / test"].iloc[0]
    a18 = s[(s["eval_set"] == "isic2018") & (s["phase"] == "after")].iloc[0]
    assert cov == f"{summary.fmt(a18['val_coverage'], digits=0)} / {summary.fmt(a18['test_coverage'], digits=0)}"
    # the captions say it, from the numbers
    monkeypatch.setattr(book, "GEN", tmp_path / "gen")
    book.GEN.mkdir()
    book.figures(grid, s, chosen)
    fig5 = (book.GEN / "fig5_misdiagnoses.md").read_text()
    assert "**Flagged**" in fig5 and "ISIC2017: test coverage" in fig5
    assert f"test coverage {a17['test_coverage']:.2f}" in fig5
    fig3 = (book.GEN / "fig3_accuracy_vs_threshold.md").read_text()
    assert "**Flagged**" in fig3 and "fraction r of validation rejected" in fig3
    assert "relative" in (book.GEN / "rejection_rule.md").read_text()
    rc = (book.GEN / "fig_risk_coverage.md").read_text()
    assert f"ISIC2017 coverage {a17['test_coverage']:.2f}" in rc
    var = (book.GEN / "rejection_variants.md").read_text()
    assert "temperature-scaled" in var and "raw" in var
    g = (book.GEN / "guarantees.md").read_text()
    assert "conformal sets" in g and "selective guaranteed risk" in g and "fig_guarantees.png" in g
    conf = s[(s["phase"] == "method_conformal") & (s["eval_set"] == "isic2018")].iloc[0]
    assert f"{conf['class_coverage_melanoma']:.3f}" in g and "Across the grid" in g


def test_table1_cells_carry_bootstrap_brackets():
    import pandas as pd

    from melanoma.report.book import _both_ci

    b = pd.Series({"precision": 0.5, "precision_low": 0.4, "precision_high": 0.6})
    a = pd.Series({"precision": 0.7, "precision_low": float("nan"), "precision_high": 0.8})
    assert _both_ci(b, a, "precision") == "50.0% / 70.0%<br><small>[40.0%, 60.0%] / –</small>"


def test_table2_says_a_word_on_an_auc_below_chance():
    import pandas as pd

    from melanoma.report.book import table2_notes

    lb = pd.DataFrame({"run_id": ["resnet18__E", "m__B"], "auc": [0.073, 0.91], "n": [60, 60],
                       "n_melanoma": [5, 5], "synthetic": [True, True]})
    t = table2_notes(lb)
    assert "60 held-out images, 5 of them melanomas (SYNTHETIC labels)" in t
    assert "`resnet18__E`: AUC 7.3%, below 50 %" in t and "degenerate" in t and "SYNTHETIC" in t
    assert "m__B" not in t
    assert "below 50" not in table2_notes(lb[lb["auc"] > 0.5])


@pytest.mark.parametrize("repo", ["/work/main", "/tmp/x", "/tmp/ci/work/main", "/builds/results/clone"])
def test_scrub_paths_leaves_no_absolute_machine_path(monkeypatch, repo):
    import melanoma.report.book as book

    REPO = Path(repo)
    monkeypatch.setattr(book, "REPO", REPO)
    text = (f"`{REPO}/results/demo/x.ipynb` --results /work/other-clone/benchmarks/RESULTS.md "
            f"--work /tmp/melanoma-bench-work-1 data `{REPO.parent}/shared/realdata` a/b{REPO.parent}/c")
    out = book.scrub_paths(text)
    # a checkout directly in /tmp (a fresh clone in mktemp -d) makes that folder a neighbour: ../
    tmp = "../" if str(REPO.parent) == "/tmp" else "TMP/"
    assert out == (f"`results/demo/x.ipynb` --results benchmarks/RESULTS.md --work {tmp}melanoma-bench-work-1 "
                   f"data `../shared/realdata` a/b{REPO.parent}/c")


def test_fold_hides_code_and_removes_parameter_cells():
    import nbformat

    from melanoma.report.book import fold

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# t"), nbformat.v4.new_code_cell("x = 1"),
                                         nbformat.v4.new_code_cell("page.table1()")])
    nb.cells[1].metadata["tags"] = ["injected-parameters"]
    fold(nb)
    assert nb.cells[1].metadata["tags"] == ["injected-parameters", "remove-cell"]
    assert nb.cells[2].metadata["tags"] == ["hide-input"]
    assert "tags" not in nb.cells[0].metadata


def test_melanoma_serve_prints_the_address_and_serves_the_book(tmp_path):
    import subprocess
    import sys
    import urllib.request

    (tmp_path / "index.html").write_text("<p>the book</p>")
    (tmp_path / "webapp").mkdir()
    (tmp_path / "webapp" / "index.html").write_text("<p>the page</p>")
    p = subprocess.Popen([sys.executable, "-m", "melanoma.cli", "serve", "--dir", str(tmp_path), "--port", "0"],
                         stdout=subprocess.PIPE, text=True)
    try:
        lines = [p.stdout.readline() for _ in range(3)]
        book = next(l.split()[-1] for l in lines if "the book:" in l)
        page = next(l.split()[-1] for l in lines if "the web page:" in l)
        assert book.startswith("http://127.0.0.1:") and page == book.replace("index.html", "webapp/index.html")
        assert urllib.request.urlopen(book, timeout=10).read() == b"<p>the book</p>"
        assert urllib.request.urlopen(page, timeout=10).read() == b"<p>the page</p>"
    finally:
        p.terminate()
        p.wait(timeout=10)
    r = subprocess.run([sys.executable, "-m", "melanoma.cli", "serve", "--dir", str(tmp_path / "none")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "no built book" in r.stderr


def test_make_demo_installs_or_finds_the_browser_first():
    """`make demo` runs the `browser` target (Debian's Chromium, as `make test` does) before the
    pipeline, so the book it builds has Fig. 2; `make serve` serves the built book."""
    import subprocess

    from melanoma.pipeline.grid import REPO

    out = subprocess.run(["make", "-n", "demo"], cwd=REPO, capture_output=True,
                         text=True).stdout
    chromium = out.find("apt-get install -y -qq chromium")
    assert 0 <= chromium < out.find("melanoma demo --grid"), out
    serve = subprocess.run(["make", "-n", "serve"], cwd=REPO, capture_output=True, text=True).stdout
    assert "melanoma serve --port 8000" in serve, serve

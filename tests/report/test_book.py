"""The book's build (melanoma.report.book): its _generated pieces, path scrubbing, folding, serving;
the tables are test_tables.py, the end-to-end build test_workflow.py."""

from pathlib import Path

import pytest


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

    from melanoma.report import book, summary, tables

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
    t1, chosen, flagged = tables.table1(grid, s)
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

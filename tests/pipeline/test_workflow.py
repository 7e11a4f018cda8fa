"""The grid end to end through Snakemake → papermill notebooks → summary → strict book build, on a
reduced SYNTHETIC grid; killed mid-run (SIGKILL) and resumed, it gives the same summary as an
uninterrupted run (which also shows the run is deterministic on CPU)."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.tiny_grid import REPO, SNAKEMAKE, env_for as _env, local_cmd as _cmd, write_grid as _grid

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not SNAKEMAKE.exists(), reason="snakemake is not installed")]


@pytest.fixture(scope="module")
def uninterrupted(tiny_local_run):
    return tiny_local_run  # the grid run once, uninterrupted (conftest; tests/pipeline/test_slurm.py compares with it too)


def test_summary_has_every_run_and_phase(uninterrupted):
    s = pd.read_parquet(uninterrupted / "results" / "summary.parquet")
    runs = pd.read_parquet(uninterrupted / "results" / "runs.parquet")
    assert len(runs) == 3 and (runs["status_reject"] == "ok").all()
    ph = s[s["phase"].isin(["before", "after"])]
    assert set(ph["run_id"]) == set(runs["run_id"])
    assert len(ph) == 3 * 2 * 2  # runs × eval sets × before/after
    assert ph["synthetic"].all()
    lb = s[s["phase"] == "leaderboard"]
    assert len(lb) == 3 and lb["auc"].between(0, 1).all()  # Table 2 from held-out synthetic labels
    for rid in runs["run_id"]:  # executed notebooks kept beside the outputs (a grouped job's: one)
        for nb in ("03_calibrate.ipynb", "04_reject.ipynb"):
            assert (uninterrupted / "results" / "runs" / rid / nb).is_file()
        assert Path(runs.set_index("run_id").loc[rid, "notebook"]).is_file()
    grouped = sorted((uninterrupted / "results" / "groups").glob("*.ipynb"))
    assert [g.name for g in grouped] == ["efficientnet_lite0__group1.ipynb"]
    assert (uninterrupted / "results" / "runs" / "efficientnet_lite0__ABC" / "02_train.ipynb").is_file()
    for rid in ("efficientnet_lite0__E", "efficientnet_lite0__B"):
        run = __import__("json").loads((uninterrupted / "results" / "runs" / rid / "status-train.json").read_text())
        assert run["notebook"] == str(grouped[0]) and run["status"] == "ok"
        assert (uninterrupted / "results" / "runs" / rid / "submission.csv").is_file()


def _html(root: Path, page: str) -> str:
    return (root / "book" / "_build" / "html" / f"{page}.html").read_text()


def _cells(html: str) -> str:
    return re.sub(r"<[^>]+>", " ", html)


def test_book_shows_tables_and_figures_from_the_summary(uninterrupted):
    from melanoma.report.summary import fmt

    s = pd.read_parquet(uninterrupted / "results" / "summary.parquet")
    res = _html(uninterrupted, "results")
    text = _cells(res)
    assert "Table 1" in text and "Table 3" in text
    for fig in ("Fig. 3.", "Fig. 4.", "Fig. 5."):  # each caption under its figure (a notebook output)
        assert fig in text, fig
    assert "fig1_framework.png" in _html(uninterrupted, "intro")
    assert (s["rejection_mode"].dropna() == "relative").all()
    # every Table 1 row's precision before/after equals summary.parquet (ranking: unflagged runs only),
    # each beside its validation / test coverage
    ok = s[(s["phase"] == "before") & ~s["flagged"].astype(bool)]
    top = ok.sort_values(["precision", "auc"], ascending=False).groupby("eval_set").head(1)
    assert "Coverage val / test" in text
    if s["flagged"].astype(bool).any():
        assert "Flagged results, not ranked" in text
    else:
        assert "No rejection result of this grid is flagged" in text
    for _, r in top.iterrows():
        a = s[(s["run_id"] == r["run_id"]) & (s["eval_set"] == r["eval_set"]) & (s["phase"] == "after")].iloc[0]
        assert f"{fmt(r['precision'])} / {fmt(a['precision'])}" in text, (r["run_id"], r["eval_set"])
        assert f"{fmt(a['val_coverage'], digits=0)} / {fmt(a['test_coverage'], digits=0)}" in text
        # Table 3 (as the book writes it: an evaluation set whose rejection was skipped has "–" after)
        assert fmt(r["brier"], pct=False) in text and fmt(a["ece"], pct=False) in text
    lb = _cells(_html(uninterrupted, "leaderboard"))
    for _, r in s[s["phase"] == "leaderboard"].iterrows():
        assert fmt(r["auc"]) in lb
    for page in ("intro", "datasets", "results", "leaderboard", "webapp", "runs", "performance"):
        assert "SYNTHETIC DATA" in _html(uninterrupted, page), page


def test_book_pages_are_executed_notebooks_with_folded_code(uninterrupted):
    """The chapters that show results are notebooks executed by papermill (outputs kept, code cells
    folded with hide-input, the parameter cells removed), and the appendix holds the featured run's
    executed 01-04 notebooks."""
    import json

    book = uninterrupted / "book"
    for page in ("datasets", "results", "leaderboard", "runs"):
        nb = json.loads((book / f"{page}.ipynb").read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert code and all(c.get("outputs") or "remove-cell" in c["metadata"]["tags"] for c in code), page
        assert all(("hide-input" in c["metadata"]["tags"]) != ("remove-cell" in c["metadata"]["tags"])
                   for c in code), page
        assert any("injected-parameters" in c["metadata"]["tags"] for c in code), page  # run by papermill
        assert not (book / f"{page}.md").exists()
        html = _html(uninterrupted, page)
        assert "tag_hide-input" in html and "Show code cell source" in html, page
        code_text = re.sub(r"\s+", "", _cells(html))
        assert "page=Pages(grid_file)" in code_text   # the code is in the page, folded
        assert 'grid_file="' not in code_text         # the parameter cells are not
    res = _html(uninterrupted, "results")
    for fig in ("Fig. 3.", "Fig. 4.", "Fig. 5."):
        assert fig in _cells(res), fig
    assert res.count('<img alt="_images/') + res.count("<img alt=") >= 5  # Figs. 3-5, heatmaps, risk-coverage
    # the appendix: one run's notebooks as the workflow executed them
    for step in ("01_ingest", "02_train", "03_calibrate", "04_reject"):
        nb = json.loads((book / "run" / f"{step}.ipynb").read_text())
        assert any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), step
        assert (book / "_build" / "html" / "run" / f"{step}.html").is_file()
    assert "How one run is made" in _html(uninterrupted, "howto")


def test_book_shows_the_papers_numbers_beside_the_demos(uninterrupted):
    from melanoma.io import read_yaml

    paper = read_yaml(REPO / "params" / "paper_results.yaml")
    res, lb = _cells(_html(uninterrupted, "results")), _cells(_html(uninterrupted, "leaderboard"))
    assert res.count("Reported in the paper, on real data") == 2   # after Tables 1 and 3
    assert "Reported in the paper, on real data" in lb
    t1, t3, t2 = paper["table1"][0], paper["table3"][0], paper["table2"][0]
    assert f"{100 * t1[3][0]:.1f}% / {100 * t1[3][1]:.1f}%" in res     # precision before / after
    assert f"{t3[3]:.4f}" in res and f"{100 * t2[2]:.1f}%" in lb
    # Table 1 carries the bootstrap brackets the page promises
    assert re.search(r"\d+\.\d% / \d+\.\d%\s+\[\d+\.\d%, \d+\.\d%\] / \[", res)


def test_book_has_no_absolute_machine_path(uninterrupted):
    html = uninterrupted / "book" / "_build" / "html"
    for page in list(html.glob("*.html")) + list((html / "run").glob("*.html")):
        text = page.read_text()
        for root in (str(REPO), str(uninterrupted), "/tmp/"):
            assert root not in text, (page.name, root)
    intro = _cells(_html(uninterrupted, "intro"))
    assert "Python 3." in intro and "torch " in intro   # provenance lists the versions


def test_book_pages_have_no_error_in_chromium(uninterrupted):
    """Every page of the built book in headless Chromium: no page error (e.g. a script declared twice:
    `Identifier 'THEBE_JS_URL' has already been declared`), no failed request."""
    from melanoma.report import browser as web

    if not web.CHROMIUM.is_file():
        pytest.skip("/usr/bin/chromium absent (apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api")
    html = uninterrupted / "book" / "_build" / "html"
    pages = sorted(p.relative_to(html).as_posix() for p in [*html.glob("*.html"), *(html / "run").glob("*.html")]
                   if p.name not in ("genindex.html", "search.html", "index.html"))  # index: a redirect
    assert "results.html" in pages and "run/02_train.html" in pages
    with web.serve(html) as url, web.launch() as b:
        for p in pages:
            page = b.new_page(viewport={"width": 1280, "height": 900})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("response", lambda r: errors.append(f"HTTP {r.status} {r.url}")
                    if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
            page.goto(f"{url}/{p}")
            page.wait_for_load_state("load")
            # a table wider than the page scrolls inside it instead of being cut off
            cut = page.evaluate("""() => [...document.querySelectorAll('article table')].filter(t => {
                const s = getComputedStyle(t), r = t.getBoundingClientRect();
                return r.right > document.documentElement.clientWidth + 1 ||
                       (t.scrollWidth > t.clientWidth + 1 && !['auto', 'scroll'].includes(s.overflowX)); }).length""")
            page.close()
            assert not errors, (p, errors)
            assert cut == 0, p


def test_sigkill_and_resume_gives_the_same_summary(uninterrupted, tmp_path):
    root = tmp_path / "wf_kill"
    g = _grid(root, "tiny")
    rng = random.Random(7)
    for attempt, delay in enumerate([rng.uniform(20, 60), rng.uniform(5, 30)]):
        p = subprocess.Popen(_cmd(g), cwd=REPO, env=_env(root), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(delay)
        os.killpg(p.pid, signal.SIGKILL)  # the whole job tree, mid-write where it happens
        p.wait()
    # no half-written file looks finished: every parquet/json that exists reads back
    for f in list(root.rglob("*.parquet")) + list(root.rglob("*.json")):
        if f.name.startswith("."):
            continue
        (pd.read_parquet(f) if f.suffix == ".parquet" else __import__("json").loads(f.read_text()))
    # a killed Snakemake leaves its lock: --unlock once (what `melanoma demo` does), then rerun
    subprocess.run(_cmd(g)[:5] + ["--unlock"], cwd=REPO, env=_env(root), capture_output=True, timeout=300)
    r = subprocess.run(_cmd(g), cwd=REPO, env=_env(root), capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    a = pd.read_parquet(uninterrupted / "results" / "summary.parquet")
    b = pd.read_parquet(root / "results" / "summary.parquet")
    pd.testing.assert_frame_equal(a, b)

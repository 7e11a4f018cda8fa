"""The book (Jupyter Book 1.x): its build.

The tables and texts are :mod:`melanoma.report.tables`, the figures :mod:`melanoma.report.figures`.
The chapters that show results are notebooks (``notebooks/book/*.ipynb``) that call these through
:mod:`melanoma.report.pages`; :func:`render` executes them with papermill (one kernel) into the book with
their code folded, copies the featured run's executed 01–04 notebooks into the appendix, and
writes the Markdown pages' pieces into ``_generated/``. Nothing is executed at build time and
nothing is typed in. The build is strict: ``jupyter-book build -W -n --keep-going book``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from melanoma.home import book_dir
from melanoma.io import read_json, write_text
from melanoma.pipeline.grid import REPO, Grid, load_grid
from melanoma.report.figures import fig3, fig4, fig5, fig_risk_coverage, guarantees
from melanoma.report.summary import fmt
from melanoma.report.tables import (banner, commands, eval_sources_table, featured_run, provenance,
                                    read_rejection, referral_table, rejection_blocks, rejection_rule,
                                    shown_path, table1, variants_table)

SOURCE = REPO / "book"
#: Where the book is rendered and built (melanoma.home.book_dir).
BOOK = book_dir()
GEN = BOOK / "_generated"


def _save(fig, name: str) -> str:
    fig.savefig(GEN / name, dpi=110, bbox_inches="tight")
    return name


def _figure_md(png: str, name: str, caption: str) -> str:
    return f"```{{figure}} /_generated/{png}\n:name: {name}\n:width: 100%\n\n{caption}\n```\n"


# ----------------------------------------------------------------------------- sections

def figures(grid: Grid, summary: pd.DataFrame, chosen) -> None:
    """Every figure of the results chapter into ``_generated/`` (PNG + a Markdown figure with its
    caption), and the tables that go with them."""
    rid = featured_run(grid, chosen)
    rej = read_rejection(grid, rid) if rid else {}
    blocks = rejection_blocks(rej)
    write_text(GEN / "rejection_rule.md", rejection_rule(grid, rej) if rej else "_No rejection results._\n")
    for name, key, (fig, cap) in (("fig3_accuracy_vs_threshold", "fig3", fig3(grid, rid, rej, blocks)),
                                  ("fig4_calibration", "fig4", fig4(grid)),
                                  ("fig5_misdiagnoses", "fig5", fig5(grid, rid, blocks)),
                                  ("fig_risk_coverage", "fig-rc", fig_risk_coverage(grid, rid, blocks))):
        md = _figure_md(_save(fig, f"{name}.png"), key, cap) if fig is not None else cap
        if key == "fig5" and fig is not None:
            md += "\n" + referral_table(blocks)
        write_text(GEN / f"{name}.md", md)
    write_text(GEN / "rejection_variants.md", variants_table(summary, rid))
    write_text(GEN / "eval_sources.md", eval_sources_table(rej))
    guarantees_section(grid, summary, rid, blocks)


def guarantees_section(grid: Grid, summary: pd.DataFrame, rid: str | None, blocks: dict[str, dict]) -> None:
    head, fig, cap, tail = guarantees(grid, summary, rid, blocks)
    md = [head]
    if fig is not None:
        md.append(_figure_md(_save(fig, "fig_guarantees.png"), "fig-guarantees", cap))
    md.append(tail)
    write_text(GEN / "guarantees.md", "\n".join(md))


def _facts_cov(f: dict) -> str:
    v, t = f.get("val_coverage"), f.get("test_coverage")
    if v is None or t is None:
        return "–"
    return f"{fmt(v, digits=0)} / {fmt(t, digits=0)}" + (f" (FLAGGED: {'; '.join(f['flags'])})" if f.get("flags") else "")


def webapp_section(grid: Grid) -> None:
    web = grid.results / "web"
    extra = GEN / "extra"
    if extra.exists():
        shutil.rmtree(extra)
    extra.mkdir(parents=True)
    if not (web / "model.json").is_file():
        write_text(GEN / "webapp.md", "_No model exported for the web page in this grid._\n")
        return
    from melanoma.report.export import assemble_site

    assemble_site(extra / "webapp", web)
    mj = read_json(web / "model.json")
    shot = web / "screenshot.png"
    if not shot.is_file() and grid.is_synthetic:
        _take_screenshot(grid, web, shot)
    md = ['<p><strong><a href="webapp/index.html">Open the web page</a></strong> '
          "(served with this book, works offline).</p>\n",
          "The page needs a web server (browsers do not run its model from a `file://` address): "
          "`make serve` (or `melanoma serve`) serves this book on localhost and prints the address; opened "
          "as a file, the page says so.\n",
          "| model | training combination | input | ONNX size | entropy threshold | its coverage val / test |",
          "|---|---|---|---|---|---|",
          f"| `{mj.get('model')}` | [{mj.get('train_label', mj.get('train', ''))}] | "
          f"{mj.get('input_size', '')} px | {mj['onnx']['bytes'] / 1024:.0f} KB | "
          f"{mj.get('threshold', float('nan')):.3f} bits ({mj.get('threshold_source', '')}) | "
          f"{_facts_cov(mj.get('threshold_facts') or {})} |\n"]
    if shot.is_file() and grid.is_synthetic:  # a real-data grid's page would show a real image
        shutil.copy(shot, GEN / "fig2_webapp.png")
        md.append(_figure_md("fig2_webapp.png", "fig2",
                             "**Fig. 2.** The page in headless Chromium, scoring a synthetic image offline "
                             "(screenshot taken by `tests/report/test_web.py` / the workflow)."))
    else:
        md.append("_Fig. 2 (a screenshot of the page scoring an image) needs Debian's Chromium, which this "
                  "machine lacks: install it (`make browser`, as root: `apt-get install -y chromium`), then "
                  f"rebuild the book (`melanoma book --grid {shown_path(grid.path)}`): the book step takes the "
                  "missing screenshot._\n" if grid.is_synthetic else
                  "_Fig. 2 is not shown for a real-data grid: the screenshot would show a patient's image._\n")
    write_text(GEN / "webapp.md", "\n".join(md))


def _take_screenshot(grid: Grid, web: Path, shot: Path) -> None:
    """Fig. 2 when the workflow's export step could not take it (Chromium installed since): the page
    scoring the first melanoma of the first evaluation set's SYNTHETIC test split."""
    from melanoma.report.browser import CHROMIUM, first_test_melanoma, screenshot_checked

    if not CHROMIUM.is_file():
        return
    try:
        screenshot_checked(web, first_test_melanoma(grid.work, grid.eval_sets[0]), shot)
    except Exception as e:  # the book still builds, and says how to get Fig. 2
        print(f"WARNING: no Fig. 2: the screenshot failed ({type(e).__name__}: {e})", file=sys.stderr)


def performance_section() -> None:
    res = REPO / "benchmarks" / "RESULTS.md"
    text = res.read_text() if res.is_file() else "_No benchmark results yet: run `make bench`._\n"
    # demote headings so the page keeps one title
    text = "\n".join(("#" + l) if l.startswith("#") else l for l in text.splitlines()) + "\n"
    text = scrub_paths(text)
    write_text(GEN / "performance.md", text)


# ----------------------------------------------------------------------------- driver

#: The chapters that show results: notebooks/book/<page>.ipynb, executed into BOOK/<page>.ipynb.
PAGES = ("datasets", "results", "leaderboard", "runs")
PAGE_SOURCES = REPO / "notebooks" / "book"
#: The appendix "How one run is made": the featured run's executed notebooks, BOOK/run/<step>.
RUN_STEPS = ("01_ingest", "02_train", "03_calibrate", "04_reject")
_REPO_DIRS = "benchmarks|params|results|work|notebooks|book|workflow|melanoma|tests|web"


def scrub_paths(text: str) -> str:
    """``text`` without absolute machine paths: this repository's (or another clone's) become
    relative (``benchmarks/RESULTS.md``), its neighbours ``../shared/...``, temporary folders
    ``TMP/...`` and the home folder ``~``."""
    import re

    text = text.replace(str(REPO) + "/", "").replace(str(REPO), ".")
    # the shared neighbour first: its parent may itself hold a folder named like one of ours (/ci/work/shared)
    text = re.sub(rf"(?<![\w.~/-]){re.escape(str(REPO.parent / 'shared'))}/", "../shared/", text)
    text = re.sub(rf"(?<![\w.~-])/(?:[\w.@+-]+/)+?(?=(?:{_REPO_DIRS})/)", "", text)
    text = re.sub(rf"(?<![\w.~/-]){re.escape(str(REPO.parent))}/", "../", text)
    text = re.sub(r"(?<![\w.~-])/tmp/", "TMP/", text)
    home = str(Path.home())
    return text.replace(home + "/", "~/") if home not in ("/", "") else text


def _copy_sources() -> None:
    if BOOK == SOURCE.resolve():
        return
    BOOK.mkdir(parents=True, exist_ok=True)
    for f in SOURCE.iterdir():
        if f.is_file() and f.suffix in (".md", ".yml"):
            shutil.copy(f, BOOK / f.name)
    shutil.copytree(SOURCE / "_static", BOOK / "_static", dirs_exist_ok=True)


def _write_notebook(nb, path: Path, grid: Grid | None = None) -> None:
    """An executed notebook into the book, atomically, without absolute paths (and, for a real-data
    grid, without any image output: a notebook may show dataset images)."""
    import nbformat

    if grid is not None and not grid.is_synthetic:
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                data = out.get("data") or {}
                if any(k.startswith("image/") for k in data):
                    out["data"] = {"text/plain": "[image not shown: a real-data grid's book shows no image]"}
    _scrub_notebook(nb)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, nbformat.writes(nb))
    for other in path.parent.glob(path.stem + ".*"):  # a page is either a notebook or a note
        if other != path and other.suffix in (".md", ".ipynb"):
            other.unlink()


def _scrub_notebook(nb) -> None:
    """:func:`scrub_paths` on a notebook's text (sources, text outputs, tracebacks, papermill's
    metadata), never on image data."""
    import json

    for cell in nb.cells:
        cell.source = scrub_paths(cell.source)
        for out in cell.get("outputs", []):
            if "text" in out:
                out["text"] = scrub_paths(out["text"])
            if "traceback" in out:
                out["traceback"] = [scrub_paths(t) for t in out["traceback"]]
            if "evalue" in out:
                out["evalue"] = scrub_paths(out["evalue"])
            for k, v in (out.get("data") or {}).items():
                if k.startswith("text/") or k.endswith("json"):
                    out["data"][k] = (scrub_paths(v) if isinstance(v, str) else
                                      json.loads(scrub_paths(json.dumps(v))))
    if "papermill" in nb.metadata:
        nb.metadata["papermill"] = json.loads(scrub_paths(json.dumps(nb.metadata["papermill"])))


def fold(nb) -> None:
    """Code cells folded (``hide-input``: the output shows, the code is one click away); the
    parameter cells (papermill's injected one names machine paths) removed."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tags = list(cell.metadata.get("tags", []))
        if {"parameters", "injected-parameters"} & set(tags):
            tags = [t for t in tags if t != "hide-input"] + ["remove-cell"]
        elif "hide-input" not in tags and "remove-cell" not in tags:
            tags.append("hide-input")
        cell.metadata["tags"] = list(dict.fromkeys(tags))


def execute_pages(grid: Grid, pages=PAGES) -> dict[str, dict]:
    """Execute the book's notebook pages with papermill, all in one kernel (``nbrun``'s steps), into
    ``BOOK/<page>.ipynb`` with their code folded. A page that fails stops the book, naming its
    executed notebook."""
    import nbformat

    from melanoma.pipeline.nbrun import Step, run_steps

    out = GEN / "pages"
    steps = [Step(PAGE_SOURCES / f"{p}.ipynb", out / f"{p}.ipynb", out / f"{p}.status.json",
                  {"grid_file": str(grid.path)}, cwd=REPO) for p in pages]
    results = dict(zip(pages, run_steps(steps)))
    failed = {p: r for p, r in results.items() if r["status"] != "ok"}
    if failed:
        raise RuntimeError("book pages failed: " + "; ".join(f"{p}: {r['error']} (see {r['notebook']})"
                                                             for p, r in failed.items()))
    for p in pages:
        nb = nbformat.read(out / f"{p}.ipynb", as_version=4)
        fold(nb)
        _write_notebook(nb, BOOK / f"{p}.ipynb", grid)
    return results


def _found(grid: Grid, path: str | Path) -> Path | None:
    """A notebook path recorded in a status file, or the same file under this grid's results folder
    (a results folder copied or moved since)."""
    p = Path(path)
    if p.is_file():
        return p
    for k in (1, 2, 3):
        q = grid.results.joinpath(*p.parts[-k:])
        if q.is_file():
            return q
    return None


def run_notebooks(grid: Grid, rid: str) -> dict[str, Path | None]:
    """The executed 01–04 notebooks of run ``rid``: the ingest of the first release it trains on,
    its training job's notebook (a grouped job's trains several runs), its calibrate and reject."""
    from melanoma.data.registry import parse_combo

    rd = grid.results / "runs" / rid
    rj = read_json(rd / "run.json") if (rd / "run.json").is_file() else {}
    train = rj.get("train") or (rid.split("__")[1] if "__" in rid else "")
    ingest = None
    try:
        order = [*parse_combo(train), *grid.eval_sets]
    except Exception:  # an unreadable combination: the evaluation sets' ingest
        order = list(grid.eval_sets)
    for ds in order:
        ingest = _found(grid, grid.results / "ingest" / f"{ds}.ipynb")
        if ingest:
            break
    st = read_json(rd / "status-train.json") if (rd / "status-train.json").is_file() else {}
    train_nb = _found(grid, st["notebook"]) if st.get("notebook") else _found(grid, rd / "02_train.ipynb")
    return {"01_ingest": ingest, "02_train": train_nb,
            "03_calibrate": _found(grid, rd / "03_calibrate.ipynb"), "04_reject": _found(grid, rd / "04_reject.ipynb")}


def howto_section(grid: Grid, rid: str | None) -> None:
    """The appendix: the featured run's executed notebooks, as they ran (code shown), in BOOK/run/."""
    import nbformat

    found = run_notebooks(grid, rid) if rid else dict.fromkeys(RUN_STEPS)
    titles = {"01_ingest": "01 · Ingest", "02_train": "02 · Train", "03_calibrate": "03 · Calibrate",
              "04_reject": "04 · Reject"}
    lines = []
    for step in RUN_STEPS:
        src = found.get(step)
        if src is None:
            write_text(BOOK / "run" / f"{step}.md", f"# {titles[step]}\n\n_Not available: run `{rid}` has no "
                       f"executed `{step}` notebook in this grid's results._\n")
            for other in (BOOK / "run").glob(f"{step}.ipynb"):
                other.unlink()
            lines.append(f"- {titles[step]}: not available")
            continue
        nb = nbformat.read(src, as_version=4)
        if not nb.cells or nb.cells[0].cell_type != "markdown" or not nb.cells[0].source.startswith("# "):
            nb.cells.insert(0, nbformat.v4.new_markdown_cell(f"# {titles[step]}"))
        _write_notebook(nb, BOOK / "run" / f"{step}.ipynb", grid)
        lines.append(f"- {titles[step]}: `{shown_path(src)}`")
    write_text(GEN / "howto.md",
               (f"The run shown is `{rid}` (the run of Figs. 3 and 5). " if rid else "No run to show. ")
               + "Each page below is the notebook the workflow executed for it (papermill), with its "
               "parameters (the cell tagged `injected-parameters`) and outputs as they were:\n\n"
               + "\n".join(lines) + "\n")


def render(grid: Grid) -> None:
    """Everything the book shows, from the grid's outputs: the Markdown pages' pieces into
    ``_generated/``, the notebook pages executed into the book, the appendix's notebooks copied."""
    from melanoma.report.plots import framework_diagram

    _copy_sources()
    if GEN.exists():
        shutil.rmtree(GEN)  # nothing stale from an earlier grid survives
    GEN.mkdir(parents=True)
    if BOOK != SOURCE.resolve():  # an older book's Markdown page of the same name would shadow a notebook
        for p in PAGES:
            (BOOK / f"{p}.md").unlink(missing_ok=True)
    summary = pd.read_parquet(grid.results / "summary.parquet")
    runs = pd.read_parquet(grid.results / "runs.parquet")
    write_text(GEN / "banner.md", banner(grid))
    write_text(GEN / "provenance.md", provenance(grid, summary, runs))
    write_text(GEN / "commands.md", commands(grid))
    _save(framework_diagram(), "fig1_framework.png")
    _, chosen, _ = table1(grid, summary)
    howto_section(grid, featured_run(grid, chosen))
    webapp_section(grid)
    performance_section()
    execute_pages(grid)


def build(strict: bool = True) -> Path:
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(BOOK)]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    subprocess.run(cmd, check=True)
    return BOOK / "_build" / "html" / "index.html"


def make_book(grid_file: str | Path, strict: bool = True) -> Path:
    grid = load_grid(grid_file)
    render(grid)
    index = build(strict)
    print(f"book: {index}")
    return index

"""What the book's notebook pages call: each method shows one table or figure of a grid.

The book's chapters that show results are notebooks (``notebooks/book/*.ipynb``), executed by
papermill in ``melanoma book`` (one kernel for all of them) and built by Jupyter Book with their
code folded (``hide-input``): every table and figure has the call that made it one click away.
Everything here is read from the grid's outputs only — ``summary.parquet``, ``runs.parquet``, the
run folders (``metrics.json``, ``rejection.json``, ``leakage.parquet``), the ingest reports and
manifests under WORK, and ``params/paper_results.yaml`` for the paper's own numbers. The tables and
captions are those of :mod:`melanoma.report.tables` and :mod:`melanoma.report.figures` (one
implementation for the notebook pages and the files :mod:`melanoma.report.book` renders); this
module only displays them.

In a notebook::

    from melanoma.report.pages import Pages
    page = Pages("params/demo.yaml")
    page.table1()
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from melanoma.pipeline.grid import REPO, load_grid
from melanoma.report import figures, tables


def show(markdown: str) -> None:
    """Display Markdown (tables, notes) as a cell output; the book renders it as MyST."""
    from IPython.display import Markdown, display

    display(Markdown(markdown))


def show_figure(fig, caption: str = "") -> None:
    """Display a figure as a PNG output (drawn here, whatever matplotlib backend the kernel has),
    then its caption."""
    from IPython.display import Image, display

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    display(Image(data=buf.getvalue(), format="png"))
    if caption:
        show(caption)


class Pages:
    """One grid's outputs, loaded once per page; each method displays one piece of the book."""

    def __init__(self, grid_file: str | Path):
        p = Path(grid_file)
        if not p.is_absolute() and not p.is_file():  # run interactively from notebooks/book/
            p = REPO / p
        self.grid = load_grid(p)
        self.summary = pd.read_parquet(self.grid.results / "summary.parquet")
        self.runs = pd.read_parquet(self.grid.results / "runs.parquet")
        self._t1, self.chosen, self._t1_flagged = tables.table1(self.grid, self.summary)
        self.run = tables.featured_run(self.grid, self.chosen)
        self.rej = tables.read_rejection(self.grid, self.run) if self.run else {}
        self.blocks = tables.rejection_blocks(self.rej)
        self._note = "\n_All numbers: SYNTHETIC data._\n" if self.grid.is_synthetic else ""

    # -- every page
    def banner(self) -> None:
        show(tables.banner(self.grid))

    # -- datasets
    def datasets(self) -> None:
        show(tables.datasets_table(self.grid))

    def samples(self) -> None:
        fig, caption = figures.samples(self.grid)
        show_figure(fig, caption) if fig is not None else show(caption)

    def leakage(self) -> None:
        show(tables.leakage_table(self.grid))

    # -- results
    def rejection_rule(self) -> None:
        show(tables.rejection_rule(self.grid, self.rej) if self.rej else "_No rejection results._\n")

    def eval_sources(self) -> None:
        show(tables.eval_sources_table(self.rej))

    def table1(self) -> None:
        md = tables.md_table(self._t1) if len(self._t1) else "_No unflagged results._\n"
        if len(self._t1_flagged):
            md += ("\n**Flagged results, not ranked** (their after-rejection numbers describe a degenerate "
                   "rejection; the flag says why):\n\n" + tables.md_table(self._t1_flagged))
        else:
            md += "\nNo rejection result of this grid is flagged.\n"
        show(md + self._note)

    def table3(self) -> None:
        t3 = tables.table3(self.summary, self.chosen)
        show((tables.md_table(t3) if len(t3) else "_No results._\n") + self._note)

    def table2(self) -> None:
        show(tables.table2(self.summary) + self._note)

    def paper(self, table: str) -> None:
        """The paper's own Table 1, 2 or 3 (``params/paper_results.yaml``), marked as such."""
        show(tables.paper_tables()[table])

    def fig3(self) -> None:
        self._figure(*figures.fig3(self.grid, self.run, self.rej, self.blocks))

    def fig4(self) -> None:
        self._figure(*figures.fig4(self.grid))

    def fig5(self) -> None:
        self._figure(*figures.fig5(self.grid, self.run, self.blocks))
        if self.blocks:
            show(tables.referral_table(self.blocks))

    def heatmaps(self) -> None:
        figs, caption = figures.heatmaps(self.grid, self.summary)
        if figs is None:
            show(caption)
            return
        for fig in figs:
            show_figure(fig)
        show(caption)

    def guarantees(self) -> None:
        head, fig, caption, tail = figures.guarantees(self.grid, self.summary, self.run, self.blocks)
        show(head)
        if fig is not None:
            show_figure(fig, caption)
        if tail:
            show(tail)

    def variants(self) -> None:
        show(tables.variants_table(self.summary, self.run))

    def leakage_experiment(self) -> None:
        show(tables.leakage_experiment(self.grid, self.summary))

    def risk_coverage(self) -> None:
        self._figure(*figures.fig_risk_coverage(self.grid, self.run, self.blocks))

    def aurc(self) -> None:
        show(tables.aurc_table(self.summary))

    # -- runs
    def runs_table(self) -> None:
        show(tables.runs_table(self.runs) + "\n" + tables.rejection_by_run(self.summary))

    def _figure(self, fig, caption: str) -> None:
        show_figure(fig, caption) if fig is not None else show(caption)

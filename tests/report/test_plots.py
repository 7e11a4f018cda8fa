"""Tests of melanoma.report.plots: every function returns a Figure with the expected artists, draws
headless, and never goes through pyplot."""

from __future__ import annotations

import doctest
import io

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

from melanoma.evaluate import metrics as M
from melanoma.evaluate import uncertainty as U
from melanoma.report import plots as P


def outputs(seed, n=300):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    p = 1 / (1 + np.exp(-(np.where(y == 1, 1.5, -1.5) + rng.normal(scale=1.5, size=n))))
    return y, p


def _renders(fig: Figure) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def no_pyplot_figures():
    yield
    if "matplotlib.pyplot" in __import__("sys").modules:
        import matplotlib.pyplot as plt

        assert plt.get_fignums() == []


def test_doctests():
    res = doctest.testmod(P)
    assert res.attempted >= 5 and res.failed == 0


def test_reliability_diagram_one_line_per_run_plus_diagonal():
    curves = {f"run {s}": M.reliability_curve(*outputs(s)) for s in range(3)}
    fig = P.reliability_diagram(curves, title="ResNet50")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert len(ax.lines) == 4
    np.testing.assert_allclose(ax.lines[0].get_xydata(), [[0, 0], [1, 1]])  # y = x
    np.testing.assert_allclose(ax.lines[1].get_xdata(), curves["run 0"]["confidence"])
    assert ax.get_title() == "ResNet50" and ax.get_ylabel() == "accuracy"
    _renders(fig)
    pos = P.reliability_diagram({"a": M.reliability_curve(*outputs(0), confidence="positive")})
    assert pos.axes[0].get_ylabel() == "fraction of melanoma"


def test_accuracy_vs_threshold_one_line_per_table():
    tables = {f"val {s}": U.search_threshold(*outputs(s)) for s in range(2)}
    fig = P.accuracy_vs_threshold(tables)
    ax = fig.axes[0]
    assert len(ax.lines) == 2
    np.testing.assert_allclose(ax.lines[0].get_xdata(), tables["val 0"]["table"]["threshold"])
    assert len(ax.collections) == 2  # the chosen thresholds
    _renders(fig)
    # a bare table works too
    assert len(P.accuracy_vs_threshold({"t": tables["val 0"]["table"]}).axes[0].lines) == 1


def test_accuracy_vs_threshold_relative_mode_uses_the_fraction_axis():
    y, p = outputs(0)
    s = U.search_threshold(y, p, mode="relative")
    fig = P.accuracy_vs_threshold({"_7_point_criteria": s})
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.lines[0].get_xdata(), s["table"]["fraction"])
    assert ax.collections[0].get_offsets()[0][0] == pytest.approx(s["fraction"])
    assert "fraction of validation rejected" in ax.get_xlabel()
    # a label starting with "_" is still in the legend (matplotlib hides "_..." labels)
    assert [t.get_text().strip() for t in ax.get_legend().get_texts()] == ["_7_point_criteria"]
    _renders(fig)


def test_referral_bar_stacks_the_melanomas():
    y, p = outputs(1)
    keep = U.reject_by_threshold(p, 0.8)
    r = U.referral_counts(y, p, keep)
    fig = P.referral_bar({"ISIC2017": r, "_7_point_criteria": {**r, "flag": "FLAGGED"}})
    ax = fig.axes[0]
    assert len(ax.patches) == 10            # per set: before (caught, missed) + after (caught, missed, referred)
    h = [b.get_height() for b in ax.patches[:5]]
    assert h == [r["n_melanoma"] - r["melanoma_missed_before"], r["melanoma_missed_before"],
                 r["melanoma_caught"], r["melanoma_missed"], r["melanoma_referred"]]
    assert sum(h[:2]) == sum(h[2:]) == r["n_melanoma"]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert f"cov. {r['coverage']:.2f}" in ticks[1] and "FLAGGED" in ticks[3]
    assert len(ax.get_legend().get_texts()) == 3
    _renders(fig)


def test_misdiagnoses_bar_four_bars_per_set():
    reports = {name: U.rejection_report(*outputs(s), 0.5) for s, name in enumerate(["ISIC2017", "ISIC2018", "Kaggle"])}
    fig = P.misdiagnoses_bar(reports)
    ax = fig.axes[0]
    assert len(ax.patches) == 12
    heights = [b.get_height() for b in ax.patches]
    r = reports["ISIC2017"]
    assert heights[0] == r["fp_before"] and heights[3] == r["fp_after"]
    assert heights[6] == r["fn_before"] and heights[9] == r["fn_after"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["ISIC2017", "ISIC2018", "Kaggle"]
    _renders(fig)
    records = [{"label": k, **v} for k, v in reports.items()]
    assert len(P.misdiagnoses_bar(records).axes[0].patches) == 12


def test_risk_coverage_one_line_per_curve():
    curves = {f"m{s}": U.risk_coverage_curve(*outputs(s)) for s in range(3)}
    fig = P.risk_coverage(curves)
    assert len(fig.axes[0].lines) == 3 and len(fig.axes[0].collections) == 0
    _renders(fig)
    fig = P.risk_coverage(curves, points={"m1": (0.8, 0.1)})   # the operating point of a threshold
    assert fig.axes[0].collections[0].get_offsets().tolist() == [[0.8, 0.1]]


def test_entropy_histogram_bars_and_threshold_line():
    y, p = outputs(0)
    fig = P.entropy_histogram(y, p, bins=15, threshold=0.2)
    ax = fig.axes[0]
    assert len(ax.patches) == 30 and len(ax.lines) == 1
    total = sum(b.get_height() for b in ax.patches)
    assert total == len(y)
    _renders(fig)
    assert len(P.entropy_histogram(y, p).axes[0].lines) == 0


@pytest.mark.parametrize(
    "call, msg",
    [
        (lambda: P.reliability_diagram({}), "curves must be a non-empty dict"),
        (lambda: P.risk_coverage({"a": {"coverage": [1]}}), "curves['a'] is missing keys ['risk']"),
        (lambda: P.misdiagnoses_bar({"x": {"fp_before": 1}}), "record 'x' is missing keys"),
        (lambda: P.misdiagnoses_bar([]), "records must not be empty"),
        (lambda: P.entropy_histogram([0, 1], [0.2, 0.9], bins=0), "bins must be a positive integer, got 0"),
    ],
)
def test_input_errors(call, msg):
    with pytest.raises(ValueError, match=msg.replace("[", r"\[").replace("]", r"\]")):
        call()


def test_backend_untouched():
    before = matplotlib.get_backend()
    P.entropy_histogram(*outputs(1))
    assert matplotlib.get_backend() == before


def _legend_texts(fig: Figure) -> list[str]:
    out = []
    for ax in fig.axes:
        leg = ax.get_legend()
        if leg is not None:
            out += [t.get_text().strip() for t in leg.get_texts()]
    return out


def test_every_series_has_a_legend_entry_even_with_a_leading_underscore():
    """matplotlib hides labels starting with ``_``: the paper's ``_7_point_criteria`` lost its legend
    entry in Fig. 3 and the risk–coverage plot. Every plot with series labels keeps all of them."""
    y, p = outputs(0)
    names = ["ISIC2017", "_7_point_criteria", "_private"]
    search = U.search_threshold(y, p, thresholds=[0.2, 0.5, 1.0])
    rc = U.risk_coverage_curve(y, p)
    rel = M.reliability_curve(y, p)
    figs = {
        "reliability": P.reliability_diagram({n: rel for n in names}),
        "accuracy_vs_threshold": P.accuracy_vs_threshold({n: search for n in names}),
        "risk_coverage": P.risk_coverage({n: rc for n in names}, points={"_7_point_criteria": (0.8, 0.1)}),
    }
    for what, fig in figs.items():
        texts = _legend_texts(fig)
        for n in names:
            assert n in texts, (what, n, texts)
        _renders(fig)
    c = {"entropy": {"coverage": [1, .8], "miss_rate": [.3, .2]}}
    fig = P.miss_rate_vs_coverage({n: c for n in names})
    assert [a.get_title().strip() for a in fig.axes] == names


def test_titles_fit_the_figure():
    """A long title is wrapped inside the figure's width instead of being clipped at its edge."""
    y, p = outputs(1)
    title = "validation, efficientnet_lite0__ABCDEFGHIJ (SYNTHETIC) — a rather long title " * 2
    fig = P.accuracy_vs_threshold({"a": U.search_threshold(y, p, thresholds=[0.2, 1.0])}, title=title)
    fig.canvas.draw()
    bb = fig.axes[0].title.get_window_extent()
    assert bb.x0 >= 0 and bb.x1 <= fig.bbox.width + 1


def test_metric_heatmap_one_panel_per_set_with_annotations():
    import pandas as pd

    t = pd.DataFrame({"B": [0.8, 0.7], "A+B": [0.9, float("nan")]}, index=["resnet18", "vgg16"])
    fig = P.metric_heatmap({"ISIC2017": t, "_7_point_criteria": t, "KaggleMB": t}, "AUC-ROC")
    heat = [a for a in fig.axes if a.get_title()]
    assert [a.get_title().strip() for a in heat] == ["ISIC2017", "_7_point_criteria", "KaggleMB"]
    annots = sorted(x.get_text() for x in heat[0].texts)
    assert annots == ["70.0", "80.0", "90.0"]   # the missing run is left blank
    _renders(fig)

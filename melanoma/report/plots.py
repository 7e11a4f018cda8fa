"""Every figure, as a function that returns a :class:`matplotlib.figure.Figure`.

The numbers come from :mod:`melanoma.evaluate.metrics` and :mod:`melanoma.evaluate.uncertainty` (``*_curve``
functions, :func:`~melanoma.evaluate.uncertainty.search_threshold`,
:func:`~melanoma.evaluate.uncertainty.rejection_report`); this module only draws. Figures are built
with the object-oriented API (``Figure`` + Agg canvas), never through ``pyplot``: nothing is
shown, no global figure is left open, and it works headless. In Jupyter a returned figure
displays itself; save one with ``fig.savefig(path)``.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from melanoma.evaluate.metrics import check_threshold, check_y_p
from melanoma.evaluate.uncertainty import entropy

__all__ = [
    "reliability_diagram",
    "accuracy_vs_threshold",
    "misdiagnoses_bar",
    "risk_coverage",
    "referral_bar",
    "miss_rate_vs_coverage",
    "entropy_histogram",
    "sample_grid",
    "framework_diagram",
    "learning_curves",
    "metric_heatmap",
]


def legend_label(label) -> str:
    """``label`` as a legend entry matplotlib shows: it hides every label that starts with ``_``
    (``_7_point_criteria``, the paper's name for the 7-point criteria set), so such a label gets a
    leading space. Every series label of this module goes through here."""
    s = str(label)
    return f" {s}" if s.startswith("_") else s


def _title(target, text: str | None, fontsize: str = "medium") -> None:
    """A title wrapped to the figure's width (an axes title is not wrapped by matplotlib's layout
    and was clipped at the figure's edge); ``target`` is an Axes or, for a suptitle, the Figure."""
    if not text:
        return
    import textwrap

    fig = target if isinstance(target, Figure) else target.figure
    width = max(20, int(fig.get_figwidth() * 9))  # ~9 characters per inch at the medium size
    text = textwrap.fill(str(text), width)
    if isinstance(target, Figure):
        target.suptitle(text, fontsize=fontsize)
    else:
        target.set_title(text, fontsize=fontsize)


def _figure(figsize=(5.0, 4.0)) -> tuple[Figure, object]:
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _check_mapping(obj, what: str) -> Mapping:
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"{what} must be a non-empty dict mapping a label to its data")
    return obj


def _need(d: Mapping, keys: Iterable[str], what: str) -> None:
    missing = [k for k in keys if k not in d]
    if missing:
        raise ValueError(f"{what} is missing keys {missing}")


def reliability_diagram(curves: Mapping[str, Mapping], title: str | None = None) -> Figure:
    """Calibration curves of several runs on one axes, with the ideal ``y = x`` (Fig. 4 style).

    Parameters
    ----------
    curves : dict
        ``{label: reliability data}``, each from :func:`melanoma.evaluate.metrics.reliability_curve`
        (keys ``confidence`` and ``accuracy`` are used).
    title : str, optional
        Axes title.

    Returns
    -------
    Figure
        One line per run plus the dashed diagonal.

    Examples
    --------
    >>> from melanoma.evaluate.metrics import reliability_curve
    >>> fig = reliability_diagram({"run": reliability_curve([0, 1, 1], [0.2, 0.7, 0.9])})
    >>> len(fig.axes[0].lines)
    2
    """
    import pandas as pd
    import seaborn as sns

    curves = _check_mapping(curves, "curves")
    fig, ax = _figure()
    ax.plot([0, 1], [0, 1], ls="--", color="0.5", lw=1, label="perfect calibration")
    kinds, parts = set(), []
    for label, c in curves.items():
        _need(c, ("confidence", "accuracy"), f"curves[{label!r}]")
        kinds.add(c.get("kind", "top-label"))
        parts.append(pd.DataFrame({"confidence": np.asarray(c["confidence"], float),
                                   "accuracy": np.asarray(c["accuracy"], float), "run": legend_label(label)}))
    data = pd.concat(parts, ignore_index=True)
    # one line per run, markers on the bins (seaborn: hue and marker style per run, legend from the data)
    sns.lineplot(data=data, x="confidence", y="accuracy", hue="run", style="run", markers=True, dashes=False,
                 estimator=None, sort=True, ax=ax, palette="colorblind", markersize=6, legend=False)
    for line, run in zip(ax.lines[1:], data["run"].unique()):
        line.set_label(run)
    positive = kinds == {"positive"}
    ax.set_xlabel("mean predicted p(melanoma)" if positive else "confidence (max softmax)")
    ax.set_ylabel("fraction of melanoma" if positive else "accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.legend(fontsize="small", loc="upper left")
    _title(ax, title)
    return fig


def accuracy_vs_threshold(tables: Mapping[str, Mapping], title: str | None = None) -> Figure:
    """Validation accuracy of the retained samples against the rejection threshold (Fig. 3).

    Parameters
    ----------
    tables : dict
        ``{label: search result}``, each the dict returned by
        :func:`melanoma.evaluate.uncertainty.search_threshold` (or its ``table``); the chosen threshold,
        when present, is marked with a dot.
    title : str, optional
        Axes title.

    Returns
    -------
    Figure
        One line per entry; in relative mode (``mode == "relative"``) the x axis is the fraction
        r of validation rejected, else the entropy threshold (or fraction in coverage mode).
        Legend labels get a leading space, so a label starting with ``_`` (``_7_point_criteria``)
        is not hidden by matplotlib.

    Examples
    --------
    >>> from melanoma.evaluate.uncertainty import search_threshold
    >>> s = search_threshold([1, 0, 1, 0], [0.99, 0.02, 0.6, 0.45], thresholds=[0.1, 0.2, 1.0])
    >>> len(accuracy_vs_threshold({"val": s}).axes[0].lines)
    1
    """
    tables = _check_mapping(tables, "tables")
    fig, ax = _figure()
    mode = None
    for label, s in tables.items():
        t = s.get("table", s)
        _need(t, ("threshold", "accuracy"), f"tables[{label!r}]")
        mode = s.get("mode", mode)
        # relative mode: each candidate is a fraction r of validation rejected (the seed code's axis)
        use_fraction = mode == "relative" and "fraction" in t
        x = np.asarray(t["fraction"] if use_fraction else t["threshold"], dtype=float)
        (line,) = ax.plot(x, np.asarray(t["accuracy"]), marker=".", label=legend_label(label))
        chosen = (s.get("fraction") if use_fraction else s.get("threshold")) if "table" in s else None
        if chosen is not None and np.isfinite(chosen):
            j = int(np.nanargmin(np.abs(x - chosen)))
            ax.scatter([chosen], [np.asarray(t["accuracy"])[j]], color=line.get_color(), zorder=3, s=40)
    ax.set_xlabel("fraction of validation rejected, r" if mode == "relative" else
                  "fraction rejected" if mode == "coverage" else "entropy threshold (bits)")
    ax.set_ylabel("accuracy on retained (validation)")
    ax.legend(fontsize="small")
    _title(ax, title)
    return fig


def misdiagnoses_bar(records, title: str | None = None) -> Figure:
    """False positives and false negatives before vs after rejection, per evaluation set (Fig. 5).

    Parameters
    ----------
    records : dict or list of dict
        ``{eval set: rejection report}`` with reports from
        :func:`melanoma.evaluate.uncertainty.rejection_report`, or a list of dicts each with ``label``;
        the keys ``fp_before, fp_after, fn_before, fn_after`` are used.
    title : str, optional
        Axes title.

    Returns
    -------
    Figure
        Four bars per evaluation set: FP before, FP after, FN before, FN after.

    Examples
    --------
    >>> r = {"fp_before": 5, "fp_after": 2, "fn_before": 4, "fn_after": 1}
    >>> len(misdiagnoses_bar({"ISIC2017": r, "Kaggle": r}).axes[0].patches)
    8
    """
    if isinstance(records, Mapping):
        items = list(_check_mapping(records, "records").items())
    else:
        records = list(records)
        if not records:
            raise ValueError("records must not be empty")
        for r in records:
            _need(r, ("label",), "each record")
        items = [(r["label"], r) for r in records]
    keys = ("fp_before", "fp_after", "fn_before", "fn_after")
    names = ("FP before", "FP after", "FN before", "FN after")
    colors = ("#f4a582", "#ca0020", "#92c5de", "#0571b0")
    for label, r in items:
        _need(r, keys, f"record {label!r}")
    fig, ax = _figure(figsize=(max(5.0, 1.4 * len(items) + 2), 4.0))
    x = np.arange(len(items))
    w = 0.2
    for j, (k, name, col) in enumerate(zip(keys, names, colors)):
        vals = [float(r[k]) for _, r in items]
        bars = ax.bar(x + (j - 1.5) * w, vals, w, label=name, color=col)
        ax.bar_label(bars, fmt="%g", fontsize="x-small")
    ax.set_xticks(x, [str(label) for label, _ in items])
    ax.set_ylabel("number of test cases")
    ax.legend(fontsize="small", ncols=2)
    _title(ax, title)
    return fig


def risk_coverage(curves: Mapping[str, Mapping], title: str | None = None,
                  points: Mapping[str, tuple[float, float]] | None = None) -> Figure:
    """Selective risk against coverage for several runs or sets.

    Parameters
    ----------
    curves : dict
        ``{label: curve}`` from :func:`melanoma.evaluate.uncertainty.risk_coverage_curve` (keys
        ``coverage`` and ``risk``).
    points : dict, optional
        ``{label: (coverage, risk)}``: the operating point the chosen threshold reached on test,
        drawn as a dot on that label's curve.
    title : str, optional
        Axes title.

    Returns
    -------
    Figure
        One line per entry.

    Examples
    --------
    >>> from melanoma.evaluate.uncertainty import risk_coverage_curve
    >>> c = risk_coverage_curve([1, 0, 1, 0], [0.75, 0.25, 0.6, 0.6])
    >>> len(risk_coverage({"a": c, "b": c}).axes[0].lines)
    2
    """
    curves = _check_mapping(curves, "curves")
    points = points or {}
    fig, ax = _figure()
    for label, c in curves.items():
        _need(c, ("coverage", "risk"), f"curves[{label!r}]")
        (line,) = ax.plot(np.asarray(c["coverage"]), np.asarray(c["risk"]), drawstyle="steps-post",
                          label=legend_label(label))
        if label in points:
            cov, risk = points[label]
            ax.scatter([cov], [risk], color=line.get_color(), zorder=3, s=40, edgecolor="black")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("coverage")
    ax.set_ylabel("selective risk (error rate on retained)")
    ax.legend(fontsize="small")
    _title(ax, title)
    return fig


def miss_rate_vs_coverage(curves: Mapping[str, Mapping], points: Mapping[str, Mapping] | None = None,
                          title: str | None = None) -> Figure:
    """Melanoma miss rate (confident benign labels / all melanomas) against coverage, one panel per
    evaluation set, one line per rejection method as its parameter varies.

    Parameters
    ----------
    curves : dict
        ``{eval set: {method: {"coverage": [...], "miss_rate": [...]}}}``, e.g. the ``curves`` of
        :func:`melanoma.evaluate.conformal.compare_methods`.
    points : dict, optional
        ``{eval set: {method: (coverage, miss_rate)}}``: the operating point of each method's
        chosen parameter, drawn as a dot.
    title : str, optional
        Figure title.

    Returns
    -------
    Figure

    Examples
    --------
    >>> c = {"entropy": {"coverage": [1, .8], "miss_rate": [.3, .2]},
    ...      "conformal": {"coverage": [.6, .3], "miss_rate": [.1, .02]}, "sgr": {"coverage": [], "miss_rate": []}}
    >>> fig = miss_rate_vs_coverage({"ISIC2017": c, "_7_point_criteria": c})
    >>> len(fig.axes), len(fig.axes[0].lines)
    (2, 3)
    """
    curves = _check_mapping(curves, "curves")
    points = points or {}
    n = len(curves)
    fig = Figure(figsize=(min(4.2 * n, 13.0), 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, squeeze=False)[0]
    styles = {"entropy": ("#555555", "entropy rule (paper)"), "conformal": ("#1f77b4", "conformal sets"),
              "sgr": ("#d62728", "selective guaranteed risk")}
    for ax, (es, by_method) in zip(axes, curves.items()):
        for method, c in by_method.items():
            _need(c, ("coverage", "miss_rate"), f"curves[{es!r}][{method!r}]")
            colour, label = styles.get(method, (None, method))
            cov, miss = np.asarray(c["coverage"], float), np.asarray(c["miss_rate"], float)
            order = np.argsort(cov, kind="stable")
            ax.plot(cov[order], miss[order], marker=".", color=colour, label=legend_label(label))
            pt = (points.get(es) or {}).get(method)
            if pt is not None and all(np.isfinite(pt)):
                ax.scatter([pt[0]], [pt[1]], color=colour, edgecolor="black", s=50, zorder=3)
        ax.set_xlim(0, 1.02)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("coverage (confident predictions)")
        ax.set_title(legend_label(es), fontsize="medium")
    axes[0].set_ylabel("melanomas given a confident benign label")
    axes[0].legend(fontsize="small")
    _title(fig, title)
    return fig


def referral_bar(records: Mapping[str, Mapping], title: str | None = None) -> Figure:
    """Where the melanomas went, before and after rejection, per evaluation set (Fig. 5).

    Two stacked bars per evaluation set: *before* (every melanoma caught or missed) and *after*
    (caught, missed = a confident benign label, referred = "Uncertain"), with the benign lesions
    referred and the test coverage written under the set's name. The counts are those of
    :func:`melanoma.evaluate.uncertainty.referral_counts`.

    Parameters
    ----------
    records : dict
        ``{eval set: referral}`` with keys ``n_melanoma, melanoma_caught, melanoma_missed,
        melanoma_referred, melanoma_missed_before, benign_referred, n_benign, coverage``; an
        optional ``flag`` string is printed under the name.
    title : str, optional
        Axes title.

    Returns
    -------
    Figure

    Examples
    --------
    >>> r = {"n_melanoma": 10, "melanoma_caught": 6, "melanoma_missed": 2, "melanoma_referred": 2,
    ...      "melanoma_missed_before": 3, "benign_referred": 5, "n_benign": 40, "coverage": 0.86}
    >>> len(referral_bar({"ISIC2017": r}).axes[0].patches)
    5
    """
    records = _check_mapping(records, "records")
    keys = ("n_melanoma", "melanoma_caught", "melanoma_missed", "melanoma_referred", "melanoma_missed_before",
            "benign_referred", "n_benign", "coverage")
    for label, r in records.items():
        _need(r, keys, f"record {label!r}")
    fig, ax = _figure(figsize=(max(5.5, 1.8 * len(records) + 2.0), 4.6))
    import seaborn as sns

    pal = sns.color_palette("colorblind")
    colours = {"caught": pal[2], "missed": pal[3], "referred": pal[0]}  # green, vermilion, blue
    w = 0.36
    ticks, names, seen = [], [], set()
    for i, (label, r) in enumerate(records.items()):
        n = float(r["n_melanoma"])
        before = {"caught": n - float(r["melanoma_missed_before"]), "missed": float(r["melanoma_missed_before"]),
                  "referred": 0.0}
        after = {"caught": float(r["melanoma_caught"]), "missed": float(r["melanoma_missed"]),
                 "referred": float(r["melanoma_referred"])}
        for x, parts, kinds in ((i - w / 2 - 0.02, before, ("caught", "missed")),
                                (i + w / 2 + 0.02, after, ("caught", "missed", "referred"))):
            bottom = 0.0
            for k in kinds:
                first = i == 0 and k not in seen
                seen.add(k)
                bars = ax.bar(x, parts[k], w, bottom=bottom, color=colours[k],
                              label=f" melanoma {k}" if first else None)
                if parts[k]:
                    ax.bar_label(bars, labels=[f"{parts[k]:g}"], label_type="center", fontsize="small")
                bottom += parts[k]
        ticks += [i - w / 2 - 0.02, i + w / 2 + 0.02]
        flag = f"\n{r['flag']}" if r.get("flag") else ""
        names.append("before")
        names.append(f"after\ncov. {float(r['coverage']):.2f}\nbenign ref. {int(r['benign_referred'])}/"
                     f"{int(r['n_benign'])}{flag}")
    ax.set_xticks(ticks, names, fontsize="small")
    # each set's name centred under its pair of bars, below the longest tick label
    depth = max(n.count("\n") for n in names) + 1
    ax.set_xticks(range(len(records)), ["\n" * depth + legend_label(label).strip() for label in records],
                  minor=True, fontsize="medium", fontweight="bold")
    ax.tick_params(axis="x", which="minor", length=0)
    ax.set_ylabel("melanomas in the test split")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _title(ax, title)
    return fig


def entropy_histogram(
    y,
    p,
    bins: int = 20,
    base: float = 2,
    threshold: float | None = None,
    decision_threshold: float = 0.5,
    title: str | None = None,
) -> Figure:
    """Histograms of the entropy of correct and of wrong predictions.

    Parameters
    ----------
    y : array-like of shape (n,)
        Labels, 1 = melanoma.
    p : array-like of shape (n,)
        p(melanoma).
    bins : int, default=20
        Equal-width bins over [0, log_base(2)] (i.e. [0, 1] in bits).
    base : float, default=2
        Entropy base.
    threshold : float, optional
        A rejection threshold to mark with a vertical line.
    decision_threshold : float, default=0.5
        Decision threshold deciding correct vs wrong.
    title : str, optional
        Axes title.

    Returns
    -------
    Figure
        Two overlaid histograms (``bins`` bars each) and, with ``threshold``, one vertical line.

    Examples
    --------
    >>> fig = entropy_histogram([1, 0, 1], [0.9, 0.2, 0.4], bins=10)
    >>> len(fig.axes[0].patches)
    20
    """
    y, p = check_y_p(y, p)
    decision_threshold = check_threshold(decision_threshold)
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    H = entropy(p, base=base)
    correct = (p > decision_threshold) == (y == 1)
    edges = np.linspace(0.0, np.log(2) / np.log(base), bins + 1)
    fig, ax = _figure()
    for mask, name, col in ((correct, "correct", "#1b7837"), (~correct, "wrong", "#c51b7d")):
        counts, _ = np.histogram(H[mask], bins=edges)
        ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", alpha=0.5, color=col,
               label=f"{name} (n={int(mask.sum())})")
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax.set_xlabel("entropy (bits)" if base == 2 else f"entropy (base {base:g})")
    ax.set_ylabel("number of predictions")
    ax.legend(fontsize="small")
    _title(ax, title)
    return fig


def sample_grid(work, manifest, per_class: int = 6, seed: int = 0, title: str | None = None,
                cache_size: int = 256) -> Figure:
    """A grid of cached images: one row of melanoma, one of non-melanoma (seeded sample).

    Parameters
    ----------
    work : path
        Work folder holding the image cache (``WORK/cache``).
    manifest : DataFrame
        Rows with ``label`` and ``content_hash`` (one dataset's manifest, or several).
    """
    from melanoma.data.cache import ImageCache

    cache = ImageCache(__import__("pathlib").Path(work) / "cache", cache_size)
    rng = np.random.default_rng(seed)
    rows = [("melanoma", manifest[manifest["label"] == 1]), ("non-melanoma", manifest[manifest["label"] == 0])]
    fig = Figure(figsize=(1.6 * per_class, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, per_class, squeeze=False)
    for r, (name, df) in enumerate(rows):
        keys = sorted(df["content_hash"])
        pick = rng.choice(len(keys), size=min(per_class, len(keys)), replace=False) if keys else []
        for c in range(per_class):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if c < len(pick):
                img = cache.get(keys[pick[c]])
                h, w = img.shape[:2]
                s0 = min(h, w)
                ax.imshow(img[(h - s0) // 2:(h - s0) // 2 + s0, (w - s0) // 2:(w - s0) // 2 + s0])
            if c == 0:
                ax.set_ylabel(name)
    _title(fig, title)
    return fig


def framework_diagram(title: str | None = None) -> Figure:
    """Fig. 1: the framework as boxes and arrows (drawn by code, no image assets).

    Two rows of three steps (read left to right, then right to left), so the text stays readable
    when the figure is shown at a page's width."""
    from matplotlib.patches import FancyBboxPatch

    fig = Figure(figsize=(8.0, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_xlim(0, 8)
    ax.set_ylim(0, 4.4)
    ax.axis("off")
    steps = [
        ("11 public releases\n(official layouts)", "#dbe9f6"),
        ("ingest + merge,\nduplicates removed", "#dbe9f6"),
        ("CNNs × dataset\ncombinations", "#e6f2dc"),
        ("softmax p(melanoma);\nECE, Brier", "#e6f2dc"),
        ("entropy > threshold\n(chosen on validation)?", "#fbe5d6"),
        ("Melanoma / Non-melanoma,\nor Uncertain →\ndermatologist", "#fbe5d6"),
    ]
    w, h, gap = 2.3, 1.25, 0.4
    pos = [(0.1 + i * (w + gap), 2.75) for i in range(3)] + [(0.1 + i * (w + gap), 0.85) for i in (2, 1, 0)]
    for (text, color), (x, y) in zip(steps, pos):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=color, ec="#555555"))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=11)
    arrow = dict(arrowstyle="->", color="#333333", lw=1.5)
    for (x0, y0), (x1, y1) in zip(pos, pos[1:]):
        if y0 == y1:  # along a row (to the right on top, to the left below)
            a, b = (x0 + w + 0.06, x1 - 0.06) if x1 > x0 else (x0 - 0.06, x1 + w + 0.06)
            ax.annotate("", xy=(b, y0 + h / 2), xytext=(a, y0 + h / 2), arrowprops=arrow)
        else:  # down, from the end of the top row to the start of the bottom row
            ax.annotate("", xy=(x1 + w / 2, y1 + h + 0.08), xytext=(x0 + w / 2, y0 - 0.08), arrowprops=arrow)
    ax.text(4.0, 0.3, "metrics before / after rejection; risk–coverage;\nin-browser inference (no upload)",
            ha="center", va="center", fontsize=10.5, style="italic")
    _title(ax, title)
    return fig


def metric_heatmap(tables: Mapping[str, "object"], metric: str, title: str | None = None,
                   higher_is_better: bool = True, pct: bool = True) -> Figure:
    """One metric across models × training combinations, one heatmap per evaluation set.

    Parameters
    ----------
    tables : dict
        ``{eval set: DataFrame}``, each indexed by model with one column per training combination
        (NaN where the grid has no such run), e.g. from :func:`melanoma.report.summary.metric_matrix`.
    metric : str
        Colour-bar label, e.g. ``"AUC-ROC"`` or ``"ECE"``.
    higher_is_better : bool, default=True
        The colour map runs dark → light toward the better end either way; one colour scale for
        every panel, so colours compare across evaluation sets.
    pct : bool, default=True
        Annotate cells as percentages (else 3 decimals).

    Returns
    -------
    Figure
        One axes per evaluation set (plus colour bars).

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"B": [0.8, 0.7], "A+B": [0.9, float("nan")]}, index=["resnet18", "vgg16"])
    >>> fig = metric_heatmap({"ISIC2017": t, "_7_point_criteria": t}, "AUC-ROC")
    >>> [a.get_title() for a in fig.axes[:2]]
    ['ISIC2017', ' _7_point_criteria']
    """
    import seaborn as sns

    tables = _check_mapping(tables, "tables")
    n = len(tables)
    first = next(iter(tables.values()))
    label_w = 0.09 * max((len(str(i)) for i in first.index), default=8)  # the model names, in inches
    panel_w = label_w + 1.4 + 0.55 * max(1, first.shape[1])
    ncols = min(n, 2) if 2 * panel_w <= 11 else 1  # two panels a row only while they stay readable
    nrows = -(-n // ncols)
    width = ncols * panel_w
    height = nrows * (1.4 + 0.4 * max(1, first.shape[0]))
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    cmap = "viridis" if higher_is_better else "viridis_r"
    k = 100 if pct else 1
    every = np.concatenate([np.asarray(t, dtype=float).ravel() for t in tables.values()]) * k
    lo, hi = (float(np.nanmin(every)), float(np.nanmax(every))) if np.isfinite(every).any() else (0.0, 1.0)
    for ax, (es, t) in zip(axes, tables.items()):
        vals = t.astype(float)
        sns.heatmap(vals * k, ax=ax, vmin=lo, vmax=hi, annot=True, fmt=".1f" if pct else ".3f", cmap=cmap,
                    cbar_kws={"label": metric + (" (%)" if pct else "")}, linewidths=0.5, linecolor="white")
        ax.set_title(legend_label(es), fontsize="medium")
        ax.set_xlabel("training combination")
        ax.set_ylabel("model")
        ax.tick_params(axis="x", labelrotation=45)
        ax.tick_params(axis="y", labelrotation=0)
    for ax in axes[n:]:
        ax.remove()
    _title(fig, title)
    return fig


def learning_curves(histories: Mapping[str, Mapping], best: Mapping[str, int] | None = None,
                    tag: str = "") -> Figure:
    """Loss, accuracy and AUC per epoch of one or several runs: one row of two axes per run.

    Parameters
    ----------
    histories : dict
        ``{run label: history}``, each a table with columns ``epoch``, ``train_loss``,
        ``val_loss``, ``train_accuracy``, ``val_accuracy``, ``val_auc`` (a run's ``history.csv``
        read by pandas, or a dict of equal-length lists). On the fast path with the L-BFGS head
        the "epochs" are the candidates of the regularisation strength C, in order.
    best : dict, optional
        ``{run label: epoch}`` of the checkpoint kept; drawn as a dotted line.
    tag : str
        Appended to each title (e.g. ``" (SYNTHETIC)"``).

    Returns
    -------
    Figure

    Examples
    --------
    >>> h = {"epoch": [1, 2], "train_loss": [0.7, 0.5], "val_loss": [0.7, 0.6], "train_accuracy": [0.5, 0.7],
    ...      "val_accuracy": [0.5, 0.6], "val_auc": [0.5, 0.7]}
    >>> fig = learning_curves({"run": h}, best={"run": 2})
    >>> len(fig.axes), [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    (2, ['train', 'validation', 'checkpoint (epoch 2)'])
    """
    histories = _check_mapping(histories, "histories")
    cols = ("epoch", "train_loss", "val_loss", "train_accuracy", "val_accuracy", "val_auc")
    fig = Figure(figsize=(10.0, 3.5 * len(histories)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(histories), 2, squeeze=False)
    for (label, h), (ax_loss, ax_acc) in zip(histories.items(), axes):
        _need(h, cols, f"histories[{label!r}]")
        ep = np.asarray(h["epoch"])
        ax_loss.plot(ep, np.asarray(h["train_loss"]), label="train")
        ax_loss.plot(ep, np.asarray(h["val_loss"]), label="validation")
        if best and label in best:
            ax_loss.axvline(best[label], color="grey", ls=":", label=f"checkpoint (epoch {best[label]})")
        ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title=f"{label}: loss{tag}")
        ax_loss.legend()
        for k, name in (("train_accuracy", "train accuracy"), ("val_accuracy", "validation accuracy"),
                        ("val_auc", "validation AUC")):
            ax_acc.plot(ep, np.asarray(h[k], dtype=float), label=name)
        ax_acc.set(xlabel="epoch", ylim=(0, 1.02), title=f"{label}: accuracy / AUC{tag}")
        ax_acc.legend()
    return fig

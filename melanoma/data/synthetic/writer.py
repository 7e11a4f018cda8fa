"""What the release writers share: one image's record (:class:`Rec`), the state of one
:func:`~melanoma.data.synthetic.replicas.write_replicas` call (:class:`Writer`: random streams,
ISIC ids, rendering, copies, planted duplicates, the ground-truth files) and the CSV/image
writing and metadata helpers."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image

from melanoma.data.synthetic.draw import STYLES, Lesion, Style, draw_lesion, render_view
from melanoma.data.synthetic.plan import GENERATOR, requested_counts, stream

#: Values of the ``sex`` column of the ISIC and derm7pt metadata.
SEX = ["male", "female"]


def write_csv(path: Path, header: list[str] | None, rows: Iterable[Iterable[Any]]) -> None:
    """Write a CSV with ``\\n`` line ends (no header when ``header`` is None)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        wr = csv.writer(f, lineterminator="\n")
        if header is not None:
            wr.writerow(header)
        wr.writerows(rows)


def save_image(path: Path, rgb: np.ndarray, quality: int | None = None) -> None:
    """Save by extension: JPEG at ``quality``, PNG or BMP (all deterministic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(rgb) if isinstance(rgb, np.ndarray) else rgb
    ext = path.suffix.lower()
    if ext in (".jpg", ".jpeg"):
        im.save(path, "JPEG", quality=int(quality or 90))
    elif ext == ".png":
        im.save(path, "PNG", compress_level=1)
    elif ext == ".bmp":
        im.save(path, "BMP")
    else:  # pragma: no cover - guarded by the writers
        raise ValueError(f"unsupported image type {path}")


def one_decimal(x: float) -> str:
    """Float formatting of the ISIC CSVs (``0.0``/``1.0``)."""
    return f"{float(x):.1f}"


@dataclass
class Rec:
    """One image of a replica (truth row plus what the metadata writers need)."""

    image_id: str
    label: int
    split: str
    path: str                         # relative to the dataset folder
    group: int = -1                   # lesion key (images of one lesion share it)
    meta: dict = field(default_factory=dict)


_SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}


class Writer:
    """State shared by the per-dataset writers of one :func:`write_replicas` call."""

    def __init__(self, out: Path, scale: float, seed: int):
        self.out, self.scale, self.seed = out, scale, int(seed)
        self.counts = requested_counts(scale)
        self.recs: dict[str, list[Rec]] = {}
        self.edges: list[tuple[tuple[str, str], tuple[str, str]]] = []
        self.resized: set[tuple[str, str]] = set()
        self._used_isic: set[int] = set()
        self._isic_rng = np.random.default_rng([self.seed, 0, 99])
        self.n_rendered = 0

    # random streams ----------------------------------------------------------------------
    def rng(self, short: str, *key: int) -> np.random.Generator:
        """A generator keyed by seed, dataset and ``key`` (order-independent)."""
        return stream(self.seed, short, *key)

    def isic_ids(self, n: int, lo: int, hi: int) -> list[str]:
        """``n`` fresh ISIC ids in ``[lo, hi)``, unique across all ISIC-style datasets."""
        out: list[int] = []
        while len(out) < n:
            for c in self._isic_rng.integers(lo, hi, size=2 * (n - len(out)) + 8):
                c = int(c)
                if c not in self._used_isic and len(out) < n:
                    self._used_isic.add(c)
                    out.append(c)
        return [f"ISIC_{c:07d}" for c in sorted(out)]

    def lesion(self, short: str, key: int, label: int) -> Lesion:
        """The lesion ``key`` of dataset ``short`` (the same lesion for the same key)."""
        return draw_lesion(self.rng(short, 2, key), label, regions=short == "ph2")

    # images ------------------------------------------------------------------------------
    def render(self, short: str, recs: list[Rec], style: Style | None = None,
               size: tuple[int, int] | None = None, key_offset: int = 0,
               keep_views: bool = False) -> dict[str, Any]:
        """Render and save every record in ``recs`` (path extension chooses the format).

        Each image gets its own generator keyed by ``key_offset`` plus its position in
        ``recs``; the lesion is keyed by ``rec.group`` (or the image key when ``group < 0``),
        so the images of one lesion show the same lesion. With ``keep_views`` the result maps
        each path to ``(lesion, placement, (h, w))`` (for masks); otherwise it is empty.
        """
        style = style or STYLES[short]
        views: dict[str, Any] = {}
        lesions: dict[int, Lesion] = {}
        uses: dict[int, int] = {}
        for rec in recs:
            uses[rec.group] = uses.get(rec.group, 0) + 1
        for i, rec in enumerate(recs):
            key = key_offset + i
            rng = self.rng(short, 1, key)
            lkey = rec.group if rec.group >= 0 else 10_000_000 + key
            les = lesions.get(lkey) or self.lesion(short, lkey, rec.label)
            if rec.group >= 0 and uses[rec.group] > 1:  # keep only lesions seen again
                lesions[lkey] = les
            rgb, placement, hw = render_view(les, style, rng, size)
            q = int(rng.integers(style.quality[0], style.quality[1] + 1))
            save_image(self.out / short / rec.path, rgb, q)
            if keep_views:
                views[rec.path] = (les, placement, hw)
            self.n_rendered += 1
        return views

    def copy(self, src: tuple[str, str], dst_short: str, dst_path: str) -> None:
        """Copy a file byte for byte (``src`` is ``(short, relative path)``)."""
        target = self.out / dst_short / dst_path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.out / src[0] / src[1], target)

    def planted(self, a: tuple[str, str], b: tuple[str, str], resized: bool = False) -> None:
        """Record that ``b`` (dataset, image id) is a copy of ``a``."""
        self.edges.append((a, b))
        if resized:
            self.resized.add(b)

    # bookkeeping -------------------------------------------------------------------------
    def finish(self, short: str, recs: list[Rec], hidden_labels: Iterable[str] = ()) -> None:
        """Write ``SYNTHETIC_truth.csv`` and ``SYNTHETIC.json`` for one dataset."""
        hidden = set(hidden_labels)
        recs = sorted(recs, key=lambda r: (_SPLIT_ORDER[r.split], r.image_id))
        self.recs[short] = recs
        ids = [r.image_id for r in recs]
        assert len(set(ids)) == len(ids), f"{short}: duplicate image ids"
        counts: dict[str, dict[str, int]] = {}
        for r in recs:
            c = counts.setdefault(r.split, {"n": 0, "melanoma": 0})
            c["n"] += 1
            c["melanoma"] += int(r.label == 1)
        write_csv(self.out / short / "SYNTHETIC_truth.csv", ["image_id", "label", "split", "path"],
                  ([r.image_id, -1 if r.split in hidden else r.label, r.split, r.path] for r in recs))
        info = {"synthetic": True, "generator": GENERATOR, "seed": self.seed, "scale": self.scale,
                "dataset": short, "counts": counts,
                "unlabelled_splits": sorted(hidden),
                "note": "SYNTHETIC data: procedurally drawn lesions and invented metadata."}
        (self.out / short / "SYNTHETIC.json").write_text(json.dumps(info, indent=2) + "\n",
                                                       encoding="utf-8")


def choice(rng: np.random.Generator, values: list, p: list[float] | None = None):
    """One item of ``values`` (a Python object, not a NumPy scalar)."""
    i = int(rng.choice(len(values), p=None if p is None else np.asarray(p) / np.sum(p)))
    return values[i]



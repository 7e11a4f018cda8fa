"""Writing all SYNTHETIC replicas: :func:`write_replicas` runs the release writers of
:mod:`~melanoma.data.synthetic.layouts_isic` and :mod:`~melanoma.data.synthetic.layouts_other` in
the order of :data:`~melanoma.data.synthetic.plan.DATASETS` and writes ``PLANTED_DUPLICATES.csv``;
:func:`main` is ``python -m melanoma.data.synthetic``."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from melanoma.data.synthetic.draw import one_blas_thread
from melanoma.data.synthetic.layouts_isic import ISIC_WRITERS
from melanoma.data.synthetic.layouts_other import OTHER_WRITERS
from melanoma.data.synthetic.plan import DATASETS, GENERATOR, planted_pairs
from melanoma.data.synthetic.writer import Writer, write_csv

_WRITERS: dict[str, Callable[[Writer], None]] = {**ISIC_WRITERS, **OTHER_WRITERS}


def write_replicas(out_dir: str | Path, scale: float = 1.0, seed: int = 0,
                   only: list[str] | None = None, progress: bool = False) -> dict[str, Any]:
    """Write SYNTHETIC miniature copies of all eleven releases in their official layouts.

    Parameters
    ----------
    out_dir : str or Path
        Target folder; each release goes to ``out_dir/<short>/`` (existing replica folders are
        replaced, other content of ``out_dir`` is left alone).
    scale : float
        Multiplier on every count (:data:`~melanoma.data.synthetic.plan.BASE_COUNTS`); each class
        keeps at least :data:`~melanoma.data.synthetic.plan.MIN_PER_CLASS` images per split.
        ``1.0`` writes about 2,000 images.
    seed : int
        Seed of everything drawn; the same seed gives byte-identical files.
    only : list of str, optional
        Write just these releases (short names). A release whose planted copies come from
        another release (e.g. Kaggle from ISIC 2017) needs that release in the list too; a
        ``ValueError`` names it.
    progress : bool
        A progress bar over the releases (tqdm: a widget in Jupyter, text elsewhere).

    Returns
    -------
    dict
        ``{"out_dir", "seed", "scale", "seconds", "n_images", "n_files", "n_rendered",
        "n_planted_pairs", "counts": {short: {split: {"n", "melanoma"}}}}``.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    w = Writer(out, float(scale), int(seed))
    if only is not None:
        unknown = sorted(set(only) - set(DATASETS))
        if unknown:
            raise ValueError(f"only: unknown release(s) {unknown}; valid: {list(DATASETS)}")
    todo = [s for s in DATASETS if only is None or s in only]
    for short in todo:  # never delete anything but an earlier replica
        target = out / short
        if target.exists() and any(target.iterdir()) and not (target / "SYNTHETIC.json").exists():
            raise FileExistsError(f"{target} exists and is not a synthetic replica "
                                  "(no SYNTHETIC.json); refusing to overwrite it")
    from tqdm.auto import tqdm

    with one_blas_thread():
        for short in tqdm(todo, desc="SYNTHETIC replicas", unit="release", disable=not progress):
            target = out / short
            if target.exists():
                shutil.rmtree(target)
            target.mkdir(parents=True)
            # a marker first, so that an interrupted run can be overwritten by the next one
            (target / "SYNTHETIC.json").write_text(
                json.dumps({"synthetic": True, "generator": GENERATOR, "complete": False}) + "\n",
                encoding="utf-8")
            try:
                _WRITERS[short](w)
            except KeyError as e:
                raise ValueError(f"only: the {short} replica copies images of {e.args[0]}; "
                                 f"add {e.args[0]!r} to only") from None
    pairs = planted_pairs(w.edges, w.resized)
    write_csv(out / "PLANTED_DUPLICATES.csv",
              ["kind", "dataset_a", "image_id_a", "dataset_b", "image_id_b"], pairs)
    counts = {s: {sp: dict(c) for sp, c in json.loads(
        (out / s / "SYNTHETIC.json").read_text())["counts"].items()} for s in todo}
    n_files = sum(1 for s in todo for p in (out / s).rglob("*") if p.is_file())
    return {"out_dir": str(out), "seed": int(seed), "scale": float(scale),
            "seconds": round(time.perf_counter() - t0, 3),
            "n_images": sum(len(v) for v in w.recs.values()), "n_files": n_files,
            "n_rendered": w.n_rendered, "n_planted_pairs": len(pairs), "counts": counts}


def main(argv: list[str] | None = None) -> int:
    """``python -m melanoma.data.synthetic OUT [--scale S] [--seed N]``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m melanoma.data.synthetic",
                                 description="Write SYNTHETIC replicas of the 11 releases.")
    ap.add_argument("out_dir")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    s = write_replicas(a.out_dir, a.scale, a.seed)
    print(json.dumps({k: v for k, v in s.items() if k != "counts"}, indent=2))
    return 0

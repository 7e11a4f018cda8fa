"""The plan of the SYNTHETIC replicas: which releases, how many images of each class per split,
the random streams (keyed by seed, release and item) and the planted duplicates.

Nothing here draws a pixel or writes a file: :mod:`melanoma.data.synthetic.draw` draws the
lesions, :mod:`melanoma.data.synthetic.writer` and the ``layouts_*`` modules write the releases.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

GENERATOR = "melanoma.data.synthetic"

#: Datasets in generation order (a copy source is written before its copies) with a fixed
#: integer used to key the random streams; the integers never change, so adding a dataset
#: does not change the bytes of the others.
DATASETS: dict[str, int] = {
    "isic2016": 1, "isic2017": 2, "isic2018": 3, "isic2019": 4, "isic2020": 5,
    "derm7pt": 6, "ph2": 7, "mednode": 9, "pad_ufes_20": 8, "kaggle": 10, "ham10000": 11,
}

#: ``(n, melanoma)`` per released split at ``scale=1``. HAM10000 is ISIC 2018's training set.
BASE_COUNTS: dict[str, dict[str, tuple[int, int]]] = {
    "isic2016": {"train": (90, 17), "test": (38, 8)},
    "isic2017": {"train": (200, 37), "val": (30, 6), "test": (60, 12)},
    "isic2018": {"train": (200, 22), "val": (30, 4), "test": (60, 7)},
    "isic2019": {"train": (250, 45)},
    "isic2020": {"train": (250, 20), "test": (60, 5)},
    "derm7pt": {"train": (40, 8), "val": (20, 4), "test": (40, 8)},
    "ph2": {"train": (60, 12)},
    "pad_ufes_20": {"train": (120, 8)},
    "mednode": {"train": (50, 20)},
    "kaggle": {"train": (120, 55), "test": (40, 18)},
    "ham10000": {"train": (200, 22)},
}

#: Planted copies at ``scale=1`` (scaled like the counts, at least ``minimum``).
_DUPS = {
    "isic2019_from_isic2018": (40, 2),
    "isic2019_from_isic2017_test": (5, 1),
    "kaggle_from_isic2017_test": (3, 1),
    "kaggle_from_isic2018_test": (3, 1),
    "isic2020_pairs": (3, 1),
}

MIN_PER_CLASS = 3


def round_half_up(x: float) -> int:
    """``x`` rounded to the nearest integer, halves up (every count and pixel size here)."""
    return int(np.floor(x + 0.5))


def _scaled(n: int, scale: float, minimum: int) -> int:
    return max(minimum, round_half_up(n * scale))


def requested_counts(scale: float = 1.0) -> dict[str, dict[str, dict[str, int]]]:
    """Counts per dataset and split that :func:`write_replicas` produces at ``scale``.

    Melanoma and non-melanoma counts are scaled separately and each is at least
    :data:`MIN_PER_CLASS`.

    Parameters
    ----------
    scale : float
        Multiplier on :data:`BASE_COUNTS`.

    Returns
    -------
    dict
        ``{short: {split: {"n": int, "melanoma": int}}}``; for ``isic2020``'s ``test`` split the
        melanoma count is that of the held-out labels.
    """
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale!r}")
    out: dict[str, dict[str, dict[str, int]]] = {}
    for short, splits in BASE_COUNTS.items():
        src = BASE_COUNTS["isic2018"] if short == "ham10000" else splits
        out[short] = {}
        for split, (n, mel) in src.items():
            if short == "ham10000" and split != "train":
                continue
            m = _scaled(mel, scale, MIN_PER_CLASS)
            b = _scaled(n - mel, scale, MIN_PER_CLASS)
            out[short][split] = {"n": m + b, "melanoma": m}
    # ISIC 2017 training contains all of ISIC 2016's test images.
    t16, tr17 = out["isic2016"]["test"], out["isic2017"]["train"]
    tr17["melanoma"] = max(tr17["melanoma"], t16["melanoma"] + 1)
    tr17["n"] = tr17["melanoma"] + max(tr17["n"] - tr17["melanoma"], t16["n"] - t16["melanoma"] + 1)
    return out


def n_dups(key: str, scale: float) -> int:
    """How many planted copies of kind ``key`` (a key of ``_DUPS``) at ``scale``."""
    n, minimum = _DUPS[key]
    return _scaled(n, scale, minimum)


def shuffled_labels(rng: np.random.Generator, n: int, mel: int) -> np.ndarray:
    """``mel`` ones and ``n - mel`` zeros in random order."""
    lab = np.array([1] * mel + [0] * (n - mel), dtype=np.int64)
    rng.shuffle(lab)
    return lab


def lesion_groups(rng: np.random.Generator, labels: np.ndarray, mean_size: float) -> np.ndarray:
    """Group indices (label-pure) for items with ``labels``; groups average ``mean_size``."""
    gid = np.empty(len(labels), np.int64)
    g = 0
    for lab in (0, 1):
        idx = np.flatnonzero(labels == lab)
        rng.shuffle(idx)
        i = 0
        while i < len(idx):
            k = 1 + int(rng.poisson(mean_size - 1)) if mean_size > 1 else 1
            gid[idx[i:i + k]] = g
            g += 1
            i += k
    perm = rng.permutation(g)
    return perm[gid]


def owners(rng: np.random.Generator, n: int, mean_extra: float) -> tuple[np.ndarray, int]:
    """Random owners of ``n`` items (patients of lesions or images): in a random order, each
    owner takes the next ``1 + Poisson(mean_extra)`` items (the last one what is left).

    Returns the owner index of each item and the number of owners."""
    owner = np.empty(n, np.int64)
    order = rng.permutation(n)
    p, i = 0, 0
    while i < len(order):
        k = 1 + int(rng.poisson(mean_extra))
        owner[order[i:i + k]] = p
        p += 1
        i += k
    return owner, p


def pick_records(rng: np.random.Generator, recs: list, k: int, max_mel: int, max_ben: int) -> list:
    """``k`` records at random with at most ``max_mel`` melanomas and ``max_ben`` others (the
    sources of planted copies; records have ``label`` and ``image_id``), sorted by id."""
    order = rng.permutation(len(recs))
    out, nm, nb = [], 0, 0
    for i in order:
        r = recs[int(i)]
        if len(out) == k:
            break
        if r.label == 1 and nm < max_mel:
            out.append(r)
            nm += 1
        elif r.label == 0 and nb < max_ben:
            out.append(r)
            nb += 1
    return sorted(out, key=lambda r: r.image_id)


def stream(seed: int, short: str, *key: int) -> np.random.Generator:
    """The random stream of release ``short`` and item ``key`` for ``seed`` (order-independent:
    drawing from one stream never shifts another)."""
    return np.random.default_rng([int(seed), DATASETS[short], *map(int, key)])


def planted_pairs(edges: Iterable[tuple[tuple[str, str], tuple[str, str]]],
                  resized: set[tuple[str, str]]) -> list[list[str]]:
    """All pairs of (dataset, id) that show the same picture (closure over planted copies).

    ``edges`` are the planted ``(source, copy)`` pairs, ``resized`` the copies that were resized
    and re-encoded. Rows are ``[kind, dataset_a, image_id_a, dataset_b, image_id_b]`` with
    ``kind`` ``id``, ``pixels`` or ``resized`` (see ``PLANTED_DUPLICATES.csv``)."""
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def find(x: tuple[str, str]) -> tuple[str, str]:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for x in list(parent):
        groups.setdefault(find(x), []).append(x)
    rank = {s: i for i, s in enumerate(DATASETS)}
    rows = []
    for members in groups.values():
        members.sort(key=lambda x: (rank[x[0]], x[1]))
        for i, a in enumerate(members):
            for b in members[i + 1:]:
                if a in resized or b in resized:
                    kind = "resized"
                elif a[1] == b[1]:
                    kind = "id"
                else:
                    kind = "pixels"
                rows.append([kind, a[0], a[1], b[0], b[1]])
    order = {"id": 0, "pixels": 1, "resized": 2}
    rows.sort(key=lambda r: (order[r[0]], rank[r[1]], r[2], rank[r[3]], r[4]))
    return rows

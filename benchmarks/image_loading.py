"""Image loading: the pre-resized uint8 cache (.npy) vs decoding the original files every epoch.

For the same images, img/s of

* ``cache``  — ``ImageCache.get`` (one ``np.load`` of a uint8 (H, W, 3) array, shorter side 256);
* ``decode`` — ``open_image`` (safe decode of the original JPEG/BMP/PNG) + ``resize_shorter(256)``,
  i.e. what every epoch would cost without the cache;

single process (a plain loop) and through a ``torch.utils.data.DataLoader`` with 2 workers (worker
start included, as the trainer's non-persistent loaders pay it every epoch). Also single process
with the paper's training augmentation at 224 px after loading (the loop path's real per-image
cost). Images: the SYNTHETIC replicas (small JPEG/BMP/PNG, ~260×200 px) and, when
``../shared/realdata`` exists, real MED-NODE (clinical JPEG, ~1000 px), ISIC 2017 (JPEG, resized to
256×256 in that folder) and PH2 (BMP, 765×573) images, read in place; their cache lives in a
temporary folder removed at exit.

Configurations are measured interleaved (cache, decode, cache, decode, ...) after an untimed pass
that warms the OS page cache for both, and the median of the repeats is reported.

    .venv/bin/python benchmarks/image_loading.py [--work DIR] [--quick] [--n 400] [--no-real]
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import common  # noqa: F401  (puts the repository on sys.path)
import torch
from common import (REALDATA, Timer, command_line, json_comment, loadavg, machine_facts, manifests,
                    md_table, median, parser, print_table, section_header, synthetic_work,
                    write_results)

from melanoma.data.cache import ImageCache
from melanoma.data.images import file_hash, open_image, resize_shorter
from melanoma.train.transforms import train_transform

SHORTER = 256


class CacheSet(torch.utils.data.Dataset):
    """Reads the pre-resized uint8 array from the cache."""

    def __init__(self, keys, cache: ImageCache, transform=None):
        self.keys, self.cache, self.transform = list(keys), cache, transform

    def __len__(self):
        return len(self.keys)

    def __getitem__(self, i):
        a = self.cache.get(self.keys[i])
        return self.transform(a) if self.transform else torch.from_numpy(a)


class DecodeSet(torch.utils.data.Dataset):
    """Decodes the original file and resizes it (shorter side 256), as ingest does once."""

    def __init__(self, paths, transform=None, shorter: int = SHORTER):
        self.paths, self.transform, self.shorter = [str(p) for p in paths], transform, shorter

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        a = resize_shorter(open_image(self.paths[i]), self.shorter)
        return self.transform(a) if self.transform else torch.from_numpy(a)


def _as_list(batch):  # images differ in size: no stacking
    return batch


def _pass(ds, workers: int, loader=None) -> float:
    """Seconds to read every item of ``ds`` once (``loader``: a persistent DataLoader to reuse)."""
    with Timer() as t:
        if loader is not None:
            for _ in loader:
                pass
        elif workers == 0:
            for i in range(len(ds)):
                ds[i]
        else:
            dl = torch.utils.data.DataLoader(ds, batch_size=16, num_workers=workers,
                                             collate_fn=_as_list, persistent_workers=False)
            for _ in dl:
                pass
    return t.s


def measure(name: str, keys, paths, cache: ImageCache, *, repeats: int, workers: int = 2,
            augment: bool = True, log=print) -> list[dict]:
    """Interleaved cache/decode passes; one row per (path, setting) with the median img/s.

    Settings: ``0`` a plain loop; ``W new`` a DataLoader with W workers made for each pass (as the
    trainer does every epoch: worker start-up included); ``W persistent`` the same loader reused
    (steady state, start-up excluded); ``0 + augment`` a plain loop with the paper's augmentation.
    """
    n = len(keys)
    configs = [("0", 0, None), (f"{workers} new", workers, None),
               (f"{workers} persistent", workers, None)]
    if augment:
        configs.append(("0", 0, "augment"))
    sets, loaders = {}, {}
    for label, w, tf in configs:
        t = train_transform(224) if tf else None
        for path, ds in (("cache", CacheSet(keys, cache, t)), ("decode", DecodeSet(paths, t))):
            sets[(path, label, tf)] = ds
            if label.endswith("persistent"):
                loaders[(path, label, tf)] = torch.utils.data.DataLoader(
                    ds, batch_size=16, num_workers=w, collate_fn=_as_list, persistent_workers=True)
    # warm the page cache for both and start the persistent workers (untimed)
    _pass(sets[("cache", "0", None)], 0)
    _pass(sets[("decode", "0", None)], 0)
    for dl in loaders.values():
        _pass(None, 0, dl)
    secs: dict = {k: [] for k in sets}
    for r in range(repeats):
        for label, w, tf in configs:
            for path in (("cache", "decode") if r % 2 == 0 else ("decode", "cache")):
                torch.manual_seed(r)
                k = (path, label, tf)
                secs[k].append(_pass(sets[k], w, loaders.get(k)))
    loaders.clear()  # stops the persistent workers
    rows = []
    for label, w, tf in configs:
        c = n / median(secs[("cache", label, tf)])
        d = n / median(secs[("decode", label, tf)])
        aug = "+ train augmentation 224 px" if tf else ""
        rows.append({"images": name, "path": f"cache .npy {aug}".strip(), "workers": label,
                     "n": n, "img/s": c, "ratio cache/decode": c / d})
        rows.append({"images": name, "path": f"decode original {aug}".strip(), "workers": label,
                     "n": n, "img/s": d, "ratio cache/decode": None})
        log(f"[image_loading] {name:<32} workers {label:<12} {aug:<27} cache {c:8.1f} img/s  "
            f"decode {d:8.1f} img/s  ratio {c / d:5.2f}")
    return rows


def synthetic_sample(work: Path, n: int, seed: int = 0):
    """Up to ``n`` distinct images spread over the 11 replicas (so JPEG, BMP and PNG all occur)."""
    import pandas as pd

    m = manifests(work).drop_duplicates("content_hash").sample(frac=1.0, random_state=seed)
    per = max(1, n // m["dataset"].nunique())
    first = m.groupby("dataset").cumcount() < per
    s = pd.concat([m[first], m[~first]]).head(n)
    paths = [work / "synthetic" / ds / p for ds, p in zip(s["dataset"], s["path"])]
    ext = s["path"].str.rsplit(".", n=1).str[-1].str.lower().value_counts().to_dict()
    return list(s["content_hash"]), paths, ext, (float(s["width"].median()), float(s["height"].median()))


def real_sets(n_isic: int) -> dict[str, list[Path]]:
    """Real files, read in place (never copied): name → paths."""
    out = {}
    mn = sorted((REALDATA / "MEDNODE" / "complete_mednode_dataset").glob("*/*.jpg"))
    if mn:
        out["MED-NODE (real JPEG, ~1000 px)"] = mn
    isic = sorted((REALDATA / "ISIC2017").glob("ISIC-2017_Training_Data/ISIC_*.jpg"))
    if isic:
        out["ISIC 2017 (real JPEG, 256×256)"] = isic[:n_isic]
    ph2 = sorted((REALDATA / "PH2" / "PH2 Dataset images").glob("*/*_Dermoscopic_Image/*.bmp"))
    if ph2:
        out["PH2 (real BMP, 765×573)"] = ph2
    return out


def build_cache(paths, root: Path) -> tuple[list[str], ImageCache]:
    cache = ImageCache(root, SHORTER)
    keys = []
    for p in paths:
        data = Path(p).read_bytes()
        k = file_hash(data)
        cache.put(k, resize_shorter(open_image(p, data=data), SHORTER))
        keys.append(k)
    return keys, cache


def summary(rows: list[dict], workers: int) -> str:
    """A few sentences computed from the rows."""
    def ratio(images, setting, aug=False):
        for r in rows:
            if (r["images"] == images and r["workers"] == setting and r["ratio cache/decode"]
                    and ("augmentation" in r["path"]) == aug):
                return r["ratio cache/decode"]
        return None

    parts = []
    for images in dict.fromkeys(r["images"] for r in rows):
        r0, rp, ra = ratio(images, "0"), ratio(images, f"{workers} persistent"), ratio(images, "0", True)
        parts.append(f"{images}: ×{r0:.1f} in one process, ×{rp:.1f} with {workers} persistent "
                     f"workers, ×{ra:.1f} with the augmentation" if None not in (r0, rp, ra) else images)
    return ("Cache over decode: " + "; ".join(parts) + ". The gain grows with the original's size "
            "(real ISIC releases are 1–30 MP, far above these samples); through DataLoader workers "
            "the .npy path is capped by moving arrays between processes, and with the paper's "
            "augmentation the transforms (rotation, colour jitter) dominate the per-image cost, "
            "which the cache does not remove.")


def main(argv=None) -> list[dict]:
    ap = parser(__doc__)
    ap.add_argument("--n", type=int, default=None, help="synthetic images (default 400; quick 160)")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 3; quick 2)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the second setting")
    ap.add_argument("--scale", type=float, default=0.3, help="synthetic scale of the work folder")
    ap.add_argument("--no-real", action="store_true", help="skip ../shared/realdata")
    args = ap.parse_args(argv)
    n = args.n or (160 if args.quick else 400)
    repeats = args.repeats or (2 if args.quick else 3)
    min_real = 64 if args.quick else 128
    facts = machine_facts()
    torch.set_num_threads(1)  # one image at a time: intra-op threads only add overhead here

    work = synthetic_work(args.work, scale=args.scale)
    keys, paths, ext, wh = synthetic_sample(work, n)
    rows = measure("SYNTHETIC replicas", keys, paths, ImageCache(work / "cache", SHORTER),
                   repeats=repeats, workers=args.workers)
    real_note = "real samples: not present"
    if not args.no_real and REALDATA.is_dir():
        tmp = Path(tempfile.mkdtemp(prefix="melanoma-bench-realcache-"))
        try:
            for name, ps in real_sets(n_isic=min_real).items():
                ks, cache = build_cache(ps, tmp)
                reps = -(-min_real // len(ps))  # small sets cycle so that a pass has >= min_real items
                rows += measure(name, ks * reps, list(ps) * reps, cache, repeats=repeats,
                                workers=args.workers)
            real_note = (f"real samples from `{REALDATA}` read in place; their cache was built in a "
                         "temporary folder and deleted; sets smaller than "
                         f"{min_real} images are cycled")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    load_end = loadavg()
    print()
    print_table(rows)

    aug = [r for r in rows if r["images"] == "SYNTHETIC replicas" and "augmentation" in r["path"]
           and r["path"].startswith("cache")]
    data = {"rows": rows, "synthetic_formats": ext, "synthetic_median_wh": wh,
            "cache_augment_img_per_s_per_core": aug[0]["img/s"] if aug else None}
    md = section_header("Image loading: pre-resized cache vs decoding the originals", facts,
                        load_end, command_line())
    md += (f"{len(keys)} distinct SYNTHETIC images (formats {ext}; median {wh[0]:.0f}×{wh[1]:.0f} px) "
           f"and {real_note}. `workers 0` = a plain loop in one process; `{args.workers} new` = a "
           f"DataLoader with {args.workers} worker processes made for each pass (start-up included, "
           f"as the trainer's per-epoch loaders pay it); `{args.workers} persistent` = the same "
           "loader reused (steady state). *cache* = `ImageCache.get` (uint8 .npy, shorter side "
           "256); *decode* = `open_image` + `resize_shorter(256)` of the original file. Median of "
           f"{repeats} interleaved passes after a warm-up pass (files in the OS page cache for both). "
           "torch intra-op threads: 1.\n\n")
    md += md_table(rows, ["images", "path", "workers", "n", "img/s", "ratio cache/decode"], nd=2)
    md += "\n" + summary(rows, args.workers) + "\n"
    md += json_comment(data)
    if not args.no_write:
        write_results("image_loading", md, args.results)
    return rows


if __name__ == "__main__":
    main()

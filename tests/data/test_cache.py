"""melanoma.data.cache: the pre-resized image store, keyed by the content of the file."""

from __future__ import annotations

import numpy as np
import pytest

from melanoma.data.cache import ImageCache
from melanoma.data.images import file_hash

RNG = np.random.default_rng(0)


def _rgb(h=20, w=30):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_round_trip_is_exact_and_laid_out_by_size_and_key(tmp_path):
    cache = ImageCache(tmp_path, 24)
    key = "ab" + "0" * 30
    img = _rgb()
    p = cache.put(key, img)
    assert p == tmp_path / "s24" / "ab" / f"{key}.npy" == cache.path(key)
    assert key in cache and ("cd" + "0" * 30) not in cache
    back = cache.get(key)
    assert back.dtype == np.uint8 and back.shape == img.shape
    np.testing.assert_array_equal(back, img)
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [f"{key}.npy"]  # no temp file left


def test_the_same_bytes_under_another_name_hit_the_same_entry(tmp_path):
    """Ingest keys the cache by the file's content hash: a renamed copy (another dataset holding
    the same file, a re-ingest) finds the entry already there and writes nothing."""
    data = b"\x89PNG... the bytes of one image file"
    (tmp_path / "a.png").write_bytes(data)
    (tmp_path / "copy_b.png").write_bytes(data)
    ka, kb = (file_hash((tmp_path / n).read_bytes()) for n in ("a.png", "copy_b.png"))
    assert ka == kb
    cache = ImageCache(tmp_path / "cache")
    first = _rgb()
    p = cache.put(ka, first)
    mtime = p.stat().st_mtime_ns
    assert cache.put(kb, _rgb()) == p           # present: a no-op, the first pixels stay
    assert p.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(cache.get(kb), first)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 1
    assert file_hash(data + b"x") not in cache  # other bytes: another key, not in the cache


def test_each_shorter_side_is_its_own_store(tmp_path):
    small, large = ImageCache(tmp_path, 16), ImageCache(tmp_path, 256)
    small.put("k" * 32, _rgb(16, 20))
    assert "k" * 32 in small and "k" * 32 not in large
    assert small.dir != large.dir and small.dir.parent == large.dir.parent == tmp_path


def test_get_many_keeps_the_order(tmp_path):
    cache = ImageCache(tmp_path)
    imgs = {f"{i:02d}" * 16: _rgb() for i in range(3)}
    for k, v in imgs.items():
        cache.put(k, v)
    keys = list(imgs)[::-1] + [list(imgs)[0]]
    for got, k in zip(cache.get_many(keys), keys):
        np.testing.assert_array_equal(got, imgs[k])


def test_a_missing_entry_says_to_ingest(tmp_path):
    cache = ImageCache(tmp_path)
    with pytest.raises(KeyError, match=r"image ff+ is not in the cache .*s256; run `melanoma ingest` first"):
        cache.get("f" * 32)


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), np.uint8),
                                 np.zeros((4, 4, 4), np.uint8)])
def test_only_uint8_rgb_arrays_are_stored(tmp_path, bad):
    cache = ImageCache(tmp_path)
    with pytest.raises(ValueError, match=r"cache entries are uint8 \(H, W, 3\)"):
        cache.put("e" * 32, bad)
    assert "e" * 32 not in cache and not list(tmp_path.rglob("*.npy"))


def test_a_non_contiguous_view_is_stored_as_its_pixels(tmp_path):
    cache = ImageCache(tmp_path)
    img = _rgb(20, 40)[:, ::2]  # a strided view
    cache.put("d" * 32, img)
    np.testing.assert_array_equal(cache.get("d" * 32), img)


def test_shorter_side_below_16_is_refused(tmp_path):
    with pytest.raises(ValueError, match="cache shorter side must be >= 16, got 8"):
        ImageCache(tmp_path, 8)
    assert ImageCache(tmp_path, 16.0).dir.name == "s16"  # an integral float is taken as the int

"""melanoma.train.dataset: cached images as a torch Dataset, each item augmented under its own
seed (by position, leaving the caller's RNG alone); one intra-op thread for tiny per-image ops."""

from __future__ import annotations

import pytest
import torch

from melanoma.data.cache import ImageCache
from melanoma.data.manifest import read_manifest
from melanoma.train import dataset as D
from melanoma.train.transforms import train_transform

from tests.tinywork import CACHE, standard_work

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


@pytest.fixture()
def work(tmp_path):
    return standard_work(tmp_path / "work")


def test_cached_images_draw_by_position_and_leave_the_callers_rng_alone(work):
    m = read_manifest(work, "isic2017")
    ds = D.CachedImages(m["content_hash"][:4], m["label"][:4], ImageCache(work / "cache", CACHE),
                        train_transform(16, mean=MEAN, std=STD), seed=11)
    forward = [ds[(p, p)][0] for p in range(4)]
    backward = [ds[(p, p)][0] for p in reversed(range(4))][::-1]
    assert all(torch.equal(x, y) for x, y in zip(forward, backward))
    assert not torch.equal(ds[(0, 0)][0], ds[(1, 0)][0])          # the same image at another position
    assert torch.equal(ds[2][0], ds[(2, 2)][0]) and ds[2][1] == int(m["label"].iloc[2])
    torch.manual_seed(5)
    want = torch.rand(3)
    torch.manual_seed(5)
    ds[(0, 0)]
    assert torch.equal(torch.rand(3), want)
    n = torch.get_num_threads()
    with D.single_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == n


def test_item_seed_is_a_stable_function_of_seed_and_position():
    seeds = {D.item_seed(s, p) for s in range(3) for p in range(100)}
    assert len(seeds) == 300 and all(0 <= x < 2**60 for x in seeds)
    assert D.item_seed(1, 2) == D.item_seed(1, 2)

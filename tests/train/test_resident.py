"""Resident images and the batched augmentation, pinned to torchvision's own functional ops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from melanoma.data.cache import ImageCache
from melanoma.train import resident as R
from melanoma.train.transforms import eval_transform

S = 16


def _params(b, *, angle=0.0, scale=1.0, top=3, left=5, h=S, w=S, hflip=False, vflip=False,
            brightness=1.0, contrast=1.0, saturation=1.0, hue=0.0, order=None):
    def full(v):
        return torch.as_tensor(v, dtype=torch.float64).expand(b).clone()
    return R.AugParams(top=full(top), left=full(left), height=full(h), width=full(w), angle=full(angle),
                       scale=full(scale), hflip=torch.as_tensor(hflip).expand(b).clone(),
                       vflip=torch.as_tensor(vflip).expand(b).clone(), brightness=full(brightness),
                       contrast=full(contrast), saturation=full(saturation), hue=full(hue),
                       order=torch.arange(4).repeat(b, 1) if order is None else order)


@pytest.fixture()
def x():
    return torch.rand(3, 3, 24, 30, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("angle", [0, 90, -90, 180])
@pytest.mark.parametrize("hflip,vflip", [(False, False), (True, False), (False, True), (True, True)])
def test_geometry_equals_torchvision_exact_cases(x, angle, hflip, vflip):
    """A crop of the output size (no resampling) and right-angle rotations are exact in both."""
    out = R.geometry(x.clone(), _params(3, angle=angle, hflip=hflip, vflip=vflip), S)
    ref = TF.resized_crop(x, 3, 5, S, S, [S, S], antialias=True)
    ref = TF.affine(ref, angle=angle, translate=[0, 0], scale=1.0, shear=[0.0, 0.0])
    if hflip:
        ref = TF.horizontal_flip(ref)
    if vflip:
        ref = TF.vertical_flip(ref)
    assert (out - ref).abs().max() < 1e-5


def test_geometry_upscaling_crop_equals_resized_crop(x):
    out = R.geometry(x.clone(), _params(3, top=2, left=7, h=8, w=11), S)
    ref = TF.resized_crop(x, 2, 7, 8, 11, [S, S], antialias=True)  # upscaling: antialias is moot
    assert (out - ref).abs().max() < 1e-5


def test_geometry_zoom_and_rotation_fill_like_random_affine(x):
    # zoom 2 (angle 0): the bilinear affine of torchvision, same pixels
    out = R.geometry(x.clone(), _params(3, scale=2.0), S)
    crop = TF.resized_crop(x, 3, 5, S, S, [S, S], antialias=True)
    ref = TF.affine(crop, angle=0, translate=[0, 0], scale=2.0, shear=[0.0, 0.0],
                    interpolation=v2.InterpolationMode.BILINEAR)
    assert (out - ref).abs().max() < 1e-5
    # zoom out 0.5 at 45°: corners outside the rotated crop are filled with 0, as RandomAffine fills
    out = R.geometry(x.clone() + 0.1, _params(3, angle=45, scale=0.5), S)
    assert float(out[..., 0, 0].abs().max()) == 0.0 and float(out[..., S // 2, S // 2].min()) > 0


@pytest.mark.parametrize("op,fn", [(0, TF.adjust_brightness), (1, TF.adjust_contrast),
                                   (2, TF.adjust_saturation), (3, TF.adjust_hue)])
def test_colour_ops_equal_torchvision_per_image(x, op, fn):
    factors = torch.tensor([0.1, -0.07, 0.03]) if op == 3 else torch.tensor([0.7, 1.0, 1.3])
    out = R._adjust(op, x.clone(), factors)
    ref = torch.stack([fn(x[i], float(f)) for i, f in enumerate(factors)])
    assert (out - ref).abs().max() < 2e-6


def test_colour_jitter_follows_each_images_order(x):
    order = torch.stack([torch.randperm(4, generator=torch.Generator().manual_seed(i)) for i in range(3)])
    prm = _params(3, brightness=1.2, contrast=0.8, saturation=1.25, hue=0.05, order=order)
    out = R.color_jitter(x.clone(), prm)
    fns = [(TF.adjust_brightness, 1.2), (TF.adjust_contrast, 0.8), (TF.adjust_saturation, 1.25),
           (TF.adjust_hue, 0.05)]
    for i in range(3):
        ref = x[i]
        for op in order[i].tolist():
            ref = fns[op][0](ref, fns[op][1])
        assert (out[i] - ref).abs().max() < 2e-6
    assert not torch.allclose(out[0], R.color_jitter(x.clone(), _params(
        3, brightness=1.2, contrast=0.8, saturation=1.25, hue=0.05, order=order.flip(1)))[0])


def test_sample_params_follow_random_resized_crop_rules():
    sizes = torch.tensor([[256, 341]] * 500 + [[256, 256]] * 500)
    prm = R.sample_params(sizes, torch.Generator().manual_seed(1))
    H, W = sizes[:, 0].double(), sizes[:, 1].double()
    area = prm.height * prm.width / (H * W)
    ratio = prm.width / prm.height
    assert ((prm.top >= 0) & (prm.left >= 0) & (prm.top + prm.height <= H) & (prm.left + prm.width <= W)).all()
    assert area.min() > 0.39 and area.max() <= 1.0 and ratio.min() > 0.74 and ratio.max() < 1.34
    assert prm.angle.abs().max() <= 90 and prm.scale.min() >= 0.8 and prm.scale.max() <= 1.2
    assert 0.4 < prm.hflip.double().mean() < 0.6 and abs(float(prm.hue.mean())) < 0.01
    assert sorted(prm.order[0].tolist()) == [0, 1, 2, 3]
    again = R.sample_params(sizes, torch.Generator().manual_seed(1))
    other = R.sample_params(sizes, torch.Generator().manual_seed(2))
    assert torch.equal(prm.top, again.top) and not torch.equal(prm.top, other.top)


def test_sample_params_fallback_is_torchvisions_centre_crop():
    """A 10×400 strip fits no crop of ratio 3/4–4/3 with area ≥ 40 %: the centre fallback."""
    prm = R.sample_params(torch.tensor([[10, 400]]), torch.Generator().manual_seed(0))
    assert (prm.height.item(), prm.width.item()) == (10, round(10 * 4 / 3))
    assert (prm.top.item(), prm.left.item()) == (0, (400 - 13) // 2)


def _cache(tmp_path, shapes):
    cache = ImageCache(tmp_path / "cache", 16)
    rng = np.random.default_rng(0)
    keys = []
    for i, (h, w) in enumerate(shapes):
        k = f"{i:02d}" + "ab" * 8
        cache.put(k, rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        keys.append(k)
    return cache, keys


def test_pools_hold_the_cache_pixels_and_eval_pool_equals_eval_transform(tmp_path):
    cache, keys = _cache(tmp_path, [(16, 20), (24, 16), (16, 16)])
    pool = R.TrainPool(keys + keys[:1], cache)
    assert len(pool.keys) == 3 and tuple(pool.images.shape) == (3, 3, 24, 20)
    assert pool.sizes.tolist() == [[16, 20], [24, 16], [16, 16]]
    assert np.array_equal(pool.images[1, :, :24, :16].permute(1, 2, 0).numpy(), cache.get(keys[1]))
    assert int(pool.images[0, :, 16:].sum()) == 0  # padding
    ep = R.EvalPool(keys, cache, size=14, resize=16)
    ref = torch.stack([eval_transform(14, 16)(cache.get(k)) for k in keys])
    assert (R.normalise(ep.images[ep.rows(keys)]) - ref).abs().max() < 1e-5
    x = R.augment(pool, pool.rows(keys), torch.Generator().manual_seed(0), 12)
    assert tuple(x.shape) == (3, 3, 12, 12) and torch.isfinite(x).all()
    y = R.augment(pool, pool.rows(keys), torch.Generator().manual_seed(0), 12)
    assert torch.equal(x, y)


def test_pools_refuse_missing_images_and_too_little_memory(tmp_path, monkeypatch):
    cache, keys = _cache(tmp_path, [(16, 16)])
    with pytest.raises(KeyError, match="not in the cache"):
        R.TrainPool(keys + ["ff" * 9], cache)
    monkeypatch.setattr(R, "available_bytes", lambda device: 1000)
    with pytest.raises(R.ResidentMemoryError, match="loader='dataloader'"):
        R.TrainPool(keys, cache)


def test_params_sent_to_the_device_in_one_packed_copy_give_the_same_batch(x):
    sizes = torch.tensor([[24, 30]] * 3)
    prm = R.sample_params(sizes, torch.Generator().manual_seed(3))
    packed = prm.to("cpu", pack=True)  # what a GPU receives, here on the host
    assert packed is not prm and torch.equal(packed.order, prm.order)
    assert torch.equal(packed.hflip, prm.hflip) and torch.equal(packed.vflip, prm.vflip)
    assert torch.allclose(packed.angle.double(), prm.angle, atol=1e-4)
    a = R.color_jitter(R.geometry(x.clone(), prm, 12), prm)
    b = R.color_jitter(R.geometry(x.clone(), packed, 12), prm, packed)
    assert (a - b).abs().max() < 1e-5


def test_pool_bytes_and_available_memory(tmp_path):
    cache, keys = _cache(tmp_path, [(16, 20), (24, 16)])
    assert R.pool_bytes(keys, keys[:1], cache, 8) == 2 * 3 * 24 * 20 + 3 * 8 * 8
    assert R.available_bytes(torch.device("cpu")) > 2**20

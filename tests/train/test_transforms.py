import numpy as np
import pytest
import torch

from melanoma.train.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform, train_transform


def _img(h=300, w=260, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("make", [train_transform, eval_transform])
def test_shapes_and_dtypes_from_array_and_tensor(make):
    t = make(224)
    arr = _img()
    arr.setflags(write=False)  # the cache may hand out read-only arrays
    for inp in (arr, torch.from_numpy(_img()).permute(2, 0, 1)):
        out = t(inp)
        assert type(out) is torch.Tensor and out.dtype == torch.float32 and out.shape == (3, 224, 224)
    assert make(64)(arr).shape == (3, 64, 64)


def test_eval_is_deterministic_and_layout_independent():
    t = eval_transform(224, 256)
    arr = _img()
    a, b = t(arr), t(arr)
    assert torch.equal(a, b)
    assert torch.equal(a, t(torch.from_numpy(arr).permute(2, 0, 1).contiguous()))


def test_eval_normalises_with_given_mean_std():
    grey = np.full((256, 256, 3), 128, np.uint8)
    out = eval_transform()(grey)
    expect = (128 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(out[:, 0, 0], expect)
    out = eval_transform(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))(grey)
    torch.testing.assert_close(out.mean(), torch.tensor(128 / 255 * 2 - 1))


def test_train_is_reproducible_under_a_seed():
    t = train_transform(224)
    arr = _img()
    torch.manual_seed(3)
    a = t(arr)
    torch.manual_seed(3)
    b = t(arr)
    c = t(arr)
    assert torch.equal(a, b)
    assert not torch.equal(b, c)


@pytest.mark.parametrize("bad", [np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), np.uint8),
                                 torch.zeros(8, 8, 3, dtype=torch.uint8), [[0]]])
def test_bad_inputs_are_clear_errors(bad):
    with pytest.raises((ValueError, TypeError), match="expected"):
        eval_transform()(bad)

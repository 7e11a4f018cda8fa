"""melanoma.train.models: every model builds, heads, freeze policies, backbone/head split (ImageNet
weights: test_weights.py)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from melanoma.train.models import (available_models, build_model, extra_models, model_config, paper_models,
                                   set_train_mode, split_backbone_head, trainable_summary)

PAPER_24 = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
            "resnext101_32x8d", "wide_resnet50_2", "wide_resnet101_2", "densenet121",
            "densenet161", "densenet169", "densenet201", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn",
            "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "efficientnet_b1", "efficientnet_b2",
            "efficientnet_b6"]
# The biggest builds (~1 s each on 2 cores); `pytest -m "not slow"` skips them.
HEAVY = {"resnet152", "resnext101_32x8d", "wide_resnet101_2", "densenet161", "vgg19_bn",
         "efficientnet_b6"}
# One model per family for the policy tests.
FAMILY_REPS = ["resnet18", "densenet121", "vgg11_bn", "efficientnet_b1", "mobilenet_v3_small",
               "meshnet", "efficientnet_lite0"]
BN = nn.modules.batchnorm._BatchNorm


def _marked(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in names]


def _x(n=2, size=64, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_model_lists_come_from_params():
    assert paper_models() == PAPER_24
    assert extra_models() == ["meshnet", "meshnet_s4", "mobilenet_v3_small", "efficientnet_lite0"]
    assert set(paper_models() + extra_models()) <= set(available_models())


def test_unknown_names_and_values_are_clear_errors():
    with pytest.raises(ValueError, match=r"unknown model 'resnet5'.*resnet18.*vgg19_bn"):
        build_model("resnet5")
    with pytest.raises(ValueError, match="available models"):
        model_config("alexnet")
    with pytest.raises(ValueError, match="freeze must be one of"):
        build_model("meshnet", freeze="all")
    with pytest.raises(ValueError, match="weights must be one of"):
        build_model("meshnet", weights="imagenet21k")
    with pytest.raises(ValueError, match="no ImageNet weights"):
        build_model("meshnet", weights="imagenet")


@pytest.mark.parametrize("name", _marked(paper_models() + extra_models() + ["meshnet_s4"]))
def test_builds_two_class_head_and_splits(name):
    torch.manual_seed(0)
    cfg = model_config(name)
    model = build_model(name, weights="none", freeze="none").eval()
    x = _x()
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()

    head = model.get_submodule(cfg.head)
    assert isinstance(head, nn.Linear) and head.out_features == 2
    assert head.in_features == cfg.feature_dim

    backbone, head2 = split_backbone_head(model)
    assert head2 is head and model.get_submodule(cfg.head) is head  # model left intact
    with torch.no_grad():
        feats = backbone.eval()(x)
        again = model(x)
    assert feats.shape == (2, cfg.feature_dim)
    torch.testing.assert_close(head(feats), logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(again, logits, rtol=0, atol=0)
    # shared, not copied
    assert {id(p) for p in backbone.parameters()} <= {id(p) for p in model.parameters()}


def test_num_classes():
    assert build_model("meshnet", num_classes=5).eval()(_x()).shape == (2, 5)


def _expected_trainable(model, policy, head_path):
    out = set()
    for mname, module in model.named_modules():
        for pname, _ in module.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            in_head = mname == head_path or mname.startswith(head_path + ".")
            if (policy == "none" or in_head
                    or (policy == "conv" and not isinstance(module, nn.Conv2d))):
                out.add(full)
    return out


@pytest.mark.parametrize("policy", ["conv", "backbone", "none"])
@pytest.mark.parametrize("name", FAMILY_REPS)
def test_freeze_policies(name, policy):
    cfg = model_config(name)
    model = build_model(name, freeze=policy)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == _expected_trainable(model, policy, cfg.head)
    assert {f"{cfg.head}.weight", f"{cfg.head}.bias"} <= trainable
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(p.requires_grad == (policy == "none") for m in convs for p in m.parameters())
    bns = [m for m in model.modules() if isinstance(m, BN)]
    assert all(p.requires_grad == (policy != "backbone") for m in bns for p in m.parameters())

    s = trainable_summary(model)
    json.dumps(s)
    assert s["n_trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert s["n_params"] == sum(p.numel() for p in model.parameters())
    assert s["freeze"] == policy and s["name"] == name
    if policy == "backbone":
        assert s["trainable_by_type"] == {"Linear": cfg.feature_dim * 2 + 2}

    head = model.get_submodule(cfg.head)
    for call in (lambda: set_train_mode(model, True), lambda: model.train()):
        model.eval()
        call()
        assert all(m.training == (policy != "backbone") for m in bns)
        assert head.training
        if policy == "backbone":  # a linear probe: nothing but the head in training mode
            assert not any(m.training for m in model.modules() if m is not head)
        assert trainable_summary(model)["bn_modes"]["train" if policy != "backbone" else "eval"] == len(bns)
    set_train_mode(model, False)
    assert not any(m.training for m in model.modules())


@pytest.mark.parametrize("name", ["resnet18", "vgg11", "efficientnet_b1", "efficientnet_lite0"])
def test_backbone_probe_trains_only_the_head(name):
    """In training mode a backbone-frozen model equals head(backbone(x)) (dropout and BN off)
    and an SGD step changes the head only — BN running statistics included."""
    torch.manual_seed(0)
    model = build_model(name, freeze="backbone")
    model.train()
    backbone, head = split_backbone_head(model)
    x = _x(4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = model(x)
    with torch.no_grad():
        torch.testing.assert_close(out, head(backbone.eval()(x)), rtol=1e-5, atol=1e-6)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    nn.functional.cross_entropy(out, torch.tensor([0, 1, 0, 1])).backward()
    opt.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    head_path = model_config(name).head
    # (random-init EfficientNet features are ~1e-10, so its head weight may not move visibly)
    assert f"{head_path}.bias" in changed
    assert changed <= {f"{head_path}.weight", f"{head_path}.bias"}


def test_probe_mode_survives_deepcopy_and_keyword_calls():
    import copy

    model = build_model("resnet18", freeze="backbone")
    clone = copy.deepcopy(model)
    model.eval()
    clone.train(mode=True)
    assert not clone.bn1.training and clone.fc.training
    assert not model.fc.training  # the copy's override is bound to the copy
    wrapper = nn.Sequential(model)
    wrapper.train()
    assert not model.bn1.training and model.fc.training


def test_conv_policy_trains_batchnorm():
    torch.manual_seed(0)
    model = build_model("resnet18", freeze="conv")
    set_train_mode(model, True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    nn.functional.cross_entropy(model(_x(4)), torch.tensor([0, 1, 0, 1])).backward()
    opt.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert "bn1.running_mean" in changed and "bn1.weight" in changed and "fc.weight" in changed
    assert not any(k.endswith(("conv1.weight", "conv2.weight")) for k in changed)

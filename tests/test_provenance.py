"""melanoma.provenance: what a result was made with (run.json, the book's provenance)."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

from melanoma.provenance import PACKAGES, versions


def test_versions_for_provenance():  # moved from test_packaging.py
    import numpy
    import torch

    v = versions()
    assert v["python"] == ".".join(map(str, sys.version_info[:3]))
    assert v["torch"] == torch.__version__ and v["numpy"] == numpy.__version__
    assert v["cuda"] == (torch.version.cuda or "none") and v["melanoma"]
    assert "no-such-dist" not in versions(("no-such-dist",))


def _installed(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def test_names_the_packages_that_shape_results_in_order():
    assert {"torch", "torchvision", "numpy", "pandas", "scikit-learn", "scipy", "pillow"} <= set(PACKAGES)
    v = versions()
    installed = [n for n in PACKAGES if _installed(n) is not None]
    want = ["python", "platform"] + [k for n in installed for k in ((n, "cuda") if n == "torch" else (n,))]
    assert list(v) == want
    assert v["platform"] == platform.platform(terse=True)
    for n in installed:
        if n != "torch":  # torch: the build (2.4.1+cu121), the distribution says 2.4.1
            assert v[n] == _installed(n), n
    assert v["torch"].startswith(_installed("torch"))
    assert v["torchvision"] == _installed("torchvision")


def test_only_the_named_packages_in_the_given_order():
    v = versions(("scipy", "no-such-dist", "numpy"))
    assert list(v) == ["python", "platform", "scipy", "numpy"]
    assert versions(()) == {"python": platform.python_version(), "platform": platform.platform(terse=True)}

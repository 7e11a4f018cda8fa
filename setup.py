"""Packaging hook: a non-editable install (``pip install .``) carries the project's workflow,
notebooks, params, book sources and web page as package data in ``melanoma/_project/``, so
``melanoma demo`` and the notebooks work without the checkout (melanoma.home.sources). Everything
else is in pyproject.toml. An editable install (``make venv``) uses the checkout itself."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PROJECT_DIRS = ("workflow", "notebooks", "params", "book", "web")  # = melanoma.home.PROJECT_DIRS
SKIP = shutil.ignore_patterns("_build", "_generated", "node_modules", "__pycache__", ".snakemake", "*.pyc")
#: onnxruntime-web's wasm-only build (melanoma.report.export.ORT_FILES), from web/node_modules when npm installed it
ORT = ROOT / "web" / "node_modules" / "onnxruntime-web"
ORT_FILES = ("dist/ort.wasm.min.js", "dist/ort-wasm-simd-threaded.mjs", "dist/ort-wasm-simd-threaded.wasm",
             "package.json", "LICENSE")


class build_py_with_project(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "melanoma" / "_project"
        if target.exists():
            shutil.rmtree(target)
        for name in PROJECT_DIRS:
            if (ROOT / name).is_dir():
                shutil.copytree(ROOT / name, target / name, ignore=SKIP)
        for f in ORT_FILES:
            if (ORT / f).is_file():
                dest = target / "web" / "node_modules" / "onnxruntime-web" / f
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ORT / f, dest)


setup(cmdclass={"build_py": build_py_with_project})

"""Where the project's files are: its sources (read only) and its home (work and results).

* :func:`repository` — the source checkout this package runs from (the folder holding
  ``workflow/Snakefile`` beside ``melanoma/``), or ``None`` for a non-editable install.
* :func:`sources` — the workflow, notebooks, params and book sources: the checkout, or the copy a
  non-editable install carries as package data (``melanoma/_project``).
* :func:`home` — where outputs go (``work/``, ``results/``): ``$MELANOMA_HOME`` when set, else the
  checkout, else the current folder. Never the kernel's working folder by accident: papermill
  starts its kernel in the caller's folder, so ``../work`` in a notebook used to land beside the
  repository.
* :func:`resolve` — a path parameter: absolute as given, ``~`` expanded, relative ones against
  :func:`home`, ``""`` the given default under it.

>>> import os; saved = os.environ.get("MELANOMA_HOME"); os.environ["MELANOMA_HOME"] = "/tmp/mh"
>>> str(resolve("work/runs/x")), str(resolve("", "work")), str(resolve("/abs"))
('/tmp/mh/work/runs/x', '/tmp/mh/work', '/abs')
>>> os.environ.pop("MELANOMA_HOME") and os.environ.update({"MELANOMA_HOME": saved} if saved else {})
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "MELANOMA_HOME"
PACKAGE = Path(__file__).resolve().parent
#: Folders of the checkout that a non-editable install carries as package data (setup.py).
PROJECT_DIRS = ("workflow", "notebooks", "params", "book", "web")


def repository() -> Path | None:
    """The source checkout holding this package, or ``None`` (a non-editable install)."""
    root = PACKAGE.parent
    return root if (root / "workflow" / "Snakefile").is_file() and (root / "pyproject.toml").is_file() else None


def sources() -> Path:
    """The folder holding ``workflow/``, ``notebooks/``, ``params/``, ``book/`` and ``web/``."""
    root = repository()
    if root is not None:
        return root
    packaged = PACKAGE / "_project"
    if (packaged / "workflow" / "Snakefile").is_file():
        return packaged
    raise FileNotFoundError(
        f"melanoma at {PACKAGE} has neither its source checkout nor the packaged workflow "
        f"({packaged}/workflow/Snakefile): reinstall it from the repository with `pip install .` "
        "(or clone the repository and run `make venv`)")


def home() -> Path:
    """Where ``work/`` and ``results/`` go: ``$MELANOMA_HOME``, else the checkout, else the
    current folder (a non-editable install)."""
    env = os.environ.get(ENV, "").strip()
    if env:
        return Path(env).expanduser().resolve()
    return repository() or Path.cwd().resolve()


def book_dir() -> Path:
    """Where the book is rendered and built: ``$MELANOMA_BOOK``, else the checkout's ``book/``
    (``HOME/book`` for a non-editable install, never inside the installed package). Tests and
    parallel grids set ``MELANOMA_BOOK`` to another folder (the sources are copied there first)."""
    env = os.environ.get("MELANOMA_BOOK")
    return Path(env or (sources() / "book" if repository() else home() / "book")).resolve()


def resolve(path: str | os.PathLike | None, default: str | os.PathLike = "") -> Path:
    """``path`` as an absolute path: ``""``/``None`` → ``home()/default``; relative → under :func:`home`."""
    p = Path(os.path.expanduser(str(path))) if path not in (None, "") else Path(default)
    return p if p.is_absolute() else home() / p


def find_file(path: str | os.PathLike, what: str = "file") -> Path:
    """A path named on the command line, absolute: relative to the current folder first, then to
    :func:`home`, then to the project's sources (so ``--grid params/demo.yaml`` works from any
    folder); else a ``FileNotFoundError`` naming the places it looked."""
    p = Path(os.path.expanduser(str(path)))
    if p.is_absolute() or p.exists():
        return p.resolve()
    places = list(dict.fromkeys([home(), sources()]))
    for base in places:
        if (base / p).exists():
            return base / p
    raise FileNotFoundError(f"{what} {path} not found in the current folder ({Path.cwd()}) nor in "
                            + " nor in ".join(str(b) for b in places))

"""The reduced SYNTHETIC grid the end-to-end tests run (tests/pipeline/test_workflow.py locally,
tests/pipeline/test_slurm.py through SLURM): one model, a grouped job (E+B) beside a solo run (A-C)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"

GRID = """
name: {name}
data: synthetic
synthetic: {{scale: 0.3, seed: 0}}
work: {root}/work
results: {root}/results
models: [efficientnet_lite0]
combinations: [E, B, A-C]
eval_sets: [ISIC2017, ISIC2018]
submission: ISIC2020
train: {{weights: imagenet, freeze: backbone, epochs: 6, image_size: 96, views: 1, seed: 0}}
group: 2                   # E and B train in one grouped job (rule train_<group>), A-C alone (rule train)
calibrate: {{bins: 10, bootstrap: 50}}
reject: {{min_coverage: 0.8, bootstrap: 50}}   # the default rule: relative (the seed code's)
figures: {{calibration_single: efficientnet_lite0__E, calibration_combined: efficientnet_lite0__ABC}}
"""


def write_grid(root: Path, name: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    f = root / f"{name}.yaml"
    f.write_text(GRID.format(name=name, root=root))
    return f


def local_cmd(grid: Path) -> list[str]:
    """The local run: Snakemake on this machine, 2 cores."""
    return [str(SNAKEMAKE), "-s", str(REPO / "workflow" / "Snakefile"), "--config", f"grid={grid}",
            "--cores", "2", "--keep-going", "--rerun-incomplete", "--quiet", "all"]


def env_for(root: Path) -> dict:
    return dict(os.environ, MELANOMA_BOOK=str(root / "book"), PYTHONUNBUFFERED="1")

"""Shared fixtures: the real samples (skipped when absent) and one synthetic work folder."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REALDATA = ROOT.parent / "shared" / "realdata"


def realdata(sub: str) -> Path:
    p = REALDATA / sub
    if not p.is_dir():
        pytest.skip(f"real samples not present at {p}")
    return p


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    """SYNTHETIC replicas of all 11 releases (small scale), written once per test session."""
    from melanoma.datasets.synthetic import write_replicas

    out = tmp_path_factory.mktemp("synthetic")
    write_replicas(out, scale=0.5, seed=0)
    return out


@pytest.fixture(scope="session")
def synth_work(synth_data, tmp_path_factory) -> Path:
    """The synthetic replicas ingested (manifests + image cache)."""
    from melanoma.datasets.ingest import ingest_all

    work = tmp_path_factory.mktemp("work")
    ingest_all(synth_data, work, progress=False)
    return work

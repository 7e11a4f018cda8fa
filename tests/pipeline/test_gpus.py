"""melanoma.pipeline.gpus: each notebook job holds its own GPU (lock files), none without GPUs."""

from __future__ import annotations

from melanoma.pipeline.gpus import claim_gpu


def test_claim_gpu_without_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with claim_gpu() as g:
        assert g is None


def test_claim_gpu_gives_each_job_its_own_card(monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with claim_gpu(lock_dir=str(tmp_path)) as a:
        with claim_gpu(lock_dir=str(tmp_path)) as b:
            assert {a, b} == {"0", "1"}

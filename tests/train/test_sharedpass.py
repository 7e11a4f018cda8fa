"""melanoma.train.sharedpass: several runs in one forward pass give each run what its own pass gives
(outputs, gradients, BatchNorm statistics), sharing only the frozen tensors."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from melanoma.train.models import build_model
from melanoma.train.sharedpass import GroupedModel, PerRun, _Segments, per_run_paths


def test_grouped_model_shares_frozen_tensors_only():  # moved from test_group.py
    models = [build_model("resnet18", weights="none", freeze="conv") for _ in range(2)]
    paths = per_run_paths(models[0])
    assert "fc" in paths and "bn1" in paths and not any(q.startswith("conv") for q in paths)
    with pytest.raises(ValueError, match="frozen tensors differ"):
        GroupedModel(models)  # two random initialisations: their frozen convolutions differ
    models[1].load_state_dict(models[0].state_dict())
    g = GroupedModel(models).eval()
    x = torch.randn(6, 3, 32, 32)
    out = g(x, [1, 0], [4, 2])
    ref = torch.cat([models[1].eval()(x[:4]), models[0].eval()(x[4:])])
    assert torch.allclose(out, ref, atol=1e-5)


def _runs(n=3, seed=0):
    """``n`` MeshNets (no dropout) with one set of frozen convolutions and each its own BatchNorm
    and head, as the runs of one model on different combinations are."""
    torch.manual_seed(seed)
    base = build_model("meshnet", weights="none", freeze="conv", dropout=0.0)
    runs = []
    for k in range(n):
        m = copy.deepcopy(base)
        with torch.no_grad():
            for name, p in m.named_parameters():
                if p.requires_grad:
                    p.add_(0.1 * (k + 1) * torch.randn_like(p))
        runs.append(m)
    return runs


def test_one_training_step_equals_separate_passes():
    runs = _runs()
    alone = [copy.deepcopy(m) for m in runs]
    g = GroupedModel(runs).train()
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(n, 3, 16, 16, generator=gen) for n in (4, 2, 3)]
    ys = [torch.randint(0, 2, (len(x),), generator=gen) for x in xs]
    members = [2, 0, 1]  # the batch holds the runs in any order
    out = g(torch.cat([xs[k] for k in members]), members, [len(xs[k]) for k in members])
    # the loss: the sum of each run's mean loss, so each run's gradients are its own
    parts = out.split([len(xs[k]) for k in members])
    sum(F.cross_entropy(o, ys[k]) for o, k in zip(parts, members)).backward()
    for o, k in zip(parts, members):
        ref = alone[k].train()(xs[k])
        F.cross_entropy(ref, ys[k]).backward()
        assert torch.allclose(o, ref, atol=1e-5)
    for k in range(3):
        own, ref = dict(runs[k].named_parameters()), dict(alone[k].named_parameters())
        trained = [n for n, p in ref.items() if p.requires_grad]
        assert "classifier.weight" in trained and "features.1.weight" in trained
        for n in trained:
            assert torch.allclose(own[n].grad, ref[n].grad, atol=1e-5), (k, n)
        # BatchNorm normalised over the run's own images: the same running statistics
        sb, rb = runs[k].state_dict(), alone[k].state_dict()
        for n in sb:
            if "running" in n or "num_batches" in n:
                assert torch.allclose(sb[n].float(), rb[n].float(), atol=1e-6), (k, n)


def test_per_run_modules_are_the_runs_own():
    runs = _runs(2)
    g = GroupedModel(runs)
    for q in g.paths:
        pr = g.net.get_submodule(q)
        assert isinstance(pr, PerRun) and all(pr.mods[k] is runs[k].get_submodule(q) for k in range(2))
    frozen = g.net.get_submodule("features.0")
    assert not isinstance(frozen, PerRun) and frozen is not runs[0].features[0]  # one shared copy
    assert torch.equal(frozen.weight, runs[1].features[0].weight)


def test_a_batch_of_one_run_goes_through_its_modules_only():
    runs = _runs(2)
    g = GroupedModel(runs).eval()
    x = torch.randn(5, 3, 16, 16)
    assert torch.allclose(g(x, [1], [5]), runs[1].eval()(x), atol=1e-6)
    assert not torch.allclose(g(x, [0], [5]), g(x, [1], [5]))


def test_a_module_that_does_not_keep_the_batch_on_dim_0_is_an_error():
    seg = _Segments()
    seg.members, seg.counts = [0, 1], [2, 2]
    pr = PerRun("features.1", [nn.Identity(), nn.Identity()], seg)
    assert pr(torch.arange(4.0)).tolist() == [0.0, 1.0, 2.0, 3.0]
    with pytest.raises(RuntimeError, match="features.1: input batch of 3 is not the runs' 4 images"):
        pr(torch.zeros(3))


def test_what_cannot_be_grouped():
    with pytest.raises(ValueError, match="Linear has trainable tensors of its own at the top level"):
        per_run_paths(nn.Linear(3, 2))
    conv = build_model("meshnet", weights="none", freeze="conv")
    full = build_model("meshnet", weights="none", freeze="none")
    full.load_state_dict(conv.state_dict())
    with pytest.raises(ValueError, match="run 1 has another architecture or freeze policy than run 0"):
        GroupedModel([conv, full])


def test_frozen_backbone_still_keeps_batchnorm_statistics_per_run():
    m = build_model("meshnet", weights="none", freeze="backbone")
    paths = per_run_paths(m)
    bns = [n for n, mod in m.named_modules() if isinstance(mod, nn.BatchNorm2d)]
    assert set(paths) == set(bns) | {"classifier"}   # buffers of their own: per run, though not trained

"""Several runs of one backbone in one forward pass: shared frozen tensors, per-run modules.

With ``freeze="conv"`` (the paper's text) the convolutions of every run of a model are the same
frozen ImageNet tensors; what differs between the runs of one model on different combinations is
only what trains or keeps state: BatchNorm (weights and running statistics) and the head. So the
runs can share the frozen convolutions: :class:`GroupedModel` is one copy of the network in which
every module with trainable parameters or buffers is a :class:`PerRun` holding each run's own
module. A step concatenates the runs' batches (each run draws its own batch from its own epoch
order, with its own augmentation generator), the shared convolutions see one large batch, and each
``PerRun`` splits the batch so every run's BatchNorm normalises over its own images only. The loss
is the sum of the runs' mean losses, so each run's gradients are its own, and each run keeps its
own SGD and StepLR. A run in a group therefore trains as it would alone — ``tests/train/test_group.py``
checks the weights and predictions of a group of three against three separate runs — with two
exceptions: dropout / stochastic-depth masks come from one shared generator (models with dropout
train equally *in distribution*), and the larger batch may change floating-point summation order.

The loop that trains such a group is the resident path of :mod:`melanoma.train.recipe`; which runs may
share a job is :func:`melanoma.train.params.check_together`.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn


class _Segments:
    """Which runs the current batch holds, in order, and how many images each."""

    def __init__(self):
        self.members: list[int] = []
        self.counts: list[int] = []


class PerRun(nn.Module):
    """Each run's own copy of one module; applies run k's copy to run k's slice of the batch.

    Assumes the module sees the batch on dimension 0, as every registered CNN's BatchNorm and
    Linear layers do; an input whose first dimension is not the runs' total is an error. (A model
    with sequence-first layers would need a check of its own before it is grouped.)"""

    def __init__(self, name: str, mods: list[nn.Module], seg: _Segments):
        super().__init__()
        self.name = name
        self.mods = nn.ModuleList(mods)
        self._seg = seg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        members, counts = self._seg.members, self._seg.counts
        if len(members) == 1:
            return self.mods[members[0]](x)
        if x.shape[0] != sum(counts):
            raise RuntimeError(f"{self.name}: input batch of {x.shape[0]} is not the runs' {sum(counts)} "
                               "images: this module does not keep the batch on dimension 0")
        return torch.cat([self.mods[k](c) for k, c in zip(members, x.split(counts))])


def _stateful(m: nn.Module) -> bool:
    return (any(q.requires_grad for q in m.parameters(recurse=False))
            or any(True for _ in m.buffers(recurse=False)))


def per_run_paths(model: nn.Module) -> list[str]:
    """Outermost modules with trainable parameters or buffers of their own (what differs per run)."""
    if _stateful(model):
        raise ValueError(f"{type(model).__name__} has trainable tensors of its own at the top level; "
                         "it cannot be grouped")
    paths: list[str] = []
    for name, m in model.named_modules():
        if name and not any(name.startswith(q + ".") for q in paths) and _stateful(m):
            paths.append(name)
    return paths


class GroupedModel(nn.Module):
    """One network over the batches of several runs: shared frozen tensors, per-run modules."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        self.paths = per_run_paths(models[0])
        ref = models[0].state_dict()
        per_run = tuple(q + "." for q in self.paths)
        for k, m in enumerate(models[1:], 1):
            if per_run_paths(m) != self.paths:
                raise ValueError(f"run {k} has another architecture or freeze policy than run 0")
            sd = m.state_dict()
            diff = [n for n, v in ref.items() if not n.startswith(per_run) and not torch.equal(v, sd[n])]
            if diff:
                raise ValueError(f"run {k}'s frozen tensors differ from run 0's (first: {diff[0]}); runs "
                                 "share a forward pass only with the same frozen weights (same "
                                 "`weights`, and the same `seed` when weights='none')")
        self.seg = _Segments()
        self.net = copy.deepcopy(models[0])
        for q in self.paths:
            self.net.set_submodule(q, PerRun(q, [m.get_submodule(q) for m in models], self.seg))

    def forward(self, x: torch.Tensor, members: list[int], counts: list[int]) -> torch.Tensor:
        self.seg.members, self.seg.counts = list(members), list(counts)
        return self.net(x)

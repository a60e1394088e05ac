"""DeepSpeedCPULion and FusedLion against a reference Lion written from the paper (tolerance:
_cpu_optim_cases); passes with or without ds-ops-cpu."""

from __future__ import annotations

import os
import sys

import pytest
import torch

from deepspeed.ops._cpu_optimizer import NativeOpFallbackWarning
from deepspeed.ops.lion import DeepSpeedCPULion, FusedLion

sys.path.insert(0, os.path.dirname(__file__))  # the shared cases module
from _cpu_optim_cases import close, force_reference_path, run_pair  # noqa: E402


@pytest.fixture
def no_native(monkeypatch, tmp_path):
    yield from force_reference_path(monkeypatch, tmp_path)

KW = dict(lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)


class _Lion(torch.optim.Optimizer):
    """Chen et al. 2023, Algorithm 2, decoupled weight decay."""

    def __init__(self, params, lr, betas, weight_decay):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                st = self.state[p]
                if not st:
                    st["exp_avg"] = torch.zeros_like(p)
                m, g = st["exp_avg"], p.grad
                c = m * b1 + g * (1 - b1)
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(torch.sign(c), alpha=-group["lr"])
                m.mul_(b2).add_(g, alpha=1 - b2)


def _params(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(2049, generator=gen), torch.randn(3, 3, generator=gen)]


def test_reference_path_matches_reference_lion(no_native):
    ps, qs = _params(), _params()
    with pytest.warns(NativeOpFallbackWarning, match="native CPU op 'cpu_lion' is unavailable"):
        ours = DeepSpeedCPULion(ps, **KW)
    ref = _Lion(qs, **KW)
    run_pair(ours, ref, ps, qs, steps=100)
    for a, b in zip(ps, qs):
        close(a, b, "param")
        close(ours.state[a]["exp_avg"], ref.state[b]["exp_avg"], "exp_avg")


def test_any_path_matches_reference_lion():
    ps, qs = _params(1), _params(1)
    ours = DeepSpeedCPULion(ps, **KW)
    run_pair(ours, _Lion(qs, **KW), ps, qs, steps=20)
    for a, b in zip(ps, qs):
        close(a, b, f"param ({ours.isa})")


def test_fused_lion_matches_reference_lion():
    ps, qs = _params(2), _params(2)
    ours, ref = FusedLion(ps, **KW), _Lion(qs, **KW)
    run_pair(ours, ref, ps, qs, steps=100)
    for a, b in zip(ps, qs):
        close(a, b, "param")
        close(ours.state[a]["exp_avg"], ref.state[b]["exp_avg"], "exp_avg")

"""DeepSpeedCPUAdagrad against torch.optim.Adagrad (tolerance: _cpu_optim_cases); passes with or
without ds-ops-cpu (``no_native`` forces the reference path)."""

from __future__ import annotations

import os
import sys

import pytest
import torch

from deepspeed.ops._cpu_optimizer import NativeOpFallbackWarning
from deepspeed.ops.adagrad import DeepSpeedCPUAdagrad

sys.path.insert(0, os.path.dirname(__file__))  # the shared cases module
from _cpu_optim_cases import close, force_reference_path, run_pair  # noqa: E402


@pytest.fixture
def no_native(monkeypatch, tmp_path):
    yield from force_reference_path(monkeypatch, tmp_path)

KW = dict(lr=1e-2, eps=1e-10, weight_decay=0.01)


def _params(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(3001, generator=gen), torch.randn(5, 7, generator=gen)]


def test_reference_path_matches_torch(no_native):
    ps, qs = _params(), _params()
    with pytest.warns(NativeOpFallbackWarning, match="native CPU op 'cpu_adagrad' is unavailable"):
        ours = DeepSpeedCPUAdagrad(ps, **KW)
    ref = torch.optim.Adagrad(qs, **KW)
    run_pair(ours, ref, ps, qs, steps=100)
    for a, b in zip(ps, qs):
        close(a, b, "param")
        close(ours.state[a]["sum"], ref.state[b]["sum"], "sum")


def test_any_path_matches_torch():
    ps, qs = _params(1), _params(1)
    ours = DeepSpeedCPUAdagrad(ps, **KW)
    ref = torch.optim.Adagrad(qs, **KW)
    run_pair(ours, ref, ps, qs, steps=20)
    for a, b in zip(ps, qs):
        close(a, b, f"param ({ours.isa})")


def test_deepspeed_checkpoint_state_name_is_read():
    """A DeepSpeed CPU Adagrad checkpoint keeps the accumulator as exp_avg_sq; it is read as sum."""
    (p,) = _params()[:1]
    opt = DeepSpeedCPUAdagrad([p], **KW)
    sd = opt.state_dict()
    sd["state"][0] = {"step": 4, "exp_avg_sq": torch.full_like(p, 2.0)}
    opt.load_state_dict(sd)
    p.grad = torch.zeros_like(p)
    before = p.clone()
    opt.step()
    close(opt.state[p]["sum"], torch.full_like(p, 2.0) + (KW["weight_decay"] * before) ** 2, "sum")
    assert float(opt.state[p]["step"]) == 5.0

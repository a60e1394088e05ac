"""DeepSpeedCPULion and FusedLion against a reference Lion written from the paper (tolerance:
_cpu_optim_cases); passes with or without ds-ops-cpu."""

from __future__ import annotations

import os
import sys

import pytest
import torch

from deepspeed.testing.reference import ReferenceLion
from deepspeed.ops._cpu_optimizer import NativeOpFallbackWarning
from deepspeed.ops.lion import DeepSpeedCPULion, FusedLion

sys.path.insert(0, os.path.dirname(__file__))  # the shared cases module
from _cpu_optim_cases import close, force_reference_path, run_pair  # noqa: E402


@pytest.fixture
def no_native(monkeypatch, tmp_path):
    yield from force_reference_path(monkeypatch, tmp_path)

KW = dict(lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)




def _params(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(2049, generator=gen), torch.randn(3, 3, generator=gen)]


def test_reference_path_matches_reference_lion(no_native):
    ps, qs = _params(), _params()
    with pytest.warns(NativeOpFallbackWarning, match="native CPU op 'cpu_lion' is unavailable"):
        ours = DeepSpeedCPULion(ps, **KW)
    ref = ReferenceLion(qs, **KW)
    run_pair(ours, ref, ps, qs, steps=100)
    for a, b in zip(ps, qs):
        close(a, b, "param")
        close(ours.state[a]["exp_avg"], ref.state[b]["exp_avg"], "exp_avg")


def test_any_path_matches_reference_lion():
    ps, qs = _params(1), _params(1)
    ours = DeepSpeedCPULion(ps, **KW)
    run_pair(ours, ReferenceLion(qs, **KW), ps, qs, steps=20)
    for a, b in zip(ps, qs):
        close(a, b, f"param ({ours.isa})")


def test_fused_lion_matches_reference_lion():
    ps, qs = _params(2), _params(2)
    ours, ref = FusedLion(ps, **KW), ReferenceLion(qs, **KW)
    run_pair(ours, ref, ps, qs, steps=100)
    for a, b in zip(ps, qs):
        close(a, b, "param")
        close(ours.state[a]["exp_avg"], ref.state[b]["exp_avg"], "exp_avg")

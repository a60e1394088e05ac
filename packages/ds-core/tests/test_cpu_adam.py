"""DeepSpeedCPUAdam and FusedAdam against torch.optim.Adam/AdamW (tolerance: _cpu_optim_cases).

These pass with or without ds-ops-cpu installed: the ``no_native`` tests force the PyTorch
reference path and check its one warning; the others use whatever path this venv has."""

from __future__ import annotations

import warnings

import os
import sys

import pytest
import torch

from deepspeed.ops._cpu_optimizer import NativeOpFallbackWarning
from deepspeed.ops.adam import DeepSpeedCPUAdam, FusedAdam

sys.path.insert(0, os.path.dirname(__file__))  # the shared cases module
from _cpu_optim_cases import close, force_reference_path, run_pair  # noqa: E402


@pytest.fixture
def no_native(monkeypatch, tmp_path):
    yield from force_reference_path(monkeypatch, tmp_path)

KW = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)


def _params(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(4097, generator=gen), torch.randn(17, 9, generator=gen)]


@pytest.mark.parametrize("adamw", [True, False])
def test_reference_path_matches_torch_and_warns_once(no_native, adamw):
    ps, qs = _params(), _params()
    with pytest.warns(NativeOpFallbackWarning, match=r"native CPU op 'cpu_adam' is unavailable, using the PyTorch reference path.*Cause: "):
        ours = DeepSpeedCPUAdam(ps, adamw_mode=adamw, **KW)
    assert not ours.uses_native and ours.isa == "pytorch"
    with warnings.catch_warnings():
        warnings.simplefilter("error", NativeOpFallbackWarning)  # once per op, not per optimizer
        DeepSpeedCPUAdam(_params(), **KW)
    ref = (torch.optim.AdamW if adamw else torch.optim.Adam)(qs, **KW)
    run_pair(ours, ref, ps, qs, steps=100)
    for a, b in zip(ps, qs):
        close(a, b, "param")
        close(ours.state[a]["exp_avg_sq"], ref.state[b]["exp_avg_sq"], "exp_avg_sq")


def test_fallback_warning_names_the_cause(no_native):
    with pytest.warns(NativeOpFallbackWarning) as record:
        DeepSpeedCPUAdam(_params(), **KW)
    msg = str(record[0].message)
    # Without ds-ops-cpu the cause is the missing plugin; with it, the impossible build.
    assert ("pip install ds-ops-cpu" in msg) or ("no C++ compiler found" in msg and "no-such-compiler" in msg), msg


def test_reference_path_writes_low_precision_copies(no_native):
    ps = _params()
    with pytest.warns(NativeOpFallbackWarning):
        opt = DeepSpeedCPUAdam(ps, **KW)
    copies = [torch.empty_like(p, dtype=torch.bfloat16) for p in ps]
    for p in ps:
        p.grad = torch.ones_like(p)
    opt.step(fp16_param_groups=[copies])
    for p, c in zip(ps, copies):
        assert torch.equal(c, p.to(torch.bfloat16))


def test_any_path_matches_torch():
    ps, qs = _params(1), _params(1)
    ours = DeepSpeedCPUAdam(ps, **KW)
    ref = torch.optim.AdamW(qs, **KW)
    run_pair(ours, ref, ps, qs, steps=20)
    for a, b in zip(ps, qs):
        close(a, b, f"param ({ours.isa})")


def test_bias_correction_off(no_native):
    p, q = _params(2), _params(2)
    with pytest.warns(NativeOpFallbackWarning):
        ours = DeepSpeedCPUAdam(p, bias_correction=False, lr=1e-3)
    ref = DeepSpeedCPUAdam(q, lr=1e-3)
    run_pair(ours, ref, p, q, steps=1)
    # Step 1 without bias correction moves by lr * (0.1 g) / (sqrt(0.001) |g| + eps) = 3.16e-3 * sign(g)
    moved = (p[0] - _params(2)[0]).abs()
    assert torch.allclose(moved, torch.full_like(moved, 1e-3 * 0.1 / 0.001**0.5), rtol=1e-3)


def test_errors():
    with pytest.raises(NotImplementedError, match="amsgrad=True"):
        DeepSpeedCPUAdam(_params(), amsgrad=True)
    with pytest.raises(ValueError, match=r"betas=\(0.9, 1.5\) must each be in \[0, 1\)"):
        DeepSpeedCPUAdam(_params(), betas=(0.9, 1.5))
    opt = DeepSpeedCPUAdam(_params())
    with pytest.raises(ValueError, match="fp16_param_groups has 2 entries but the optimizer has 1 param groups"):
        opt.step(fp16_param_groups=[[], []])


@pytest.mark.parametrize("adam_w_mode", [True, False])
def test_fused_adam_matches_torch(adam_w_mode):
    ps, qs = _params(4), _params(4)
    for p, q in zip(ps, qs):
        p.requires_grad_()
        q.requires_grad_()
    ours = FusedAdam(ps, adam_w_mode=adam_w_mode, **KW)
    assert ours.implementation == "fused"  # torch has a fused CPU Adam
    ref = (torch.optim.AdamW if adam_w_mode else torch.optim.Adam)(qs, **KW)
    with torch.no_grad():
        run_pair(ours, ref, ps, qs, steps=50)
    for a, b in zip(ps, qs):
        close(a.detach(), b.detach(), "param")
    ours.zero_grad()
    assert all(p.grad is None for p in ps)  # set_grad_none=True


def test_fused_adam_rejects_amsgrad():
    with pytest.raises(NotImplementedError, match="FusedAdam does not support amsgrad=True"):
        FusedAdam(_params(), amsgrad=True)

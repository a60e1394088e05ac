"""Shared by the CPU optimizer tests of core: a fixture body that makes every native build impossible
(so the pure-PyTorch reference path runs, whether or not ds-ops-cpu is installed), and the
comparison used against torch's optimizers.

Tolerance: max |ours - reference| <= 1e-6 * max |reference| per tensor after the steps
(per-element relative error is meaningless for elements crossing zero).
"""

from __future__ import annotations

import torch

from deepspeed.ops._cpu_optimizer import _reset_native
from deepspeed.ops.op_builder.builder import _clear_loaded

TOL = 1e-6


def close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    err = (ours.float() - ref.float()).abs().max().item()
    scale = ref.float().abs().max().item()
    assert err <= TOL * scale, f"{what}: max |diff| {err:.3e} > {TOL} * max|ref| {scale:.3e}"


def force_reference_path(monkeypatch, tmp_path):
    """Native ops cannot load: no prebuilt, an empty cache, and a compiler that does not exist."""
    monkeypatch.setenv("DS_OPS_SKIP_PREBUILT", "1")
    monkeypatch.setenv("DS_OPS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    _reset_native()
    _clear_loaded()
    yield
    _reset_native()
    _clear_loaded()


def run_pair(ours: torch.optim.Optimizer, ref: torch.optim.Optimizer, ours_p, ref_p, steps: int, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for a, b in zip(ours_p, ref_p):
            g = torch.randn(a.shape, generator=gen)
            a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        ref.step()

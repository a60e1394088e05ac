"""Each ds_config optimizer against its reference: the torch optimizer it must equal, or the
documented update formula (LAMB, Lion). 5 steps on one process, fp32; tolerance 1e-6 relative."""

import math
import os
import sys

import pytest
import torch

import deepspeed

sys.path.insert(0, os.path.dirname(__file__))
from _engine_models import batch, flat_params, model  # noqa: E402


def _run_engine(opt_cfg, steps=5):
    engine, opt, *_ = deepspeed.initialize(model=model(), config={"train_micro_batch_size_per_gpu": 4,
                                                                  "optimizer": opt_cfg})
    for step in range(steps):
        engine.backward(engine(*batch(step, 0)))
        engine.step()
    return engine, opt


def _run_reference(make_opt, steps=5, manual_step=None):
    m = model()
    opt = make_opt(list(m.parameters())) if make_opt else None
    state = {}
    for step in range(steps):
        for p in m.parameters():
            p.grad = None
        m(*batch(step, 0)).backward()
        if manual_step is not None:
            with torch.no_grad():
                manual_step(list(m.parameters()), state, step + 1)
        else:
            opt.step()
    return m


def _close(engine, ref):
    torch.testing.assert_close(flat_params(engine.module), flat_params(ref), rtol=1e-6, atol=1e-7)


HP = {"lr": 1e-2, "betas": [0.8, 0.95], "eps": 1e-6, "weight_decay": 0.1}


@pytest.mark.parametrize("cfg,ref", [
    ({"type": "Adam", "params": HP}, lambda p: torch.optim.AdamW(p, lr=1e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)),
    ({"type": "Adam", "params": {**HP, "adam_w_mode": False}},
     lambda p: torch.optim.Adam(p, lr=1e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)),
    ({"type": "AdamW", "params": {**HP, "adam_w_mode": False}},
     lambda p: torch.optim.AdamW(p, lr=1e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)),
    ({"type": "adam", "params": {**HP, "torch_adam": True}},
     lambda p: torch.optim.AdamW(p, lr=1e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)),
    ({"type": "SGD", "params": {"lr": 0.1, "momentum": 0.9, "nesterov": True}},
     lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True)),
    ({"type": "Adagrad", "params": {"lr": 0.1, "eps": 1e-8}}, lambda p: torch.optim.Adagrad(p, lr=0.1, eps=1e-8)),
    ({"type": "RMSprop", "params": {"lr": 0.01}}, lambda p: torch.optim.RMSprop(p, lr=0.01)),
])
def test_config_optimizer_matches_torch(cfg, ref):
    engine, opt = _run_engine(cfg)
    _close(engine, _run_reference(ref))


def test_torch_adam_gives_torch_classes():
    _, opt = _run_engine({"type": "Adam", "params": {"lr": 1e-3, "torch_adam": True, "adam_w_mode": False}}, steps=0)
    assert type(opt) is torch.optim.Adam
    _, opt = _run_engine({"type": "Adam", "params": {"lr": 1e-3, "torch_adam": True}}, steps=0)
    assert type(opt) is torch.optim.AdamW


def _lamb_step(params, state, t, lr=1e-2, b1=0.9, b2=0.999, eps=1e-8, wd=0.01, max_coeff=10.0, min_coeff=0.01):
    for p in params:
        st = state.setdefault(p, {"m": torch.zeros_like(p), "v": torch.zeros_like(p)})
        g = p.grad
        st["m"] = b1 * st["m"] + (1 - b1) * g
        st["v"] = b2 * st["v"] + (1 - b2) * g * g
        u = st["m"] / (st["v"].sqrt() + eps) + wd * p
        w_norm, u_norm = p.norm().item(), u.norm().item()
        trust = min(max(w_norm / u_norm, min_coeff), max_coeff) if w_norm > 0 and u_norm > 0 else 1.0
        step = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
        p.sub_(step * trust * u)


def test_lamb_matches_formula():
    engine, opt = _run_engine({"type": "Lamb", "params": {"lr": 1e-2, "weight_decay": 0.01}})
    assert type(opt).__name__ == "FusedLamb" and len(opt.get_lamb_coeffs()) == 8
    _close(engine, _run_reference(None, manual_step=_lamb_step))


def _lion_step(params, state, t, lr=1e-3, b1=0.9, b2=0.99, wd=0.1):
    for p in params:
        m = state.setdefault(p, torch.zeros_like(p))
        c = b1 * m + (1 - b1) * p.grad
        p.mul_(1 - lr * wd).sub_(lr * torch.sign(c))
        state[p] = b2 * m + (1 - b2) * p.grad


def test_lion_matches_formula():
    engine, opt = _run_engine({"type": "Lion", "params": {"lr": 1e-3, "betas": [0.9, 0.99], "weight_decay": 0.1}})
    assert "Lion" in type(opt).__name__
    _close(engine, _run_reference(None, manual_step=_lion_step))

"""Read and write one parameter's fp32 master value, gradient or optimizer state under ZeRO.

``safe_get_full_*`` / ``safe_set_full_*`` are collectives: every data-parallel rank must call them
with the same parameter. ``safe_get_local_*`` return this rank's fragment only (stages 1-2: the
part of the parameter inside the rank's partition, possibly None; stage 3: its
``ceil(numel / world)``-element slice). Gradients are valid between ``backward`` and ``step``
and come back unscaled. For a parameter ZeRO does not manage, the getters return None.
"""

from __future__ import annotations

import torch

from deepspeed.protocols.optimizer import Fragment

__all__ = [
    "safe_get_full_fp32_param", "safe_set_full_fp32_param", "safe_get_full_grad", "safe_set_full_grad",
    "safe_get_full_optimizer_state", "safe_set_full_optimizer_state", "safe_get_local_fp32_param",
    "safe_set_local_fp32_param", "safe_get_local_grad", "safe_set_local_grad", "safe_get_local_optimizer_state",
    "safe_set_local_optimizer_state", "safe_update_full_grad_vectorized",
]


def _optimizer(param: torch.Tensor):
    ref = getattr(param, "_zero_optimizer", None)
    return ref() if ref is not None else None


def _need(param: torch.Tensor, fn: str):
    opt = _optimizer(param)
    if opt is None:
        raise ValueError(f"{fn}: the parameter {tuple(param.shape)} is not managed by a ZeRO optimizer "
                         "(trainable parameters of an engine with zero_optimization.stage >= 1 are)")
    return opt


def safe_get_full_fp32_param(param):
    """The full fp32 master value of ``param`` (None if ZeRO does not manage it)."""
    opt = _optimizer(param)
    return None if opt is None else opt.get_full_fragment(param, Fragment.FP32_PARAM)


def safe_set_full_fp32_param(param, value):
    """Overwrite ``param``'s fp32 master value (and its low-precision copy) on every rank."""
    _need(param, "safe_set_full_fp32_param").set_full_fragment(param, value, Fragment.FP32_PARAM)


def safe_get_full_grad(param):
    """The full averaged gradient of ``param`` (between backward and step)."""
    opt = _optimizer(param)
    return None if opt is None else opt.get_full_fragment(param, Fragment.GRAD)


def safe_set_full_grad(param, value):
    _need(param, "safe_set_full_grad").set_full_fragment(param, value, Fragment.GRAD)


def safe_get_full_optimizer_state(param, optim_state_key):
    """The full optimizer state ``optim_state_key`` (e.g. ``"exp_avg"``) of ``param``."""
    opt = _optimizer(param)
    return None if opt is None else opt.get_full_fragment(param, Fragment.OPTIMIZER_STATE, optim_state_key)


def safe_set_full_optimizer_state(param, value, optim_state_key):
    _need(param, "safe_set_full_optimizer_state").set_full_fragment(param, value, Fragment.OPTIMIZER_STATE, optim_state_key)


def safe_get_local_fp32_param(param):
    opt = _optimizer(param)
    return None if opt is None else opt.get_local_fragment(param, Fragment.FP32_PARAM)


def safe_set_local_fp32_param(param, value):
    _need(param, "safe_set_local_fp32_param").set_local_fragment(param, value, Fragment.FP32_PARAM)


def safe_get_local_grad(param):
    opt = _optimizer(param)
    return None if opt is None else opt.get_local_fragment(param, Fragment.GRAD)


def safe_set_local_grad(param, value):
    _need(param, "safe_set_local_grad").set_local_fragment(param, value, Fragment.GRAD)


def safe_get_local_optimizer_state(param, optim_state_key):
    opt = _optimizer(param)
    return None if opt is None else opt.get_local_fragment(param, Fragment.OPTIMIZER_STATE, optim_state_key)


def safe_set_local_optimizer_state(param, value, optim_state_key):
    _need(param, "safe_set_local_optimizer_state").set_local_fragment(param, value, Fragment.OPTIMIZER_STATE, optim_state_key)


def safe_update_full_grad_vectorized(param_list, update_func) -> None:
    """Replace the full gradient of each parameter in ``param_list`` with
    ``update_func(full_grad, param)`` (DeepSpeed's helper, e.g. to scale or mask gradients between
    backward and step). A parameter whose ``.grad`` is set (not partitioned) is updated in place;
    a ZeRO-managed one through its optimizer, which makes this a collective at stage 3 (every
    rank calls it with the same list). ``update_func`` should return the gradient-accumulation
    dtype; parameters without a gradient are skipped."""
    for param in param_list:
        if param.grad is not None:
            param.grad.copy_(update_func(param.grad, param))
            continue
        if not param.requires_grad or _optimizer(param) is None:
            continue
        full = safe_get_full_grad(param)
        if full is not None:
            safe_set_full_grad(param, update_func(full, param))

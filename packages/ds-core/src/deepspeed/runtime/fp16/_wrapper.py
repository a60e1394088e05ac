"""What :class:`~deepspeed.runtime.fp16.fused_optimizer.FP16_Optimizer`,
:class:`~deepspeed.runtime.fp16.unfused_optimizer.FP16_UnfusedOptimizer` and
:class:`~deepspeed.runtime.bf16_optimizer.BF16_Optimizer` share: the engine's mixed-precision
optimizer (:class:`~deepspeed.runtime._precision.MixedPrecisionOptimizer`) built either by the
engine (over its flat gradient buffer) or by a user with DeepSpeed's constructor, around a torch
optimizer over a model already in fp16/bf16.

Standalone use follows DeepSpeed: ``opt.backward(loss)`` scales the loss and runs backward;
``opt.step()`` moves the model's ``.grad`` into the flat gradient buffer, unscales, skips the
update when the gradients are not finite (lowering a dynamic scale), clips, steps the fp32
master weights and copies them back into the model; ``opt.zero_grad()`` clears the gradients.
"""

from __future__ import annotations

from typing import Any

import torch

from deepspeed.runtime._precision import MixedPrecisionOptimizer
from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler, LossScalerBase


def trainable_params(optimizer: torch.optim.Optimizer, dtype: torch.dtype, owner: str) -> list[list[torch.nn.Parameter]]:
    """The trainable parameters of each param group, checked to be ``dtype`` on one device."""
    groups = []
    device = None
    for g, group in enumerate(optimizer.param_groups):
        params = [p for p in group["params"] if p.requires_grad]
        for i, p in enumerate(params):
            if p.dtype != dtype:
                raise ValueError(f"{owner}: parameter {i} of param group {g} is {p.dtype}, expected {dtype}; "
                                 f"cast the model (model.to({dtype})) before building its optimizer")
            if device is None:
                device = p.device
            elif p.device != device:
                raise ValueError(f"{owner}: parameters are on {device} and {p.device}; put the model on one device")
        groups.append(params)
    if not any(groups):
        raise ValueError(f"{owner}: the optimizer has no trainable parameters")
    return groups


def make_scaler(dtype: torch.dtype, static_loss_scale: float, dynamic_loss_scale: bool,
                initial_dynamic_scale: float | None, dynamic_loss_args: dict | None) -> LossScalerBase:
    """DeepSpeed's choice: a dynamic scaler for fp16 when asked (``dynamic_loss_args`` uses the
    ``init_scale``/``scale_window``/``delayed_shift``/``consecutive_hysteresis``/``min_scale``
    keys), else a static scale (1.0 for bf16)."""
    if dtype == torch.float16 and dynamic_loss_scale:
        args = dict(dynamic_loss_args or {})
        if initial_dynamic_scale is not None:
            args.setdefault("init_scale", initial_dynamic_scale)
        return DynamicLossScaler(dtype=dtype, **args)
    return LossScaler(scale=float(static_loss_scale) if dtype == torch.float16 else 1.0)


class PrecisionWrapper(MixedPrecisionOptimizer):
    """The shared implementation; subclasses give DeepSpeed's constructors."""

    #: True when built by a user (gradients arrive in ``.grad``), False when built by the engine.
    _standalone = False
    verbose = True
    deepspeed = None
    mpu = None

    @classmethod
    def _for_engine(cls, optimizer: Any, params: list, lp_grads: torch.Tensor, loss_scaler: LossScalerBase,
                    clip_grad: float = 0.0, check_overflow: bool = True):
        """The engine's constructor: ``lp_grads`` is its flat gradient buffer, already reduced."""
        obj = cls.__new__(cls)
        MixedPrecisionOptimizer.__init__(obj, optimizer, params, lp_grads, loss_scaler, clip_grad, check_overflow)
        obj._groups = [list(params)]
        obj._external_scale = None
        obj.low_precision_dtype = params[0].dtype
        return obj

    def _init_standalone(self, optimizer: torch.optim.Optimizer, dtype: torch.dtype, grad_dtype: torch.dtype,
                         scaler: LossScalerBase, clip_grad: float, check_overflow: bool, owner: str) -> None:
        groups = trainable_params(optimizer, dtype, owner)
        params = [p for group in groups for p in group]
        numel = sum(p.numel() for p in params)
        lp_grads = torch.zeros(numel, dtype=grad_dtype, device=params[0].device)
        MixedPrecisionOptimizer.__init__(self, optimizer, params, lp_grads, scaler, float(clip_grad or 0.0),
                                         check_overflow)
        self._groups = groups
        self._standalone = True
        self._external_scale = None
        self._grad_views = []
        off = 0
        for p in params:
            self._grad_views.append(lp_grads[off:off + p.numel()].view_as(p))
            off += p.numel()

    # -- DeepSpeed's attributes ---------------------------------------------------------------

    @property
    def fp16_groups(self) -> list[list[torch.nn.Parameter]]:
        """The model's low-precision parameters, per param group (DeepSpeed's name, also for bf16)."""
        return self._groups

    @property
    def fp16_groups_flat(self) -> list[torch.Tensor]:
        return [self.lp_flat]

    @property
    def fp32_groups_flat(self) -> list[torch.Tensor]:
        return [self.fp32_flat]

    @property
    def loss_scale(self) -> float:
        return self._external_scale if self._external_scale is not None else self.loss_scaler.loss_scale

    @property
    def cur_scale(self) -> float:
        return self.loss_scale

    def override_loss_scale(self, loss_scale: float) -> None:
        """Use ``loss_scale`` from now on instead of the scaler's (DeepSpeed's method)."""
        self._external_scale = float(loss_scale)

    def get_lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def refresh_fp32_params(self) -> None:
        """Copy the model's weights into the fp32 master weights (after loading the module)."""
        self.refresh_master_from_model()

    # -- standalone training step -------------------------------------------------------------

    def backward(self, loss: torch.Tensor, create_graph: bool = False, retain_graph: bool = False) -> None:
        """``(loss.float() * loss_scale).backward()``."""
        (loss.float() * self.loss_scale).backward(create_graph=create_graph, retain_graph=retain_graph)

    def _gather_grads(self) -> None:
        for p, view in zip(self.lp_params, self._grad_views):
            g = p.grad
            if g is None:
                continue
            if g.data_ptr() != view.data_ptr():
                view.add_(g.detach().to(view.dtype))
            p.grad = None

    def step(self, closure=None) -> bool:
        """One update; True when applied, False when skipped (``overflow``: non-finite gradients).
        Standalone, the model's ``.grad`` are consumed and cleared."""
        if closure is not None:
            raise NotImplementedError(f"{type(self).__name__}.step(closure): closures are not supported; "
                                      "call backward() then step()")
        if self._standalone:
            self._gather_grads()
        if self._external_scale is not None and not self.loss_scaler.dynamic:
            self.loss_scaler.cur_scale = self._external_scale
        return super().step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        if self._standalone:
            for p in self.lp_params:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()
        super().zero_grad(set_to_none)

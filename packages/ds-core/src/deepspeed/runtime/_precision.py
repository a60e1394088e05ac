"""Mixed precision for the engine without ZeRO: fp16 or bf16 model weights, fp32 master weights.

The model's trainable parameters become views of one flat low-precision buffer and the master
weights views of one flat fp32 buffer, so each step costs one cast-copy of the gradients, one
norm (clipping, and the check that skips a step with NaN/inf gradients), the optimizer step on fp32, and one
cast-copy back into the model.
"""

from __future__ import annotations

from typing import Any

import torch

from deepspeed.protocols.optimizer import DeepSpeedOptimizer
from deepspeed.runtime.fp16.loss_scaler import LossScalerBase
from deepspeed.runtime.utils import clip_coefficient


class MixedPrecisionOptimizer(DeepSpeedOptimizer):
    """Wraps a torch optimizer so it steps fp32 master copies of low-precision model weights.

    ``params`` are the model's trainable parameters in the reducer's flat order, ``lp_grads`` the
    reducer's flat gradient buffer (low precision, or fp32 when gradients accumulate in fp32: then
    it is used in place as the master gradients). ``overflow`` is True after a skipped step.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], lp_grads: torch.Tensor,
                 loss_scaler: LossScalerBase, clip_grad: float = 0.0, check_overflow: bool = True):
        self.optimizer = optimizer
        self.loss_scaler = loss_scaler
        self.clip_grad = clip_grad
        self.check_overflow = check_overflow
        self.overflow = False
        self._global_grad_norm: torch.Tensor | None = None
        #: The global norm of gradients laid out like ``lp_grads`` (the engine's reducer sets it when
        #: some parameters are sharded over data-parallel ranks); None: the local norm.
        self.norm_fn = None
        self.lp_params = params
        self.lp_grads = lp_grads
        dtype = params[0].dtype
        with torch.no_grad():
            self.lp_flat = torch.cat([p.detach().reshape(-1) for p in params]).to(dtype)
            self.fp32_flat = self.lp_flat.float()
        # Note: fp32-accumulated gradients already are the master gradients: no copy per step.
        self._alias_grads = lp_grads.dtype == torch.float32
        self.fp32_grads = lp_grads if self._alias_grads else torch.zeros_like(self.fp32_flat)
        self.fp32_params: list[torch.nn.Parameter] = []
        master_of: dict[int, torch.nn.Parameter] = {}
        off = 0
        for p in params:
            n = p.numel()
            p.data = self.lp_flat[off:off + n].view_as(p)
            mp = torch.nn.Parameter(self.fp32_flat[off:off + n].view_as(p))
            mp.grad = self.fp32_grads[off:off + n].view_as(p)
            self.fp32_params.append(mp)
            master_of[id(p)] = mp
            off += n
        # Note: the optimizer may have been built over the model's parameters (a client optimizer);
        # its groups are pointed at the master copies, keeping every group's hyper-parameters.
        for group in optimizer.param_groups:
            group["params"] = [master_of.get(id(p), p) for p in group["params"]]

    # -- DeepSpeed's optimizer surface -----------------------------------------------------

    @property
    def cur_scale(self) -> float:
        return self.loss_scaler.loss_scale

    @property
    def loss_scale(self) -> float:
        return self.loss_scaler.loss_scale

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.lp_grads.zero_()

    def step(self, closure=None) -> bool:
        """One update from the (already reduced) low-precision gradients, which are zeroed
        afterwards; returns False when the step was skipped (fp16 overflow)."""
        g = self.fp32_grads
        if not self._alias_grads:
            g.copy_(self.lp_grads)
        scale = self.loss_scaler.loss_scale
        if scale != 1.0:
            g.mul_(1.0 / scale)
        # Note: the norm doubles as the non-finite check; fp16 with a dynamic scale lowers the
        # scale on overflow (DeepSpeed), bf16 and static scales just skip (the engine warns).
        norm = torch.linalg.vector_norm(g) if self.norm_fn is None else self.norm_fn(g)
        self._global_grad_norm = norm
        self.overflow = not bool(torch.isfinite(norm))
        if self.overflow:
            if self.check_overflow and self.loss_scaler.dynamic:
                self.loss_scaler.update_scale(True)
            self.lp_grads.zero_()
            return False
        if self.clip_grad > 0:
            g.mul_(clip_coefficient(norm, self.clip_grad))
        self.optimizer.step()
        with torch.no_grad():
            self.lp_flat.copy_(self.fp32_flat)
        self.lp_grads.zero_()
        self.loss_scaler.update_scale(False)
        return True

    def state_dict(self) -> dict:
        return {
            "optimizer_state_dict": self.optimizer.state_dict(),
            "fp32_groups_flat": [self.fp32_flat],
            "loss_scaler": self.loss_scaler.state_dict(),
            "dynamic_loss_scale": self.loss_scaler.dynamic,
            "overflow": self.overflow,
            "clip_grad": self.clip_grad,
        }

    def load_state_dict(self, sd: dict, load_optimizer_states: bool = True) -> None:
        if load_optimizer_states:
            self.optimizer.load_state_dict(sd["optimizer_state_dict"])
        self.loss_scaler.load_state_dict(sd["loss_scaler"])
        self.overflow = sd.get("overflow", False)
        with torch.no_grad():
            self.fp32_flat.copy_(sd["fp32_groups_flat"][0])
            self.lp_flat.copy_(self.fp32_flat)

    def refresh_master_from_model(self) -> None:
        """Copy the model weights into the master weights (after the module was loaded)."""
        with torch.no_grad():
            self.fp32_flat.copy_(self.lp_flat)


def autocast_context(enabled: bool, device_type: str, dtype: torch.dtype | None) -> Any:
    import contextlib

    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=dtype or torch.bfloat16)

"""1-bit LAMB (``optimizer.type: "OneBitLamb"``): LAMB with the engine's fp32 gradient all-reduce
for ``freeze_step`` steps, then the variance frozen, the momentum averaged by the 1-bit
all-reduce, and the trust ratio taken from the warm-up instead of recomputed.

Warm-up: FusedLamb's update (``trust = clamp(||p|| / ||u||, min_coeff, max_coeff)``) while each
tensor's trust ratio is tracked as an EMA (``coeff_beta``). Compression stage: ``m`` is updated
with the local gradient and averaged (1-bit); the gradient that average implies,
``(m - b1*m_prev) / (1-b1)``, feeds a fresh variance estimate ``v_fresh``; the trust ratio is the
frozen EMA times ``factor = max(denom / denom_fresh)`` clamped to ``[factor_min, factor_max]``
and kept within ``factor_threshold`` (relative) of the previous step's factor, DeepSpeed's scheme.
"""

from __future__ import annotations

import math

import torch

from deepspeed.runtime.fp16.onebit._common import OnebitBase, grad_of
from deepspeed.utils.logging import logger


class OnebitLamb(OnebitBase):
    """DeepSpeed's ``deepspeed.runtime.fp16.onebit.lamb.OnebitLamb`` signature."""

    _type_name = "OneBitLamb"

    def __init__(self, params, deepspeed=None, lr=1e-3, freeze_step=100000, bias_correction=True,
                 betas=(0.9, 0.999), eps=1e-8, eps_inside_sqrt=False, weight_decay=0.0, max_grad_norm=0.0,
                 max_coeff=10.0, min_coeff=0.01, amsgrad=False, cuda_aware=False, comm_backend_name="nccl",
                 coeff_beta=0.9, factor_max=4.0, factor_min=0.5, factor_threshold=0.1):
        if amsgrad:
            raise RuntimeError("1-bit Lamb does not support the AMSGrad variant.")
        defaults = dict(lr=lr, bias_correction=bias_correction, betas=betas, eps=eps, weight_decay=weight_decay,
                        max_grad_norm=max_grad_norm, max_coeff=max_coeff, min_coeff=min_coeff)
        super().__init__(params, deepspeed, defaults, cuda_aware=cuda_aware, comm_backend_name=comm_backend_name)
        self.freeze_step = int(freeze_step)
        self.eps_mode = 0 if eps_inside_sqrt else 1
        self.coeff_beta = float(coeff_beta)
        self.factor_max = float(factor_max)
        self.factor_min = float(factor_min)
        self.factor_threshold = float(factor_threshold)
        self.lamb_freeze_key = False
        self.lamb_coeffs: list[float] = []

    def get_lamb_coeffs(self) -> list[float]:
        return [float(c) for c in self.lamb_coeffs]

    def _denom(self, v, eps):
        return (v + eps).sqrt() if self.eps_mode == 0 else v.sqrt().add_(eps)

    @torch.no_grad()
    def step(self, closure=None, grads=None):
        loss = closure() if closure is not None else None
        frozen = self.lamb_freeze_key
        self.lamb_coeffs = []
        for group in self.param_groups:
            b1, b2 = group["betas"]
            params = group["params"]
            for p in params:
                st = self.state[p]
                if "exp_avg" not in st:
                    st["step"] = 0
                    st["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    st["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                    st["lamb_coeff_freeze"] = 0.0
                    st["last_factor"] = 1.0
                g = grad_of(p).float()
                if frozen:
                    st["exp_avg_last"] = st["exp_avg"].clone()
                    if "exp_avg_sq_fresh" not in st:
                        st["exp_avg_sq_fresh"] = st["exp_avg_sq"].clone()
                st["exp_avg"].mul_(b1).add_(g, alpha=1 - b1)
                if not frozen:
                    st["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
                st["step"] += 1
            if frozen:
                self._compress(group, [self.state[p]["exp_avg"] for p in params])
            for p in params:
                st = self.state[p]
                t = min(st["step"], self.freeze_step)
                step_size = group["lr"]
                if group["bias_correction"]:
                    step_size = step_size * math.sqrt(1 - b2 ** t) / (1 - b1 ** st["step"])
                denom = self._denom(st["exp_avg_sq"], group["eps"])
                update = st["exp_avg"] / denom
                if group["weight_decay"] > 0:
                    update.add_(p.float(), alpha=group["weight_decay"])
                if not frozen:
                    wn, un = p.float().norm(), update.norm()
                    coeff = 1.0
                    if wn > 0 and un > 0:
                        coeff = float((wn / un).clamp(group["min_coeff"], group["max_coeff"]))
                    if st["step"] > 1:
                        st["lamb_coeff_freeze"] = self.coeff_beta * st["lamb_coeff_freeze"] + (1 - self.coeff_beta) * coeff
                    else:
                        st["lamb_coeff_freeze"] = coeff
                else:
                    g_rec = (st["exp_avg"] - st["exp_avg_last"] * b1) / (1 - b1)
                    st["exp_avg_sq_fresh"].mul_(b2).addcmul_(g_rec, g_rec, value=1 - b2)
                    fresh = self._denom(st["exp_avg_sq_fresh"], group["eps"])
                    factor = float((denom / fresh).max())
                    factor = min(max(factor, self.factor_min), self.factor_max)
                    last = st["last_factor"]
                    factor = min(max(factor, last * (1 - self.factor_threshold)), last * (1 + self.factor_threshold))
                    st["last_factor"] = factor
                    coeff = st["lamb_coeff_freeze"] * factor
                    del st["exp_avg_last"]
                self.lamb_coeffs.append(coeff)
                p.add_(update.to(p.dtype), alpha=-step_size * coeff)
        if not self.lamb_freeze_key and self._max_step() >= self.freeze_step:
            logger.info("OnebitLamb - starting compressed communication")
            self.lamb_freeze_key = True
            self._set_backward_allreduce(False)
        return loss

    def _max_step(self) -> int:
        return max((st.get("step", 0) for st in self.state.values()), default=0)

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self.lamb_freeze_key = self._max_step() >= self.freeze_step
        self._set_backward_allreduce(not self.lamb_freeze_key)

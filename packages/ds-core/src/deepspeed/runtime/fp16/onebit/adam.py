"""1-bit Adam (``optimizer.type: "OneBitAdam"``): Adam with the engine's fp32 gradient all-reduce
for ``freeze_step`` steps (warm-up), then the variance frozen and the momentum averaged by the
error-compensated 1-bit all-reduce (:mod:`deepspeed.comm.compressed`) instead of the gradients.

Update: ``m = b1*m + (1-b1)*g`` (after the warm-up ``g`` is the local gradient and ``m`` is then
averaged over the ranks, compressed), ``v = b2*v + (1-b2)*g^2`` during the warm-up only,
``p -= lr * (m_hat / (sqrt(v_hat) + eps) + weight_decay * p)``. With ``bias_correction`` (the
default) ``m_hat``/``v_hat`` are Adam's bias-corrected moments, ``v``'s correction stopping at the
freeze step (DeepSpeed accepts the flag but applies no correction; ``bias_correction: false`` is
its update). The switch happens at the end of step ``freeze_step`` and is restored from a
checkpoint (the error-feedback buffers are saved with the state, so a resume continues
bit-identically).
"""

from __future__ import annotations

import torch

from deepspeed.runtime.fp16.onebit._common import OnebitBase, grad_of
from deepspeed.utils.logging import logger


class OnebitAdam(OnebitBase):
    """DeepSpeed's ``deepspeed.runtime.fp16.onebit.adam.OnebitAdam`` signature: ``deepspeed`` is
    the engine (``deepspeed.initialize`` passes it when the config names the optimizer)."""

    _type_name = "OneBitAdam"

    def __init__(self, params, deepspeed=None, lr=1e-3, freeze_step=100000, bias_correction=True,
                 betas=(0.9, 0.999), eps=1e-8, eps_inside_sqrt=False, weight_decay=0.0, max_grad_norm=0.0,
                 amsgrad=False, cuda_aware=False, comm_backend_name="nccl"):
        if amsgrad:
            raise RuntimeError("1-bit Adam does not support the AMSGrad variant.")
        defaults = dict(lr=lr, bias_correction=bias_correction, betas=betas, eps=eps, weight_decay=weight_decay,
                        max_grad_norm=max_grad_norm)
        super().__init__(params, deepspeed, defaults, cuda_aware=cuda_aware, comm_backend_name=comm_backend_name)
        self.freeze_step = int(freeze_step)
        self.eps_mode = 0 if eps_inside_sqrt else 1
        self.adam_freeze_key = False

    @torch.no_grad()
    def step(self, closure=None, grads=None):
        loss = closure() if closure is not None else None
        frozen = self.adam_freeze_key
        for group in self.param_groups:
            b1, b2 = group["betas"]
            params = group["params"]
            for p in params:
                st = self.state[p]
                if "exp_avg" not in st:
                    st["step"] = 0
                    st["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    st["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                g = grad_of(p).float()
                st["exp_avg"].mul_(b1).add_(g, alpha=1 - b1)
                if not frozen:
                    st["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
                st["step"] += 1
            if frozen:
                self._compress(group, [self.state[p]["exp_avg"] for p in params])
            for p in params:
                st = self.state[p]
                step = st["step"]
                c1 = 1 - b1 ** step if group["bias_correction"] else 1.0
                c2 = 1 - b2 ** min(step, self.freeze_step) if group["bias_correction"] else 1.0
                v = st["exp_avg_sq"] / c2
                denom = (v + group["eps"]).sqrt() if self.eps_mode == 0 else v.sqrt().add_(group["eps"])
                update = st["exp_avg"] / c1 / denom
                if group["weight_decay"] > 0:
                    update.add_(p.float(), alpha=group["weight_decay"])
                p.add_(update.to(p.dtype), alpha=-group["lr"])
        if not self.adam_freeze_key and self._max_step() >= self.freeze_step:
            logger.info("OnebitAdam - starting compressed communication")
            self.adam_freeze_key = True
            self._set_backward_allreduce(False)
        return loss

    def _max_step(self) -> int:
        return max((st.get("step", 0) for st in self.state.values()), default=0)

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self.adam_freeze_key = self._max_step() >= self.freeze_step
        self._set_backward_allreduce(not self.adam_freeze_key)

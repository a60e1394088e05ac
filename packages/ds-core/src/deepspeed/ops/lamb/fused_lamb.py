"""``FusedLamb``: LAMB with DeepSpeed's semantics, in plain PyTorch (foreach ops).

Per parameter ``p`` with gradient ``g`` at step ``t``::

    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    denom = sqrt(v) + eps                      (sqrt(v + eps) when eps_inside_sqrt)
    u = m / denom + weight_decay * p
    trust = clamp(||p|| / ||u||, min_coeff, max_coeff)   (1 when either norm is 0)
    step = lr * sqrt(1 - b2**t) / (1 - b1**t)            (lr without bias_correction)
    p -= step * trust * u

``max_grad_norm`` > 0 scales a group's gradients down first when their norm exceeds it.
``get_lamb_coeffs()`` returns the trust ratios of the last step.
"""

from __future__ import annotations

import math

import torch


class FusedLamb(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-3, bias_correction: bool = True, betas=(0.9, 0.999),
                 eps: float = 1e-8, eps_inside_sqrt: bool = False, weight_decay: float = 0.0,
                 max_grad_norm: float = 0.0, max_coeff: float = 10.0, min_coeff: float = 0.01,
                 amsgrad: bool = False):
        if amsgrad:
            raise NotImplementedError("FusedLamb does not support amsgrad=True; remove it from optimizer.params")
        defaults = dict(lr=lr, bias_correction=bias_correction, betas=betas, eps=eps, weight_decay=weight_decay,
                        max_grad_norm=max_grad_norm, max_coeff=max_coeff, min_coeff=min_coeff)
        super().__init__(params, defaults)
        self.eps_mode = 0 if eps_inside_sqrt else 1
        self.lamb_coeffs: list[float] = []

    def get_lamb_coeffs(self) -> list[float]:
        return [float(c) for c in self.lamb_coeffs]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.lamb_coeffs = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            b1, b2 = group["betas"]
            grads = [p.grad if p.grad.dtype == torch.float32 else p.grad.float() for p in params]
            if group["max_grad_norm"] > 0:
                norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
                clip = (norm + 1e-6) / group["max_grad_norm"]
                grads = torch._foreach_div(grads, torch.clamp(clip, min=1.0))
            exp_avg, exp_avg_sq = [], []
            for p in params:
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    st["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                st["step"] += 1
                exp_avg.append(st["exp_avg"])
                exp_avg_sq.append(st["exp_avg_sq"])
            t = self.state[params[0]]["step"]
            torch._foreach_lerp_(exp_avg, grads, 1 - b1)
            torch._foreach_mul_(exp_avg_sq, b2)
            torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - b2)
            if self.eps_mode == 0:
                denom = torch._foreach_sqrt(torch._foreach_add(exp_avg_sq, group["eps"]))
            else:
                denom = torch._foreach_add(torch._foreach_sqrt(exp_avg_sq), group["eps"])
            update = torch._foreach_div(exp_avg, denom)
            if group["weight_decay"]:
                torch._foreach_add_(update, params, alpha=group["weight_decay"])
            w_norm = torch._foreach_norm(params)
            u_norm = torch._foreach_norm(update)
            step_size = group["lr"]
            if group["bias_correction"]:
                step_size = step_size * math.sqrt(1 - b2**t) / (1 - b1**t)
            for p, u, wn, un in zip(params, update, w_norm, u_norm):
                ratio = torch.where((wn > 0) & (un > 0), wn / un, torch.ones_like(wn))
                coeff = ratio.clamp(group["min_coeff"], group["max_coeff"])
                coeff = torch.where((wn > 0) & (un > 0), coeff, torch.ones_like(wn))
                self.lamb_coeffs.append(coeff)
                p.add_(u * coeff, alpha=-step_size)
        return loss

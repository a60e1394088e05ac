"""``FusedLion``: Lion with torch's multi-tensor (``_foreach``) ops, on any device."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch


class FusedLion(torch.optim.Optimizer):
    """Lion with DeepSpeed's ``FusedLion`` arguments, written with ``torch._foreach_*`` ops so it
    runs on every device torch supports. Same update as ``DeepSpeedCPULion``."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        set_grad_none: bool = True,
    ) -> None:
        if lr < 0 or weight_decay < 0:
            raise ValueError(f"FusedLion: lr={lr}, weight_decay={weight_decay} must be >= 0.")
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))
        self.set_grad_none = set_grad_none

    def zero_grad(self, set_to_none: bool | None = None) -> None:
        super().zero_grad(set_to_none=self.set_grad_none if set_to_none is None else set_to_none)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, exp_avgs = [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise NotImplementedError("FusedLion does not support sparse gradients.")
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                params.append(p)
                grads.append(p.grad)
                exp_avgs.append(state["exp_avg"])
            if not params:
                continue
            beta1, beta2 = group["betas"]
            lr, wd = float(group["lr"]), float(group["weight_decay"])
            update = torch._foreach_mul(exp_avgs, beta1)
            torch._foreach_add_(update, grads, alpha=1 - beta1)
            torch._foreach_sign_(update)
            if wd != 0:
                torch._foreach_mul_(params, 1 - lr * wd)
            torch._foreach_add_(params, update, alpha=-lr)
            torch._foreach_mul_(exp_avgs, beta2)
            torch._foreach_add_(exp_avgs, grads, alpha=1 - beta2)
        return loss

"""``DeepSpeedCPUAdam``: Adam/AdamW on host memory through the ``cpu_adam`` native op."""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch

from deepspeed.ops._cpu_optimizer import CPUOptimizer


class DeepSpeedCPUAdam(CPUOptimizer):
    """Adam (``adamw_mode=False``: L2 weight decay added to the gradient) or AdamW (default:
    decoupled weight decay) over fp32 master parameters on the CPU.

    Results match ``torch.optim.AdamW`` / ``torch.optim.Adam`` to rounding; the state
    (``step``, ``exp_avg``, ``exp_avg_sq``) is laid out as torch's, so ``state_dict``s move
    between the two. ``step(fp16_param_groups=...)`` also writes bf16/fp16 copies of the updated
    parameters in the same pass.
    """

    _OP = "cpu_adam"
    _STATES = ("exp_avg", "exp_avg_sq")

    def __init__(
        self,
        model_params: Iterable[Any],
        lr: float = 1e-3,
        bias_correction: bool = True,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        adamw_mode: bool = True,
        fp32_optimizer_states: bool = True,
    ) -> None:
        if amsgrad:
            raise NotImplementedError(
                "DeepSpeedCPUAdam does not support amsgrad=True (neither does DeepSpeed's). "
                "Fix: set amsgrad=False, or use torch.optim.Adam(amsgrad=True)."
            )
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(f"DeepSpeedCPUAdam: lr={lr}, eps={eps}, weight_decay={weight_decay} must be >= 0.")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"DeepSpeedCPUAdam: betas={betas} must each be in [0, 1).")
        # Note: torch's Adam group keys are kept too (decoupled_weight_decay is the per-group
        # AdamW switch), so state_dicts load into torch.optim.Adam/AdamW and back unchanged.
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, bias_correction=bias_correction, amsgrad=False,
            decoupled_weight_decay=adamw_mode, maximize=False, foreach=None, capturable=False,
            differentiable=False, fused=None,
        )
        self.adam_w_mode = adamw_mode
        super().__init__(model_params, defaults, fp32_optimizer_states)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("amsgrad", False)
            group.setdefault("bias_correction", True)
            group.setdefault("decoupled_weight_decay", self.adam_w_mode)

    def _scalars(self, group: dict[str, Any], step: float) -> dict[str, float]:
        beta1, beta2 = (float(b) for b in group["betas"])
        lr, wd = float(group["lr"]), float(group["weight_decay"])
        if group.get("bias_correction", True):
            step_size = lr / (1 - beta1**step)
            bc2_sqrt = math.sqrt(1 - beta2**step)
        else:
            step_size, bc2_sqrt = lr, 1.0
        if group.get("maximize", False):
            raise NotImplementedError("DeepSpeedCPUAdam does not support maximize=True. Fix: negate the loss instead.")
        return dict(
            adamw=bool(group.get("decoupled_weight_decay", self.adam_w_mode)), lr=lr, beta1=beta1, beta2=beta2, eps=float(group["eps"]), weight_decay=wd,
            step_size=step_size, bc2_sqrt=bc2_sqrt, decay=1 - lr * wd,
        )

    def _native_step(self, p, grad, state, lowp_ptr, lowp_kind, s, threads) -> None:
        self._op.adam_step(
            p.data_ptr(), grad.data_ptr(), state["exp_avg"].data_ptr(), state["exp_avg_sq"].data_ptr(), p.numel(),
            lowp_ptr, lowp_kind, s["step_size"], s["bc2_sqrt"], 1 - s["beta1"], s["beta2"], 1 - s["beta2"], s["eps"],
            s["weight_decay"], s["decay"], s["adamw"], self._isa_index, threads,
        )

    def _reference_step(self, p: torch.Tensor, grad: torch.Tensor, states: list[torch.Tensor], s: dict[str, float]) -> None:
        # Note: the order of operations is torch.optim.Adam's single-tensor path, which the
        # native kernel also follows, so all three agree to rounding.
        exp_avg, exp_avg_sq = states
        if s["weight_decay"] != 0:
            if s["adamw"]:
                p.mul_(s["decay"])
            else:
                grad = grad.add(p, alpha=s["weight_decay"])
        exp_avg.lerp_(grad, 1 - s["beta1"])
        exp_avg_sq.mul_(s["beta2"]).addcmul_(grad, grad, value=1 - s["beta2"])
        denom = (exp_avg_sq.sqrt() / s["bc2_sqrt"]).add_(s["eps"])
        p.addcdiv_(exp_avg, denom, value=-s["step_size"])

"""``DeepSpeedCPULion``: Lion on host memory through the ``cpu_lion`` native op."""

from __future__ import annotations

from typing import Any, Iterable

import torch

from deepspeed.ops._cpu_optimizer import CPUOptimizer


class DeepSpeedCPULion(CPUOptimizer):
    """Lion (Chen et al., 2023) over fp32 master parameters on the CPU:
    ``p = p * (1 - lr * wd) - lr * sign(beta1 * m + (1 - beta1) * g)``, then
    ``m = beta2 * m + (1 - beta2) * g``. State ``step`` and ``exp_avg``."""

    _OP = "cpu_lion"
    _STATES = ("exp_avg",)

    def __init__(
        self,
        model_params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0,
        fp32_optimizer_states: bool = True,
    ) -> None:
        if lr < 0 or weight_decay < 0:
            raise ValueError(f"DeepSpeedCPULion: lr={lr}, weight_decay={weight_decay} must be >= 0.")
        if not all(0.0 <= b <= 1.0 for b in betas):
            raise ValueError(f"DeepSpeedCPULion: betas={betas} must each be in [0, 1].")
        super().__init__(model_params, dict(lr=lr, betas=betas, weight_decay=weight_decay), fp32_optimizer_states)

    def _scalars(self, group: dict[str, Any], step: float) -> dict[str, float]:
        beta1, beta2 = (float(b) for b in group["betas"])
        lr, wd = float(group["lr"]), float(group["weight_decay"])
        return dict(lr=lr, beta1=beta1, beta2=beta2, decay=1 - lr * wd)

    def _native_step(self, p, grad, state, lowp_ptr, lowp_kind, s, threads) -> None:
        self._op.lion_step(
            p.data_ptr(), grad.data_ptr(), state["exp_avg"].data_ptr(), p.numel(), lowp_ptr, lowp_kind,
            s["lr"], s["beta1"], 1 - s["beta1"], s["beta2"], 1 - s["beta2"], s["decay"], self._isa_index, threads,
        )

    def _reference_step(self, p: torch.Tensor, grad: torch.Tensor, states: list[torch.Tensor], s: dict[str, float]) -> None:
        (exp_avg,) = states
        update = exp_avg.mul(s["beta1"]).add_(grad, alpha=1 - s["beta1"]).sign_()
        p.mul_(s["decay"]).add_(update, alpha=-s["lr"])
        exp_avg.mul_(s["beta2"]).add_(grad, alpha=1 - s["beta2"])

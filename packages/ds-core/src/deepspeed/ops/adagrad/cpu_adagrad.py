"""``DeepSpeedCPUAdagrad``: Adagrad on host memory through the ``cpu_adagrad`` native op."""

from __future__ import annotations

from typing import Any, Iterable

import torch

from deepspeed.ops._cpu_optimizer import CPUOptimizer


class DeepSpeedCPUAdagrad(CPUOptimizer):
    """Adagrad over fp32 master parameters on the CPU; matches ``torch.optim.Adagrad`` (no
    lr decay, zero initial accumulator) to rounding. State ``step`` and ``sum`` as torch's (a
    DeepSpeed checkpoint's ``exp_avg_sq`` is read as ``sum``)."""

    _OP = "cpu_adagrad"
    _STATES = ("sum",)

    def __init__(
        self,
        model_params: Iterable[Any],
        lr: float = 1e-2,
        eps: float = 1e-10,
        weight_decay: float = 0,
        amsgrad: bool = False,
        fp32_optimizer_states: bool = True,
    ) -> None:
        if amsgrad:
            raise NotImplementedError("DeepSpeedCPUAdagrad does not support amsgrad=True. Fix: set amsgrad=False.")
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(f"DeepSpeedCPUAdagrad: lr={lr}, eps={eps}, weight_decay={weight_decay} must be >= 0.")
        defaults = dict(lr=lr, eps=eps, weight_decay=weight_decay, amsgrad=False)
        super().__init__(model_params, defaults, fp32_optimizer_states)

    def _migrate_state(self, state: dict[str, Any]) -> None:
        if "sum" not in state and "exp_avg_sq" in state:
            state["sum"] = state.pop("exp_avg_sq")

    def _scalars(self, group: dict[str, Any], step: float) -> dict[str, float]:
        return dict(lr=float(group["lr"]), eps=float(group["eps"]), weight_decay=float(group["weight_decay"]))

    def _native_step(self, p, grad, state, lowp_ptr, lowp_kind, s, threads) -> None:
        self._op.adagrad_step(
            p.data_ptr(), grad.data_ptr(), state["sum"].data_ptr(), p.numel(), lowp_ptr, lowp_kind,
            s["lr"], s["eps"], s["weight_decay"], self._isa_index, threads,
        )

    def _reference_step(self, p: torch.Tensor, grad: torch.Tensor, states: list[torch.Tensor], s: dict[str, float]) -> None:
        (state_sum,) = states
        if s["weight_decay"] != 0:
            grad = grad.add(p, alpha=s["weight_decay"])
        state_sum.addcmul_(grad, grad, value=1)
        std = state_sum.sqrt().add_(s["eps"])
        p.addcdiv_(grad, std, value=-s["lr"])

"""Which of DeepSpeed's mixed-precision optimizer classes the engine builds without a
partitioning feature (DeepSpeed's rules): fp16 with a fused Adam -> ``FP16_Optimizer``, fp16 with
any other optimizer -> ``FP16_UnfusedOptimizer``; bf16 with fp32 gradient accumulation (the
default) -> ``BF16_Optimizer``, bf16 accumulated in bf16 -> the fp16 classes with bf16 weights
(DeepSpeed's "DDP bf16"). All share one implementation, so only the class differs."""

from __future__ import annotations

from typing import Any

import torch

from deepspeed.runtime.bf16_optimizer import BF16_Optimizer
from deepspeed.runtime.fp16.fused_optimizer import FP16_Optimizer
from deepspeed.runtime.fp16.loss_scaler import LossScalerBase
from deepspeed.runtime.fp16.unfused_optimizer import FP16_UnfusedOptimizer


def engine_precision_optimizer(optimizer: Any, params: list, flat_grads: torch.Tensor, loss_scaler: LossScalerBase,
                               clip_grad: float = 0.0, check_overflow: bool = True):
    """The engine's mixed-precision optimizer over its flat gradient buffer ``flat_grads``."""
    if params[0].dtype == torch.bfloat16 and flat_grads.dtype == torch.float32:
        cls = BF16_Optimizer
    elif type(optimizer).__name__ == "FusedAdam":  # ours or apex's, as DeepSpeed checks both
        cls = FP16_Optimizer
    else:
        cls = FP16_UnfusedOptimizer
    return cls._for_engine(optimizer, params, flat_grads, loss_scaler, clip_grad=clip_grad,
                           check_overflow=check_overflow)

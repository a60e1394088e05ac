"""``deepspeed.runtime.bf16_optimizer`` (DeepSpeed's path): :class:`BF16_Optimizer`, the bf16
optimizer with fp32 master weights and gradients accumulated in fp32, which the engine uses for
bf16 without ZeRO (its default gradient accumulation is fp32, as DeepSpeed's BF16_Optimizer).

DeepSpeed's BF16_Optimizer also partitions the fp32 state across ``dp_process_group`` (ZeRO-1
style); this one keeps the whole fp32 state on every rank (partitioned bf16 training is ds-zero's
stage 1), so its checkpoints hold everything in each rank's file.
"""

from __future__ import annotations

import torch

from deepspeed.runtime.fp16._wrapper import PrecisionWrapper
from deepspeed.runtime.fp16.loss_scaler import LossScaler


class BF16_Optimizer(PrecisionWrapper):
    """DeepSpeed's constructor: ``BF16_Optimizer(init_optimizer, param_names, bfloat16_config,
    mpu=None, clip_grad=0.0, norm_type=2, allgather_bucket_size=5000000000, dp_process_group=None,
    timers=None, grad_acc_dtype=None, has_moe_layers=False)``.

    ``backward(loss)`` adds each micro-batch's bf16 gradients into the fp32 gradient buffer (so
    accumulation happens in fp32) and clears ``.grad``; ``step()`` updates the fp32 master weights
    and copies them into the bf16 model. A step with non-finite gradients is skipped (``overflow``).
    """

    def __init__(self, init_optimizer, param_names=None, bfloat16_config=None, mpu=None, clip_grad=0.0, norm_type=2,
                 allgather_bucket_size=5000000000, dp_process_group=None, timers=None, grad_acc_dtype=None,
                 has_moe_layers=False):
        if norm_type != 2:
            raise NotImplementedError(f"BF16_Optimizer(norm_type={norm_type}): only the L2 norm (2) is implemented")
        grad_dtype = grad_acc_dtype or torch.float32
        if grad_dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"BF16_Optimizer(grad_acc_dtype={grad_acc_dtype}): use torch.float32 or torch.bfloat16")
        self.param_names = param_names
        self.bfloat16_config = bfloat16_config
        self.mpu = mpu
        self.dp_process_group = dp_process_group
        self.grad_acc_dtype = grad_dtype
        self._init_standalone(init_optimizer, torch.bfloat16, grad_dtype, LossScaler(1.0), clip_grad,
                              check_overflow=False, owner="BF16_Optimizer")

    def backward(self, loss: torch.Tensor, create_graph: bool = False, retain_graph: bool = False) -> None:
        super().backward(loss, create_graph=create_graph, retain_graph=retain_graph)
        if self._standalone:
            self._gather_grads()  # accumulate this micro-batch in grad_acc_dtype (fp32 by default)


__all__ = ["BF16_Optimizer"]

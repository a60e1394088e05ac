"""``deepspeed.runtime.fp16.unfused_optimizer`` (DeepSpeed's path): :class:`FP16_UnfusedOptimizer`,
the fp16 optimizer the engine uses without ZeRO for optimizers other than a fused Adam (LAMB,
torch optimizers). DeepSpeed keeps one fp32 copy per parameter here so per-tensor optimizers
(LAMB's trust ratio) see each tensor; ours does too, as views of one flat fp32 buffer, so the
arithmetic equals :class:`~deepspeed.runtime.fp16.fused_optimizer.FP16_Optimizer`'s, which it
subclasses (``isinstance(opt, FP16_Optimizer)`` holds for both)."""

from __future__ import annotations

import torch

from deepspeed.runtime.fp16.fused_optimizer import FP16_Optimizer


class FP16_UnfusedOptimizer(FP16_Optimizer):
    """DeepSpeed's constructor: ``FP16_UnfusedOptimizer(init_optimizer, deepspeed=None,
    loss_scale_config=None, low_precision_dtype=torch.float16, static_loss_scale=1.0,
    dynamic_loss_scale=False, dynamic_loss_args=None, verbose=True, mpu=None, clip_grad=0.0,
    fused_lamb_legacy=False)``; a dynamic scale starts at ``dynamic_loss_args["init_scale"]``
    (default 2**32)."""

    def __init__(self, init_optimizer, deepspeed=None, loss_scale_config=None, low_precision_dtype=torch.float16,
                 static_loss_scale=1.0, dynamic_loss_scale=False, dynamic_loss_args=None, verbose=True, mpu=None,
                 clip_grad=0.0, fused_lamb_legacy=False):
        self.fused_lamb_legacy = fused_lamb_legacy
        super().__init__(init_optimizer, deepspeed=deepspeed, loss_scale_config=loss_scale_config,
                         low_precision_dtype=low_precision_dtype, static_loss_scale=static_loss_scale,
                         dynamic_loss_scale=dynamic_loss_scale, initial_dynamic_scale=2**32,
                         dynamic_loss_args=dynamic_loss_args, verbose=verbose, mpu=mpu, clip_grad=clip_grad)


__all__ = ["FP16_UnfusedOptimizer"]

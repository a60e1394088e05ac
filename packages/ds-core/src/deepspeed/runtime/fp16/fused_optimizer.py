"""``deepspeed.runtime.fp16.fused_optimizer`` (DeepSpeed's path): :class:`FP16_Optimizer`, the
fp16 optimizer the engine uses without ZeRO when the optimizer is a fused Adam (fp32 master
weights in one flat buffer, dynamic or static loss scaling). See
:mod:`deepspeed.runtime.fp16._wrapper` for how it steps."""

from __future__ import annotations

import torch

from deepspeed.runtime.fp16._wrapper import PrecisionWrapper, make_scaler


class FP16_Optimizer(PrecisionWrapper):
    """DeepSpeed's constructor: ``FP16_Optimizer(init_optimizer, deepspeed=None, loss_scale_config=None,
    low_precision_dtype=torch.float16, static_loss_scale=1.0, dynamic_loss_scale=False,
    initial_dynamic_scale=2**32, dynamic_loss_args=None, verbose=True, mpu=None, clip_grad=0.0,
    fused_adam_legacy=False, has_moe_layers=False, timers=None)``.

    ``init_optimizer`` is a torch optimizer over the model's fp16 (or ``low_precision_dtype``)
    parameters; its param groups are pointed at the fp32 master weights. ``loss_scale_config``
    may be any object with ``dynamic_loss_scale``, ``cur_scale`` and ``dynamic_loss_args``
    attributes (DeepSpeed's LossScaleConfig); ``deepspeed``, ``mpu``, ``fused_adam_legacy``,
    ``has_moe_layers`` and ``timers`` are accepted for DeepSpeed's callers and not used: gradient
    reduction and the global norm across model-parallel ranks are the engine's.
    """

    def __init__(self, init_optimizer, deepspeed=None, loss_scale_config=None, low_precision_dtype=torch.float16,
                 static_loss_scale=1.0, dynamic_loss_scale=False, initial_dynamic_scale=2**32, dynamic_loss_args=None,
                 verbose=True, mpu=None, clip_grad=0.0, fused_adam_legacy=False, has_moe_layers=False, timers=None):
        if loss_scale_config is not None:
            dynamic_loss_scale = bool(getattr(loss_scale_config, "dynamic_loss_scale", dynamic_loss_scale))
            static_loss_scale = getattr(loss_scale_config, "cur_scale", static_loss_scale)
            dynamic_loss_args = getattr(loss_scale_config, "dynamic_loss_args", dynamic_loss_args)
            initial_dynamic_scale = getattr(loss_scale_config, "initial_dynamic_scale", initial_dynamic_scale)
        if low_precision_dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f"{type(self).__name__}: low_precision_dtype={low_precision_dtype}; use torch.float16 "
                             "or torch.bfloat16")
        self.verbose = verbose
        self.deepspeed = deepspeed
        self.mpu = mpu
        self.low_precision_dtype = low_precision_dtype
        scaler = make_scaler(low_precision_dtype, static_loss_scale, dynamic_loss_scale, initial_dynamic_scale,
                             dynamic_loss_args)
        self._init_standalone(init_optimizer, low_precision_dtype, low_precision_dtype, scaler, clip_grad,
                              check_overflow=True, owner=type(self).__name__)


__all__ = ["FP16_Optimizer"]

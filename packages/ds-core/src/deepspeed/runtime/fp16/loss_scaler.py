"""Loss scaling for fp16 training: a static :class:`LossScaler` and DeepSpeed's
:class:`DynamicLossScaler`.

Dynamic scaling (the fp16 config block's defaults): start at ``2**initial_scale_power``; when the
gradients overflow, the step is skipped and, once ``hysteresis`` overflows have been seen, the scale
is divided by ``scale_factor`` (never below ``min_loss_scale``); after ``loss_scale_window`` steps
without overflow the scale is multiplied by ``scale_factor``.
"""

from __future__ import annotations

import torch

from deepspeed.utils.logging import logger

# Keys of ``dynamic_loss_scale_args`` (DeepSpeed's names).
INITIAL_LOSS_SCALE = "init_scale"
SCALE_WINDOW = "scale_window"
DELAYED_SHIFT = "delayed_shift"
CONSECUTIVE_HYSTERESIS = "consecutive_hysteresis"
MIN_LOSS_SCALE = "min_scale"


def to_python_float(t) -> float:
    return t.item() if hasattr(t, "item") else float(t)


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class LossScalerBase:
    """What both scalers share: scaling the loss and detecting overflowing gradients."""

    dynamic = False

    def __init__(self, cur_scale: float):
        self.cur_scale = cur_scale

    @property
    def loss_scale(self) -> float:
        return self.cur_scale

    def scale_gradient(self, module, grad_in, grad_out):
        return tuple(self.loss_scale * g for g in grad_in)

    def update_scale(self, overflow: bool) -> None:
        pass

    def backward(self, loss: torch.Tensor, retain_graph: bool = False) -> None:
        (loss * self.loss_scale).backward(retain_graph=retain_graph)

    @staticmethod
    def _has_inf_or_nan(x: torch.Tensor) -> bool:
        # Note: one reduction and one host sync per tensor; the engine checks flat buffers instead.
        return not bool(torch.isfinite(x).all())

    def has_overflow_serial(self, params) -> bool:
        return any(p.grad is not None and self._has_inf_or_nan(p.grad) for p in params)

    def has_overflow(self, params) -> bool:
        return self.has_overflow_serial(params)


class LossScaler(LossScalerBase):
    """A fixed loss scale (fp16 ``loss_scale`` > 0). It never reports an overflow."""

    def __init__(self, scale: float = 1):
        super().__init__(scale)

    def has_overflow(self, params) -> bool:
        return False

    def state_dict(self) -> dict:
        return {"cur_scale": self.cur_scale}

    def load_state_dict(self, sd: dict) -> None:
        self.cur_scale = sd["cur_scale"]


class DynamicLossScaler(LossScalerBase):
    """DeepSpeed's dynamic loss scaler.

    ``init_scale``: starting scale; ``scale_factor``: multiplier up / divisor down;
    ``scale_window``: clean steps before growing; ``min_scale``: floor; ``delayed_shift``
    (hysteresis): overflows tolerated before the scale drops; ``consecutive_hysteresis``: refill the
    hysteresis after every clean step instead of only when the scale grows.
    """

    dynamic = True

    def __init__(self, init_scale: float = 2**32, scale_factor: float = 2.0, scale_window: int = 1000,
                 min_scale: float = 1, delayed_shift: int = 1, consecutive_hysteresis: bool = False,
                 raise_error_at_min_scale: bool = True, dtype: torch.dtype = torch.half):
        super().__init__(init_scale)
        if scale_window < 1:
            raise ValueError(f"fp16.loss_scale_window={scale_window} must be >= 1")
        if delayed_shift < 1:
            raise ValueError(f"fp16.hysteresis={delayed_shift} must be >= 1")
        self.cur_iter = 0
        self.last_overflow_iter = -1
        self.scale_factor = scale_factor
        self.scale_window = scale_window
        self.min_scale = min_scale
        self.delayed_shift = delayed_shift
        self.cur_hysteresis = delayed_shift
        self.consecutive_hysteresis = consecutive_hysteresis
        self.raise_error_at_min_scale = raise_error_at_min_scale
        self.dtype = dtype

    def update_scale(self, overflow: bool) -> None:
        """Record one step's outcome; lower or raise the scale by DeepSpeed's rules."""
        if overflow:
            if self.delayed_shift == 1 or self.cur_hysteresis == 1:
                if self.cur_scale == self.min_scale and self.raise_error_at_min_scale:
                    raise RuntimeError(
                        "Current loss scale already at minimum - cannot decrease scale anymore. Exiting run. "
                        f"(fp16.min_loss_scale={self.min_scale}; lower it or check the model for inf/NaN)"
                    )
                next_scale = max(self.cur_scale / self.scale_factor, self.min_scale)
                msg = f"[deepspeed] OVERFLOW! Rank {_rank()} Skipping step."
                if self.dtype == torch.half:
                    msg += f" Attempted loss scale: {int(self.cur_scale)}, reducing to {int(next_scale)}"
                logger.info(msg)
                self.cur_scale = next_scale
            else:
                logger.info(
                    f"[deepspeed] OVERFLOW! Rank {_rank()} Skipping step. Attempted loss scale: "
                    f"{int(self.cur_scale)}, but hysteresis is {self.cur_hysteresis}. Reducing hysteresis to "
                    f"{self.cur_hysteresis - 1}"
                )
                self.cur_hysteresis -= 1
            self.last_overflow_iter = self.cur_iter
        else:
            if self.consecutive_hysteresis:
                self.cur_hysteresis = self.delayed_shift
            if (self.cur_iter - self.last_overflow_iter) % self.scale_window == 0:
                if not self.consecutive_hysteresis:
                    self.cur_hysteresis = self.delayed_shift
                self.cur_scale *= self.scale_factor
        self.cur_iter += 1

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("cur_scale", "cur_iter", "last_overflow_iter", "cur_hysteresis")}

    def load_state_dict(self, sd: dict) -> None:
        for k, v in sd.items():
            setattr(self, k, v)


def CreateLossScaler(dtype: torch.dtype, static_loss_scale: float, dynamic_scaling: bool,
                     dynamic_loss_args: dict | None) -> LossScalerBase:
    """The scaler a config asks for: dynamic for fp16 with ``loss_scale`` 0, else static."""
    if dtype == torch.half and dynamic_scaling:
        return DynamicLossScaler(dtype=dtype, **(dynamic_loss_args or {}))
    return LossScaler(scale=static_loss_scale if dtype == torch.half else 1.0)

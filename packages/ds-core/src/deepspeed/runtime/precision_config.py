"""Precision sections of ds_config: ``fp16``, ``bf16`` (legacy ``bfloat16``), ``amp``,
``torch_autocast`` and ``data_types``, with DeepSpeed's names and defaults."""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
from pydantic import Field, field_validator

from deepspeed.config.model import DeepSpeedConfigModel

# Keys of the dynamic loss-scaler arguments (DeepSpeed's loss_scaler constants).
INITIAL_LOSS_SCALE = "init_scale"
SCALE_WINDOW = "scale_window"
DELAYED_SHIFT = "delayed_shift"
CONSECUTIVE_HYSTERESIS = "consecutive_hysteresis"
MIN_LOSS_SCALE = "min_scale"

BFLOAT16 = "bf16"
BFLOAT16_OLD = "bfloat16"
FP16 = "fp16"

_DTYPE_ALIASES = {
    "fp32": ("fp32", "float32", "float", "torch.float32", "torch.float"),
    "fp16": ("fp16", "float16", "half", "torch.float16", "torch.half"),
    "bf16": ("bf16", "bfloat16", "torch.bfloat16"),
}
_TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def dtype_name(value: Any, key: str, allowed: tuple[str, ...] = ("fp32", "fp16", "bf16")) -> Optional[str]:
    """Normalise a dtype spelling ("float16", "half", torch.float16, ...) to "fp16"/"bf16"/"fp32"."""
    if value is None:
        return None
    if isinstance(value, torch.dtype):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip().lower()
    else:
        raise ValueError(f"{key} must be one of {', '.join(allowed)} (got {value!r})")
    for name, spellings in _DTYPE_ALIASES.items():
        if text in spellings and name in allowed:
            return name
    raise ValueError(f"{key} must be one of {', '.join(allowed)} or an alias such as float16/bfloat16 (got {value!r})")


def torch_dtype(name: Optional[str]) -> Optional[torch.dtype]:
    """The torch dtype of a normalised name ("fp16" -> torch.float16); None stays None."""
    return None if name is None else _TORCH_DTYPES[name]


class DeepSpeedFP16Config(DeepSpeedConfigModel):
    """``fp16``: mixed precision with dynamic (``loss_scale: 0``) or static loss scaling."""

    enabled: bool = False
    auto_cast: bool = False
    loss_scale: float = 0.0
    #: The first loss scale is 2**initial_scale_power; the scaler holds it as a 64-bit integer.
    initial_scale_power: int = Field(16, ge=0, le=63)
    loss_scale_window: int = Field(1000, ge=1)
    hysteresis: int = Field(2, ge=1)
    consecutive_hysteresis: bool = False
    min_loss_scale: float = Field(1, gt=0)
    fp16_master_weights_and_grads: bool = False

    @field_validator("loss_scale", mode="before")
    @classmethod
    def _check_loss_scale(cls, v: Any) -> float:
        if isinstance(v, bool):
            raise ValueError("loss_scale must be a number, not a boolean (0 means dynamic loss scaling)")
        v = float(v)
        if not math.isfinite(v) or v < 0:
            raise ValueError("loss_scale must be a finite number >= 0 (0 means dynamic loss scaling)")
        return v

    def initial_dynamic_scale(self) -> float:
        return 2 ** self.initial_scale_power

    def dynamic_loss_scale_args(self) -> dict[str, Any]:
        return {
            INITIAL_LOSS_SCALE: 2 ** self.initial_scale_power,
            SCALE_WINDOW: self.loss_scale_window,
            DELAYED_SHIFT: self.hysteresis,
            CONSECUTIVE_HYSTERESIS: self.consecutive_hysteresis,
            MIN_LOSS_SCALE: self.min_loss_scale,
        }


class DeepSpeedBF16Config(DeepSpeedConfigModel):
    """``bf16`` (also read from the legacy key ``bfloat16``)."""

    enabled: bool = False
    immediate_grad_update: bool = False
    check_grad_overflow: bool = False
    bf16_master_weights_and_grads: bool = False
    bf16_optimizer_states: bool = False


class DeepSpeedAMPConfig(DeepSpeedConfigModel):
    """``amp``: NVIDIA apex AMP. The options other than ``enabled`` are apex's
    ``amp.initialize`` arguments, kept for schema compatibility."""

    enabled: bool = False
    opt_level: Optional[str] = None
    cast_model_type: Optional[Any] = None
    patch_torch_functions: Optional[bool] = None
    keep_batchnorm_fp32: Optional[Any] = None
    master_weights: Optional[bool] = None
    loss_scale: Optional[Any] = None
    cast_model_outputs: Optional[Any] = None
    num_losses: Optional[int] = None
    verbosity: Optional[int] = None
    min_loss_scale: Optional[float] = None
    max_loss_scale: Optional[float] = None

    def params(self) -> dict[str, Any]:
        """The options the user set, except ``enabled`` (DeepSpeed's ``amp_params``)."""
        return {k: getattr(self, k) for k in sorted(self.model_fields_set) if k != "enabled"}


class DeepSpeedTorchAutocastConfig(DeepSpeedConfigModel):
    """``torch_autocast``: run forward under ``torch.autocast`` with ``dtype``."""

    enabled: bool = False
    dtype: Optional[str] = None
    lower_precision_safe_modules: Optional[list[str]] = None

    @field_validator("dtype", mode="before")
    @classmethod
    def _norm_dtype(cls, v: Any) -> Optional[str]:
        return dtype_name(v, "torch_autocast.dtype", ("fp16", "bf16", "fp32"))


class DeepSpeedDataTypesConfig(DeepSpeedConfigModel):
    """``data_types``: dtypes of gradient accumulation, parameters and buffers."""

    grad_accum_dtype: Optional[str] = None
    param_dtype: Optional[str] = None
    buffer_dtype: Optional[str] = None

    @field_validator("grad_accum_dtype", "param_dtype", "buffer_dtype", mode="before")
    @classmethod
    def _norm(cls, v: Any, info) -> Optional[str]:
        return dtype_name(v, f"data_types.{info.field_name}")


def get_float16_config(param_dict: dict) -> DeepSpeedFP16Config:
    return DeepSpeedFP16Config(**param_dict.get(FP16, {}))


def get_bfloat16_config(param_dict: dict) -> DeepSpeedBF16Config:
    section = param_dict.get(BFLOAT16)
    if section is None:
        section = param_dict.get(BFLOAT16_OLD, {})
    return DeepSpeedBF16Config(**section)

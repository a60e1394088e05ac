"""``zero_optimization`` section of ds_config (DeepSpeed's ``DeepSpeedZeroConfig``).

Registered with ds-core by ds-zero's feature object, so ``DeepSpeedConfig(...).zero_config`` is
an instance of :class:`DeepSpeedZeroConfig`. Deprecated keys map to their replacements:
``cpu_offload`` -> ``offload_optimizer.device=cpu``, ``cpu_offload_param`` ->
``offload_param.device=cpu``, ``cpu_offload_use_pin_memory`` -> ``pin_memory`` of both,
``stage3_gather_fp16_weights_on_model_save`` -> ``stage3_gather_16bit_weights_on_model_save``.
A bare boolean section is stage 1 (true) or 0 (false), with a deprecation warning; the
legacy top-level ``allgather_size`` becomes ``allgather_bucket_size`` when that is not set.

:func:`attributes` gives DeepSpeedConfig its ZeRO attribute names (``zero_config``,
``zero_optimization_stage``, ...) and :func:`validate` the ZeRO rules on the whole config; the
``zero`` feature object calls both.
"""

from __future__ import annotations

import sys
from enum import Enum
from typing import Any, ClassVar, Optional

from pydantic import Field, field_validator, model_validator

from deepspeed.config import ConfigError
from deepspeed.runtime.config_utils import DeepSpeedConfigModel
from deepspeed.runtime.zero.offload_config import (
    DeepSpeedZeroOffloadOptimizerConfig,
    DeepSpeedZeroOffloadParamConfig,
    OffloadDeviceEnum,
)
from deepspeed.utils.logging import logger

ZERO_OPTIMIZATION = "zero_optimization"

DEFAULT_LEAF_MODULE_CLASSES = [
    "transformers.models.mixtral.modeling_mixtral.MixtralSparseMoeBlock",
    "transformers.models.qwen2_moe.modeling_qwen2_moe.Qwen2MoeSparseMoeBlock",
    "transformers.models.qwen3_moe.modeling_qwen3_moe.Qwen3MoeSparseMoeBlock",
]


class ZeroStageEnum(int, Enum):
    """ZeRO stages."""

    disabled = 0
    optimizer_states = 1
    gradients = 2
    weights = 3
    max_stage = 3


class DeepSpeedZeroLeafModuleConfig(DeepSpeedConfigModel):
    """``leaf_module``: modules ZeRO-3 gathers as one unit (no hooks inside)."""

    classes: list[str] = Field(default_factory=lambda: list(DEFAULT_LEAF_MODULE_CLASSES))
    names: list[str] = Field(default_factory=list)
    name_suffixes: list[str] = Field(default_factory=list)

    @field_validator("classes", "names", "name_suffixes", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


def _offload_optimizer_cpu(value: bool) -> Optional[DeepSpeedZeroOffloadOptimizerConfig]:
    return DeepSpeedZeroOffloadOptimizerConfig(device=OffloadDeviceEnum.cpu) if value else None


def _offload_param_cpu(value: bool) -> Optional[DeepSpeedZeroOffloadParamConfig]:
    return DeepSpeedZeroOffloadParamConfig(device=OffloadDeviceEnum.cpu) if value else None


# Note: integer sizes arrive as floats from JSON (5e8) and from HF's "auto" fill (0.9 * h**2);
# DeepSpeed users rely on both, so sizes accept floats and round them down.
_SIZE_FIELDS = (
    "reduce_bucket_size", "allgather_bucket_size", "sub_group_size", "prefetch_bucket_size",
    "param_persistence_threshold", "model_persistence_threshold", "max_live_parameters",
    "max_reuse_distance", "module_granularity_threshold", "partition_stream_chunk_size",
)


class DeepSpeedZeroConfig(DeepSpeedConfigModel):
    """``zero_optimization``: ZeRO stage and its knobs, with DeepSpeed's defaults."""

    _config_path: ClassVar[str] = ZERO_OPTIMIZATION

    stage: ZeroStageEnum = ZeroStageEnum.disabled
    contiguous_gradients: bool = True
    reduce_scatter: bool = True
    reduce_bucket_size: int = Field(int(5e8), gt=0)
    use_multi_rank_bucket_allreduce: bool = True
    allgather_partitions: bool = True
    allgather_bucket_size: int = Field(int(5e8), gt=0)
    overlap_comm: Optional[bool] = None  # None: true for stage 3, false otherwise
    load_from_fp32_weights: bool = True
    elastic_checkpoint: bool = False
    offload_param: Optional[DeepSpeedZeroOffloadParamConfig] = None
    offload_optimizer: Optional[DeepSpeedZeroOffloadOptimizerConfig] = None
    zenflow: Optional[dict[str, Any]] = None
    sub_group_size: int = Field(int(1e9), gt=0)

    cpu_offload_param: Optional[bool] = Field(
        None, json_schema_extra={"deprecated": True, "new_param": "offload_param",
                                 "new_param_fn": _offload_param_cpu})
    cpu_offload_use_pin_memory: Optional[bool] = Field(
        None, json_schema_extra={"deprecated": True, "new_param": "offload_param or offload_optimizer",
                                 "set_new_param": False})
    cpu_offload: Optional[bool] = Field(
        None, json_schema_extra={"deprecated": True, "new_param": "offload_optimizer",
                                 "new_param_fn": _offload_optimizer_cpu})

    prefetch_bucket_size: int = Field(int(5e7), ge=0, alias="stage3_prefetch_bucket_size")
    param_persistence_threshold: int = Field(int(1e5), ge=0, alias="stage3_param_persistence_threshold")
    model_persistence_threshold: int = Field(sys.maxsize, ge=0, alias="stage3_model_persistence_threshold")
    max_live_parameters: int = Field(int(1e9), ge=0, alias="stage3_max_live_parameters")
    max_reuse_distance: int = Field(int(1e9), ge=0, alias="stage3_max_reuse_distance")
    gather_16bit_weights_on_model_save: bool = Field(False, alias="stage3_gather_16bit_weights_on_model_save")
    module_granularity_threshold: int = Field(0, alias="stage3_module_granularity_threshold")
    use_all_reduce_for_fetch_params: bool = Field(False, alias="stage3_use_all_reduce_for_fetch_params")
    allgather_sequential: bool = Field(False, alias="stage3_allgather_sequential")
    partition_stream_chunk_size: int = Field(0, ge=0, alias="stage3_partition_stream_chunk_size")
    stage3_gather_fp16_weights_on_model_save: bool = Field(
        False, json_schema_extra={"deprecated": True, "new_param": "stage3_gather_16bit_weights_on_model_save"})

    ignore_unused_parameters: bool = True
    legacy_stage1: bool = False
    round_robin_gradients: bool = False
    zero_hpz_partition_size: int = Field(1, ge=0)
    zero_quantized_weights: bool = False
    zero_quantized_nontrainable_weights: bool = False
    zero_quantized_gradients: bool = False
    zeropp_loco_param: Optional[dict[str, Any]] = None
    mics_shard_size: int = -1
    mics_hierarchical_params_gather: bool = False
    memory_efficient_linear: bool = True
    pipeline_loading_checkpoint: bool = False
    override_module_apply: bool = True
    log_trace_cache_warnings: bool = False
    enable_sanity_checks: bool = False
    save_muon_momentum_buffer_in_memory: bool = False
    leaf_module: DeepSpeedZeroLeafModuleConfig = Field(default_factory=DeepSpeedZeroLeafModuleConfig)

    @model_validator(mode="before")
    @classmethod
    def _legacy_bool(cls, data: Any) -> Any:
        if isinstance(data, bool):
            logger.warning("ds_config: a boolean 'zero_optimization' is deprecated; use "
                           "{\"zero_optimization\": {\"stage\": 1}} (true) or {\"stage\": 0} (false)")
            return {"stage": 1 if data else 0}
        return data

    @field_validator(*_SIZE_FIELDS, mode="before")
    @classmethod
    def _size(cls, v: Any) -> Any:
        if isinstance(v, (str, bool)):
            raise ValueError("must be a number of elements, written without quotes (e.g. 5e8), not "
                             + ("a string" if isinstance(v, str) else "true/false"))
        if isinstance(v, float) and v == v and v not in (float("inf"), float("-inf")):
            return int(v)
        return v

    @field_validator("stage", mode="before")
    @classmethod
    def _stage(cls, v: Any) -> Any:
        if isinstance(v, bool):
            return int(v)
        if isinstance(v, str):
            raise ValueError("must be 0, 1, 2 or 3, written without quotes, not a string")
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if not isinstance(v, (int, ZeroStageEnum)):
            # Note: pydantic would list the enum's values, alias included ("0, 1, 2, 3 or 3").
            raise ValueError("must be 0, 1, 2 or 3")
        if isinstance(v, int) and not 0 <= v <= 3:
            # Note: DeepSpeed's sentence first (scripts match on it), then ours.
            raise ValueError(f"DeepSpeedConfig: Maximum supported ZeRO stage is 3; stage must be 0, 1, 2 or 3 (got {v})")
        return v

    @model_validator(mode="after")
    def _resolve(self) -> "DeepSpeedZeroConfig":
        d = self.__dict__
        if d["overlap_comm"] is None:
            d["overlap_comm"] = self.stage == ZeroStageEnum.weights
        if self.cpu_offload_use_pin_memory:
            for key in ("offload_param", "offload_optimizer"):
                if d[key] is not None:
                    d[key] = d[key].model_copy(update={"pin_memory": True})
        if self.offload_optimizer is not None and self.offload_optimizer.ratio < 1.0 \
                and self.stage != ZeroStageEnum.weights:
            raise ValueError(f"offload_optimizer.ratio={self.offload_optimizer.ratio} (partial offload) "
                             f"needs stage 3 (stage is {int(self.stage)})")
        if self.offload_param is not None and self.offload_param.device != "none" \
                and self.stage != ZeroStageEnum.weights:
            raise ValueError(f"zero_optimization.offload_param (device {self.offload_param.device!r}) needs stage 3 "
                             f"(stage is {int(self.stage)}): stages 1-2 keep every parameter on the device, so it "
                             "would have no effect; remove offload_param, set stage 3, or use offload_optimizer")
        if self.stage == ZeroStageEnum.weights and self.elastic_checkpoint:
            logger.warning("zero_optimization.elastic_checkpoint is not supported with stage 3; "
                           "use universal checkpoints instead")
        return self


def attributes(config: Any) -> dict:
    """DeepSpeed's flat DeepSpeedConfig attributes for the ZeRO keys of ``config.model``."""
    m = config.model
    z = m.zero_optimization
    stage = int(z.stage)
    if m.allgather_size is not None and stage > 0 and "allgather_bucket_size" not in z.model_fields_set:
        z = z.model_copy(update={"allgather_bucket_size": int(m.allgather_size)})
    return {
        "zero_config": z, "zero_optimization_stage": stage, "zero_enabled": stage > 0,
        "mics_shard_size": z.mics_shard_size, "mics_hierarchial_params_gather": z.mics_hierarchical_params_gather,
        "zero_allow_untested_optimizer": m.zero_allow_untested_optimizer,
        "zero_force_ds_cpu_optimizer": m.zero_force_ds_cpu_optimizer,
        # Note: DeepSpeed sizes the engine's gradient buckets with this key at stage 0 too.
        "reduce_bucket_size": int(z.reduce_bucket_size) if "reduce_bucket_size" in z.model_fields_set else None,
    }


def validate(config: Any) -> None:
    """ZeRO's rules on the whole config (after each section validated on its own)."""
    from deepspeed.runtime.zero._build import check_supported

    m = config.model
    stage = int(config.zero_optimization_stage)
    if m.gradient_allreduce_op == "sum" and stage == 3:
        raise ConfigError("gradient_allreduce_op='sum' is not supported with ZeRO stage 3 (ds_config: "
                         "gradient_allreduce_op='sum' is not supported with zero_optimization.stage 3; use 'mean')")
    for flag, name, ds_name in (
            (m.fp16.fp16_master_weights_and_grads, "fp16.fp16_master_weights_and_grads", "Fp16_master_weights_and_grads"),
            (m.bf16.bf16_master_weights_and_grads, "bf16.bf16_master_weights_and_grads", "Bf16_master_weights_and_grads"),
            (m.bf16.bf16_optimizer_states, "bf16.bf16_optimizer_states", "bf16_optimizer_states")):
        if flag and stage not in (1, 2, 3):
            raise ConfigError(f"{ds_name} is only supported with ZeRO Stage 1, 2, or 3. "
                             f"(ds_config: {name}=true needs zero_optimization.stage 1, 2 or 3; stage is {stage})")
    if stage > 0:
        check_supported(config.zero_config)


def get_zero_config(param_dict: dict) -> DeepSpeedZeroConfig:
    """DeepSpeed's helper: the zero section of a raw ds_config dict (bool = legacy stage 1/0)."""
    section = param_dict.get(ZERO_OPTIMIZATION, {})
    if isinstance(section, bool):
        section = {"stage": 1 if section else 0}
    return DeepSpeedZeroConfig(**section)

"""``compression_training`` section of ds_config: one block per technique, each with
``shared_parameters`` (the switch and schedule) and ``different_groups`` (per-module-group
parameters), DeepSpeed's structure and defaults. Unknown keys are errors at every level."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional

from pydantic import Field, field_validator, model_validator

from deepspeed.runtime.config_utils import DeepSpeedConfigModel

COMPRESSION_TRAINING = "compression_training"


class _Group(DeepSpeedConfigModel):
    """One entry of ``different_groups``: which modules, with which parameters."""

    modules: list[str] = Field(default_factory=lambda: ["*"])
    related_modules: Optional[list[Any]] = None

    @field_validator("modules", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


# -- weight quantization ----------------------------------------------------------------------


class FP16MixedQuantizeConfig(DeepSpeedConfigModel):
    enabled: bool = False
    quantize_change_ratio: float = 0.001


class WeightQuantizationSharedConfig(DeepSpeedConfigModel):
    enabled: bool = False
    quantizer_kernel: bool = False
    schedule_offset: int = Field(0, ge=0)
    quantize_groups: int = Field(1, ge=1)
    quantize_verbose: bool = False
    quantization_type: Literal["symmetric", "asymmetric"] = "symmetric"
    quantize_weight_in_forward: bool = False
    rounding: Literal["nearest", "stochastic"] = "nearest"
    fp16_mixed_quantize: FP16MixedQuantizeConfig = Field(default_factory=FP16MixedQuantizeConfig)
    quantize_change_ratio: Optional[float] = None

    @field_validator("fp16_mixed_quantize", mode="before")
    @classmethod
    def _bool_form(cls, v: Any) -> Any:
        return {"enabled": v} if isinstance(v, bool) else v


class WeightQuantizationParams(DeepSpeedConfigModel):
    start_bits: int = Field(ge=1, le=8)
    target_bits: int = Field(ge=1, le=8)
    quantization_period: int = Field(1, ge=0)


class WeightQuantizationGroup(_Group):
    params: WeightQuantizationParams


class WeightQuantizationConfig(DeepSpeedConfigModel):
    shared_parameters: WeightQuantizationSharedConfig = Field(default_factory=WeightQuantizationSharedConfig)
    different_groups: dict[str, WeightQuantizationGroup] = Field(default_factory=dict)


# -- activation quantization ------------------------------------------------------------------


class ActivationQuantizationSharedConfig(DeepSpeedConfigModel):
    enabled: bool = False
    quantization_type: Literal["symmetric", "asymmetric"] = "symmetric"
    range_calibration: Literal["dynamic", "static"] = "dynamic"
    schedule_offset: int = Field(1000, ge=0)


class ActivationQuantizationParams(DeepSpeedConfigModel):
    bits: int = Field(ge=2, le=8)


class ActivationQuantizationGroup(_Group):
    params: ActivationQuantizationParams


class ActivationQuantizationConfig(DeepSpeedConfigModel):
    shared_parameters: ActivationQuantizationSharedConfig = Field(default_factory=ActivationQuantizationSharedConfig)
    different_groups: dict[str, ActivationQuantizationGroup] = Field(default_factory=dict)


# -- pruning ----------------------------------------------------------------------------------


class DenseRatioParams(DeepSpeedConfigModel):
    dense_ratio: float = Field(gt=0.0, lt=1.0)


class PruningGroup(_Group):
    params: DenseRatioParams


class SparsePruningSharedConfig(DeepSpeedConfigModel):
    enabled: bool = False
    method: Literal["l1", "topk", "snip_momentum"] = "l1"
    schedule_offset: int = Field(1000, ge=0)
    # snip_momentum only
    block_pattern: str = "4x1"
    dense_ratio: float = Field(0.1, gt=0.0, lt=1.0)
    schedule_offset_stride: int = Field(1, ge=1)
    excluded_modules: list[str] = Field(default_factory=list)
    schedule_offset_end: Optional[int] = None

    @model_validator(mode="after")
    def _offsets(self) -> "SparsePruningSharedConfig":
        if self.schedule_offset_end is not None and self.schedule_offset_end < self.schedule_offset:
            raise ValueError(f"schedule_offset_end {self.schedule_offset_end} is before "
                             f"schedule_offset {self.schedule_offset}")
        return self


class SparsePruningConfig(DeepSpeedConfigModel):
    shared_parameters: SparsePruningSharedConfig = Field(default_factory=SparsePruningSharedConfig)
    different_groups: dict[str, PruningGroup] = Field(default_factory=dict)


class RowPruningSharedConfig(DeepSpeedConfigModel):
    enabled: bool = False
    method: Literal["l1", "topk"] = "l1"
    schedule_offset: int = Field(1000, ge=0)


class RowPruningConfig(DeepSpeedConfigModel):
    shared_parameters: RowPruningSharedConfig = Field(default_factory=RowPruningSharedConfig)
    different_groups: dict[str, PruningGroup] = Field(default_factory=dict)


class HeadPruningSharedConfig(DeepSpeedConfigModel):
    enabled: bool = False
    method: Literal["l1", "topk"] = "topk"
    schedule_offset: int = Field(1000, ge=0)
    num_heads: Optional[int] = Field(None, ge=1)

    @model_validator(mode="after")
    def _heads(self) -> "HeadPruningSharedConfig":
        if self.enabled and self.num_heads is None:
            raise ValueError("num_heads must be set when head pruning is enabled")
        return self


class HeadPruningConfig(DeepSpeedConfigModel):
    shared_parameters: HeadPruningSharedConfig = Field(default_factory=HeadPruningSharedConfig)
    different_groups: dict[str, PruningGroup] = Field(default_factory=dict)


class ChannelPruningSharedConfig(DeepSpeedConfigModel):
    enabled: bool = False
    method: Literal["l1", "topk"] = "l1"
    schedule_offset: int = Field(1000, ge=0)


class ChannelPruningConfig(DeepSpeedConfigModel):
    shared_parameters: ChannelPruningSharedConfig = Field(default_factory=ChannelPruningSharedConfig)
    different_groups: dict[str, PruningGroup] = Field(default_factory=dict)


# -- layer reduction --------------------------------------------------------------------------


class LayerReductionConfig(DeepSpeedConfigModel):
    enabled: bool = False
    keep_number_layer: Optional[int] = Field(None, ge=1)
    module_name_prefix: str = ""
    teacher_layer: list[int] = Field(default_factory=list)
    other_module_name: list[str] = Field(default_factory=list)


_TECHNIQUES = ("weight_quantization", "activation_quantization", "sparse_pruning", "row_pruning",
               "head_pruning", "channel_pruning")


class DeepSpeedCompressionConfig(DeepSpeedConfigModel):
    """``compression_training``: the techniques and their schedules."""

    _config_path: ClassVar[str] = COMPRESSION_TRAINING

    weight_quantization: WeightQuantizationConfig = Field(default_factory=WeightQuantizationConfig)
    activation_quantization: ActivationQuantizationConfig = Field(default_factory=ActivationQuantizationConfig)
    sparse_pruning: SparsePruningConfig = Field(default_factory=SparsePruningConfig)
    row_pruning: RowPruningConfig = Field(default_factory=RowPruningConfig)
    head_pruning: HeadPruningConfig = Field(default_factory=HeadPruningConfig)
    channel_pruning: ChannelPruningConfig = Field(default_factory=ChannelPruningConfig)
    layer_reduction: LayerReductionConfig = Field(default_factory=LayerReductionConfig)

    @model_validator(mode="after")
    def _groups_when_enabled(self) -> "DeepSpeedCompressionConfig":
        for name in _TECHNIQUES:
            technique = getattr(self, name)
            shared = technique.shared_parameters
            snip = getattr(shared, "method", None) == "snip_momentum"
            if shared.enabled and not technique.different_groups and not snip:
                raise ValueError(f"{name} is enabled but has no different_groups; add at least one group "
                                 f"with its modules and params")
        return self

    @property
    def enabled_techniques(self) -> list[str]:
        """Names of the techniques switched on (layer_reduction included)."""
        on = [n for n in _TECHNIQUES if getattr(self, n).shared_parameters.enabled]
        return on + (["layer_reduction"] if self.layer_reduction.enabled else [])


def get_compression_config(param_dict: dict) -> DeepSpeedCompressionConfig:
    """The compression section of a raw ds_config dict (defaults when absent)."""
    return DeepSpeedCompressionConfig(**param_dict.get(COMPRESSION_TRAINING, {}))

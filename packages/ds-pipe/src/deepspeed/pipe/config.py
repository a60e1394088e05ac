"""``pipeline`` section of ds_config (read by the pipeline engine)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Union

from pydantic import Field, field_validator

from deepspeed.runtime.config_utils import DeepSpeedConfigModel


class DeepSpeedPipelineConfig(DeepSpeedConfigModel):
    """``pipeline {stages, partition, seed_layers, activation_checkpoint_interval,
    pipe_partitioned, grad_partitioned}`` with DeepSpeed's defaults, plus ``schedule`` (beyond
    DeepSpeed): ``"1f1b"`` (default, DeepSpeed's TrainSchedule), ``"interleaved"`` (a model built
    with ``PipelineModule(..., virtual_stages=v)``) or ``"zero_bubble"`` (ZB-H1).

    The PipelineModule's own arguments decide the partition, seeding and activation checkpointing
    (as in DeepSpeed, where these keys are informational); ``stages``, when an integer, must equal
    the module's ``num_stages``."""

    _config_path: ClassVar[str] = "pipeline"

    stages: Union[Literal["auto"], int] = "auto"
    partition: str = "best"
    seed_layers: bool = False
    activation_checkpoint_interval: int = Field(0, ge=0)
    pipe_partitioned: bool = True
    grad_partitioned: bool = True
    schedule: Literal["1f1b", "interleaved", "zero_bubble"] = "1f1b"

    @classmethod
    def _auto_kept_fields(cls) -> frozenset[str]:
        return frozenset({"stages"})  # "auto" is this field's real default

    @field_validator("stages", mode="before")
    @classmethod
    def _stages(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool) and v < 1:
            raise ValueError(f"stages must be a positive integer or \"auto\" (got {v})")
        return v

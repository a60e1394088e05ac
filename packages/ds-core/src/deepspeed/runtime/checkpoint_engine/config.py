"""``checkpoint`` section of ds_config (tag validation, universal loading, writers)."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, field_validator

from deepspeed.config.model import DeepSpeedConfigModel


class ValidationMode:
    WARN = "WARN"
    IGNORE = "IGNORE"
    FAIL = "FAIL"


class CheckpointParallelWriteConfig(DeepSpeedConfigModel):
    pipeline_stage: bool = False


class CheckpointWriterConfig(DeepSpeedConfigModel):
    """``checkpoint.writer``: the (fast) checkpoint writer."""

    type: Literal["MOCK", "PYTHON", "FAST"] = "PYTHON"
    io_buffer_size: int = 1024**3
    io_buffer_double: bool = True
    show_statistics: bool = False
    data_parallel: Literal["SOCKET", "MACHINE", "REPLICA"] = "REPLICA"
    decoupled: bool = False
    io_multiplier: int = 1

    @field_validator("type", "data_parallel", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v


class DeepSpeedCheckpointConfig(DeepSpeedConfigModel):
    """``checkpoint {tag_validation, load_universal, use_node_local_storage, parallel_write,
    checkpoint_serialization, writer}`` (DeepSpeed's keys), and two of ours:

    - ``unsafe_load`` (default false): load checkpoint files with ``weights_only=False``, which
      unpickles arbitrary objects and so can run code a file carries; only for files you trust.
    - ``start_fresh_if_missing`` (default false): ``load_checkpoint`` with an explicit tag (or a
      ``latest`` naming a tag) that does not exist warns and returns ``(None, None)`` instead of
      raising, so training starts from the initial weights.
    """

    tag_validation: Literal["WARN", "IGNORE", "FAIL"] = "WARN"
    load_universal: bool = False
    use_node_local_storage: bool = False
    parallel_write: CheckpointParallelWriteConfig = Field(default_factory=CheckpointParallelWriteConfig)
    checkpoint_serialization: bool = True
    writer: Optional[CheckpointWriterConfig] = None
    unsafe_load: bool = False
    start_fresh_if_missing: bool = False

    @field_validator("tag_validation", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

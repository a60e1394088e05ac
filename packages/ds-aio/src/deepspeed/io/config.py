"""``aio`` section of ds_config: the async I/O handle used for NVMe offload and swapping."""

from __future__ import annotations

from typing import ClassVar, Optional

from pydantic import Field

from deepspeed.runtime.config_utils import DeepSpeedConfigModel


class DeepSpeedAIOConfig(DeepSpeedConfigModel):
    """``aio {block_size, queue_depth, intra_op_parallelism, single_submit, overlap_events,
    use_gds}``; the legacy ``thread_count`` maps to ``intra_op_parallelism``."""

    _config_path: ClassVar[str] = "aio"

    block_size: int = Field(1048576, gt=0)
    queue_depth: int = Field(8, gt=0)
    intra_op_parallelism: int = Field(1, ge=1)
    single_submit: bool = False
    overlap_events: bool = True
    use_gds: bool = False
    thread_count: Optional[int] = Field(
        None, ge=1, json_schema_extra={"deprecated": True, "new_param": "intra_op_parallelism"})

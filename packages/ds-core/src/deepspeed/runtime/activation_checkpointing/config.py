"""``activation_checkpointing`` section of ds_config."""

from __future__ import annotations

from typing import Optional

from deepspeed.config.model import DeepSpeedConfigModel


class DeepSpeedActivationCheckpointingConfig(DeepSpeedConfigModel):
    """``activation_checkpointing {partition_activations, contiguous_memory_optimization,
    cpu_checkpointing, number_checkpoints, synchronize_checkpoint_boundary, profile}``."""

    partition_activations: bool = False
    contiguous_memory_optimization: bool = False
    cpu_checkpointing: bool = False
    number_checkpoints: Optional[int] = None
    synchronize_checkpoint_boundary: bool = False
    profile: bool = False

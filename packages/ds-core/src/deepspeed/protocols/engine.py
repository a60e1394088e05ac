"""What a feature may read from the engine it plugs into (the ``engine`` argument of hooks)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

    from deepspeed.comm.topology import ParallelTopology
    from deepspeed.runtime.checkpoint_engine.checkpoint_engine import CheckpointEngine
    from deepspeed.runtime.config import DeepSpeedConfig


class EngineView(Protocol):
    """The engine's attributes a feature hook may read. Anything else is private to the engine."""

    #: The parsed config (the same object every hook receives).
    ds_config: "DeepSpeedConfig"
    #: The ds_config as a dict, "auto" values resolved (what checkpoints store as ``ds_config``).
    config: dict
    #: The module being trained (after every ``transform_model``).
    module: "torch.nn.Module"
    #: The process groups of every parallel dimension.
    topology: "ParallelTopology"
    #: The group gradients are reduced over, and its size.
    data_parallel_group: Any
    dp_world_size: int
    #: Rank in the whole job.
    global_rank: int
    #: The Megatron-style model-parallel unit the user passed to ``initialize`` (or None).
    mpu: Any
    #: Writes and reads checkpoint files (atomic writes, safe loads).
    checkpoint_engine: "CheckpointEngine"
    #: The features' :class:`~deepspeed.protocols.feature.GradientGroup` s (parameters reduced over
    #: a sub-group of the data-parallel ranks); set before ``wrap_optimizer`` runs.
    gradient_groups: list
    #: The optimizer that drives training (an EngineOptimizer, or the basic torch optimizer).
    optimizer: Any

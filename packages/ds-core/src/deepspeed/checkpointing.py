"""``deepspeed.checkpointing``: activation checkpointing (DeepSpeed's import path)."""

from deepspeed.runtime.activation_checkpointing.checkpointing import (  # noqa: F401
    CheckpointFunction,
    CudaRNGStatesTracker,
    checkpoint,
    configure,
    get_cuda_rng_tracker,
    is_configured,
    model_parallel_cuda_manual_seed,
    non_reentrant_checkpoint,
    reset,
)

__all__ = [
    "checkpoint", "non_reentrant_checkpoint", "configure", "is_configured", "reset", "get_cuda_rng_tracker",
    "model_parallel_cuda_manual_seed", "CudaRNGStatesTracker", "CheckpointFunction",
]

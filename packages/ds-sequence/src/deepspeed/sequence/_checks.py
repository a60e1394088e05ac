"""Checks of ``sequence_parallel_size`` against the launched world."""

from __future__ import annotations

import os


def _world_size() -> int:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return int(dist.get_world_size())
    return int(os.environ.get("WORLD_SIZE", "1"))


def check_sequence_parallel_size(sp: int, world: int | None = None) -> None:
    """Refuse a sequence-parallel size that does not divide the world."""
    world = _world_size() if world is None else int(world)
    if sp < 1:
        raise ValueError(f"ds_config.sequence_parallel_size must be >= 1 (got {sp})")
    if sp > 1 and world % sp != 0:
        raise ValueError(f"ds_config.sequence_parallel_size={sp} does not divide the world size {world}: launch a "
                         f"multiple of {sp} ranks or set sequence_parallel_size to a divisor of {world}")

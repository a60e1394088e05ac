"""``deepspeed.runtime.sequence_parallel.parallel_state_sp``: the sequence-parallel groups as a
Megatron-style ``mpu`` (what ``UlyssesSPAttentionHF.register_with_transformers`` returns and
Accelerate passes to ``deepspeed.initialize(mpu=...)``).

Consecutive ranks form a sequence-parallel group of ``sequence_parallel_size``; every rank holds a
replica of the weights, so the sequence-data-parallel group (where gradients are reduced) is the
whole world. Besides DeepSpeed's functions the module answers ``get_data_parallel_group`` /
``_world_size`` / ``_rank`` with the sequence-data-parallel group, which is what ds-core's engine
reduces and averages gradients over when it is given an mpu.
"""

from __future__ import annotations

import deepspeed.comm as dist

_SEQUENCE_PARALLEL_GROUP = None
_SEQUENCE_DATA_PARALLEL_GROUP = None
_SIZE = None


def initialize_sequence_parallel(sequence_parallel_size: int) -> None:
    """Create the groups (collectively: every rank calls it with the same size)."""
    global _SEQUENCE_PARALLEL_GROUP, _SEQUENCE_DATA_PARALLEL_GROUP, _SIZE
    if not dist.is_initialized():
        raise RuntimeError("initialize_sequence_parallel: torch.distributed is not initialised; call "
                           "deepspeed.init_distributed() first")
    sp = sequence_parallel_size
    world = dist.get_world_size()
    if isinstance(sp, bool) or not isinstance(sp, int) or sp <= 1:
        raise ValueError(f"sequence_parallel_size must be an integer greater than 1 (got {sp!r})")
    if world % sp != 0:
        raise ValueError(f"sequence_parallel_size={sp} does not divide the world size {world}: launch a multiple "
                         f"of {sp} ranks or choose a divisor of {world}")
    if _SEQUENCE_PARALLEL_GROUP is not None:
        if sp == _SIZE:
            return
        raise RuntimeError(f"the sequence-parallel groups already exist with size {_SIZE}; cannot recreate them with "
                           f"size {sp}")
    rank = dist.get_rank()
    for start in range(0, world, sp):
        ranks = list(range(start, start + sp))
        group = dist.new_group(ranks)
        if rank in ranks:
            _SEQUENCE_PARALLEL_GROUP = group
    _SEQUENCE_DATA_PARALLEL_GROUP = dist.new_group(list(range(world)))
    _SIZE = sp


def _require(group, what):
    if group is None:
        raise RuntimeError(f"the {what} group is not initialised: call initialize_sequence_parallel(size) first")
    return group


def get_sequence_parallel_group():
    return _require(_SEQUENCE_PARALLEL_GROUP, "sequence parallel")


def get_sequence_data_parallel_group():
    return _require(_SEQUENCE_DATA_PARALLEL_GROUP, "sequence data parallel")


def get_sequence_parallel_world_size() -> int:
    return dist.get_world_size(group=get_sequence_parallel_group())


def get_sequence_data_parallel_world_size() -> int:
    return dist.get_world_size(group=get_sequence_data_parallel_group())


def get_sequence_parallel_rank() -> int:
    return dist.get_rank(group=get_sequence_parallel_group())


def get_sequence_data_parallel_rank() -> int:
    return dist.get_rank(group=get_sequence_data_parallel_group())


# DeepSpeed aliases model parallel to sequence parallel (the only dimension besides data)
get_model_parallel_rank = get_sequence_parallel_rank
get_model_parallel_world_size = get_sequence_parallel_world_size
get_model_parallel_group = get_sequence_parallel_group

# the replicas of the weights: what the engine reduces gradients over when given this mpu
get_data_parallel_group = get_sequence_data_parallel_group
get_data_parallel_world_size = get_sequence_data_parallel_world_size
get_data_parallel_rank = get_sequence_data_parallel_rank


def _reset_for_tests() -> None:
    global _SEQUENCE_PARALLEL_GROUP, _SEQUENCE_DATA_PARALLEL_GROUP, _SIZE
    _SEQUENCE_PARALLEL_GROUP = _SEQUENCE_DATA_PARALLEL_GROUP = _SIZE = None

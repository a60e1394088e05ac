"""The batch triangle: ``train_batch_size = micro_batch * gradient_accumulation_steps * dp_world``.

Any two of the three determine the third; with only ``train_batch_size`` or only the micro batch
given, gradient accumulation is 1 (DeepSpeed's rules). Every inconsistency is a ValueError that
prints all the numbers.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

TRAIN = "train_batch_size"
MICRO = "train_micro_batch_size_per_gpu"
GAS = "gradient_accumulation_steps"


@dataclasses.dataclass(frozen=True)
class BatchSizes:
    train_batch_size: int
    train_micro_batch_size_per_gpu: int
    gradient_accumulation_steps: int


def _mpu_size(mpu: Any, *names: str) -> Optional[int]:
    for name in names:
        fn = getattr(mpu, name, None)
        if callable(fn):
            return int(fn())
    return None


def dp_world_size(
    world_size: Optional[int] = None,
    mpu: Any = None,
    mesh_device: Any = None,
    sequence_parallel_size: int = 1,
) -> int:
    """Data-parallel world size: from ``world_size``, else the initialised torch.distributed
    world, else ``WORLD_SIZE``, else 1; divided by the model-parallel size of ``mpu`` (or the
    sequence-parallel size when there is no mpu). An mpu that reports its data-parallel size
    directly (Megatron style) is trusted when ``world_size`` is not given."""
    import torch.distributed as dist

    initialised = dist.is_available() and dist.is_initialized()
    if mesh_device is not None and world_size is None and initialised:
        return int(dist.get_world_size(mesh_device.get_group(mesh_dim="data_parallel")))
    if mpu is not None and world_size is None:
        dp = _mpu_size(mpu, "get_data_parallel_world_size")
        if dp is not None:
            return dp
    if world_size is not None:
        total = int(world_size)
    elif initialised:
        total = int(dist.get_world_size())
    else:
        total = int(os.environ.get("WORLD_SIZE", "1"))
    if mpu is not None:
        mp = _mpu_size(mpu, "get_model_parallel_world_size", "get_tensor_model_parallel_world_size")
        sp = _mpu_size(mpu, "get_sequence_parallel_world_size")
        divisor = (mp or 1) * (sp or 1)
    else:
        divisor = max(int(sequence_parallel_size or 1), 1)
    if total % divisor != 0:
        raise ValueError(
            f"world size {total} is not divisible by the model/sequence-parallel size {divisor}; "
            f"launch a multiple of {divisor} processes"
        )
    return total // divisor


def _positive(name: str, value: Optional[int]) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"ds_config: {name} must be a positive integer (got {value!r})")


def resolve_batch(
    train: Optional[int],
    micro: Optional[int],
    gas: Optional[int],
    dp: int,
) -> BatchSizes:
    """Fill in the missing corner of the triangle and check the three agree."""
    for name, value in ((TRAIN, train), (MICRO, micro), (GAS, gas)):
        _positive(name, value)

    def need_divisible(num: int, den: int, what: str) -> int:
        if num % den != 0:
            raise ValueError(
                f"ds_config: {TRAIN} {train} is not divisible by {what} (={den}); "
                f"choose {TRAIN} as a multiple of {den}"
            )
        return num // den

    if train is not None and micro is not None and gas is not None:
        pass
    elif train is not None and micro is not None:
        gas = need_divisible(train, micro * dp, f"{MICRO} {micro} * dp world size {dp}")
    elif train is not None and gas is not None:
        micro = need_divisible(train, gas * dp, f"{GAS} {gas} * dp world size {dp}")
    elif micro is not None and gas is not None:
        train = micro * gas * dp
    elif train is not None:
        gas = 1
        micro = need_divisible(train, dp, f"dp world size {dp}")
    elif micro is not None:
        gas = 1
        train = micro * dp
    else:
        raise ValueError(
            f"ds_config: set {TRAIN} or {MICRO} (got neither"
            + (f"; {GAS} {gas} alone does not determine the batch)" if gas is not None else ")")
        )
    if train != micro * gas * dp:
        raise ValueError(
            f"ds_config: {TRAIN} {train} != {MICRO} {micro} * {GAS} {gas} * dp world size {dp} "
            f"(={micro * gas * dp}); fix one of them or drop {TRAIN} to have it computed"
        )
    return BatchSizes(train, micro, gas)

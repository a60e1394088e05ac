"""Ranks, world size and process groups (DeepSpeed's names over torch.distributed)."""

from __future__ import annotations

import torch.distributed as dist

from deepspeed.comm import _backend

ProcessGroup = dist.ProcessGroup


def _require_init(what: str) -> None:
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            f"deepspeed.comm.{what}: the distributed backend is not initialized; call "
            f"deepspeed.init_distributed() (or deepspeed.initialize()) first"
        )


def is_available() -> bool:
    return dist.is_available()


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size(group=None) -> int:
    if not is_initialized():
        _require_init("get_world_size")
    return dist.get_world_size(group)


def get_rank(group=None) -> int:
    if not is_initialized():
        _require_init("get_rank")
    return dist.get_rank(group)


def get_local_rank() -> int:
    """This process's rank on its node (``LOCAL_RANK``)."""
    return _backend._local_rank_from_env()


def get_global_rank(group=None, group_rank=0) -> int:
    """Global rank of ``group_rank`` in ``group`` (the world group when None)."""
    if group is None:
        return group_rank
    return dist.get_global_rank(group, group_rank)


def get_all_ranks_from_group(group=None) -> list[int]:
    """Global ranks of ``group``'s members, in group-rank order."""
    _require_init("get_all_ranks_from_group")
    return dist.get_process_group_ranks(group if group is not None else dist.group.WORLD)


def get_world_group():
    _require_init("get_world_group")
    return dist.group.WORLD


def get_backend(group=None) -> str:
    _require_init("get_backend")
    return dist.get_backend(group)


def new_group(ranks=None, timeout=None, backend=None, pg_options=None):
    """A process group over ``ranks`` (global ranks); every rank must call it, as in torch."""
    _require_init("new_group")
    return dist.new_group(ranks=ranks, timeout=timeout, backend=backend, pg_options=pg_options)


def destroy_process_group(group=None) -> None:
    from deepspeed.comm import shm

    shm.release(group)  # Note: None forgets every group's shared buffers, as torch forgets every group
    dist.destroy_process_group(group)
    if group is None:
        _backend._forget()

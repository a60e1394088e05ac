"""Sizes and ranks of process groups that also answer in a single process without
torch.distributed (ZeRO then partitions over one rank), and a broadcast from a group rank."""

from __future__ import annotations

import deepspeed.comm as ds_comm


def world_size(group=None) -> int:
    return ds_comm.get_world_size(group) if ds_comm.is_initialized() else 1


def rank(group=None) -> int:
    return ds_comm.get_rank(group) if ds_comm.is_initialized() else 0


def broadcast_from(tensor, src_rank: int, group=None) -> None:
    """Broadcast ``tensor`` from ``src_rank`` (a rank *in* ``group``) to the group."""
    if world_size(group) == 1:
        return
    src = ds_comm.get_global_rank(group, src_rank) if group is not None else src_rank
    ds_comm.broadcast(tensor, src, group=group)

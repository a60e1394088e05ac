"""ZeRO-3 parameter state: partitioning one parameter across ranks, gathering it back, releasing it.

A partitioned parameter keeps its whole value split in ``world_size`` equal slices of
``ceil(numel / world_size)`` elements (the last padded with zeros); rank ``r`` holds slice ``r``
in ``param.ds_tensor``. While the parameter is not needed its ``.data`` is an empty tensor; a
gather all-gathers the slices and makes ``.data`` the full tensor again.
"""

from __future__ import annotations

import itertools
from enum import Enum

import torch

import deepspeed.comm as ds_comm
from deepspeed.runtime.zero import _ranks


class ZeroParamStatus(Enum):
    """Where a ZeRO-3 parameter's full value is."""

    #: ``param.data`` holds the full tensor on this rank (after a gather, or persistent).
    AVAILABLE = 1
    #: Only this rank's slice exists (``param.ds_tensor``); ``param.data`` is empty.
    NOT_AVAILABLE = 2
    #: An asynchronous gather was launched; wait for it before reading ``param.data``.
    INFLIGHT = 3


class ZeroParamType(Enum):
    """How a parameter is stored."""

    #: An ordinary, unpartitioned parameter.
    NORMAL = 1
    #: Partitioned across the data-parallel ranks (``ds_tensor`` holds this rank's slice).
    PARTITIONED = 2
    #: Partitioned, with this rank's slice kept off the accelerator (offload_param).
    REMOTE = 3


_ids = itertools.count()


def is_zero_param(p) -> bool:
    return hasattr(p, "ds_id")


def _empty_like_data(p: torch.Tensor) -> torch.Tensor:
    return torch.empty(0, dtype=p.dtype, device=p.device)


def partition_param(p: torch.nn.Parameter, group=None, persist_threshold: int = 0, remote_device=None,
                    src_rank: int | None = 0) -> None:
    """Make ``p`` a ZeRO-3 parameter: keep this rank's slice, drop the full value.

    ``src_rank``: broadcast the full value from this rank of ``group`` first, so every rank
    partitions the same tensor (modules initialise randomly on each rank); None skips it.
    """
    if is_zero_param(p):
        return
    world = _ranks.world_size(group)
    rank = _ranks.rank(group)
    data = p.data
    if src_rank is not None and world > 1:
        data = data.contiguous()
        _ranks.broadcast_from(data, src_rank, group)
    numel = data.numel()
    part = max(1, -(-numel // world))
    flat = data.reshape(-1)
    shard = torch.zeros(part, dtype=data.dtype, device=remote_device or data.device)
    lo, hi = min(numel, rank * part), min(numel, (rank + 1) * part)
    if hi > lo:
        shard[: hi - lo].copy_(flat[lo:hi])
    p.ds_id = next(_ids)
    p.ds_numel = numel
    p.ds_shape = data.shape
    p.ds_tensor = shard
    p.ds_process_group = group
    p.ds_persist = numel <= persist_threshold
    p.ds_param_type = ZeroParamType.REMOTE if remote_device is not None else ZeroParamType.PARTITIONED
    p.ds_active_sub_modules = set()
    p.partition_numel = lambda p=p: p.ds_tensor.numel()
    p.all_gather = lambda param_list=None, async_op=False, p=p: gather([p] + list(param_list or []))
    p.partition = lambda param_list=None, p=p: release([p] + list(param_list or []), force=True)
    p.all_gather_coalesced = lambda params, **kw: gather(list(params))
    if p.ds_persist:
        p.data = data
        p.ds_status = ZeroParamStatus.AVAILABLE
    else:
        p.data = _empty_like_data(data)
        p.ds_status = ZeroParamStatus.NOT_AVAILABLE


class _InflightGather:
    """One launched all-gather of a batch of parameters; ``finish()`` waits and fills ``.data``."""

    def __init__(self, work, out, local, batch, world):
        self.work, self.out, self.local, self.batch, self.world = work, out, local, batch, world
        self.done = False

    def finish(self) -> None:
        if self.done:
            return
        if self.work is not None:
            self.work.wait()
        rows = self.out.view(self.world, self.local.numel())
        offset = 0
        for p in self.batch:
            part = p.ds_tensor.numel()
            # Note: with several parameters the column slice is strided, so reshape copies it into a
            # tensor of its own and releasing one parameter frees its memory.
            full = rows[:, offset:offset + part].reshape(-1)[: p.ds_numel]
            p.data = full.view(p.ds_shape)
            p.ds_status = ZeroParamStatus.AVAILABLE
            p._ds_inflight = None
            offset += part
        self.done = True
        self.out = self.local = None


def wait_inflight(params) -> None:
    """Finish the gathers still in flight for any of ``params``."""
    for p in params:
        if is_zero_param(p) and p.ds_status == ZeroParamStatus.INFLIGHT:
            p._ds_inflight.finish()


def gather(params, async_op: bool = False) -> None:
    """Make every listed ZeRO-3 parameter AVAILABLE, with one all-gather per process group and dtype.

    ``async_op``: launch the all-gathers and return; the parameters are INFLIGHT until a later
    ``gather``, ``wait_inflight`` or ``release`` of them finishes the collective.
    """
    params = list(params)
    if not async_op:
        wait_inflight(params)
    todo = [p for p in params if is_zero_param(p) and p.ds_status == ZeroParamStatus.NOT_AVAILABLE]
    if not todo:
        return
    # Note: the same parameter may be listed twice (tied weights); gather it once.
    seen, unique = set(), []
    for p in todo:
        if p.ds_id not in seen:
            seen.add(p.ds_id)
            unique.append(p)
    by_key: dict = {}
    for p in unique:
        by_key.setdefault((id(p.ds_process_group), p.ds_tensor.dtype), []).append(p)
    for batch in by_key.values():
        group = batch[0].ds_process_group
        world = _ranks.world_size(group)
        device = batch[0].device if batch[0].device.type != "meta" else batch[0].ds_tensor.device
        local = torch.cat([p.ds_tensor.to(device) for p in batch]) if len(batch) > 1 else batch[0].ds_tensor.to(device)
        out = torch.empty(local.numel() * world, dtype=local.dtype, device=device)
        if world == 1:
            out.copy_(local)
            work = None
        else:
            work = ds_comm.all_gather_into_tensor(out, local, group=group, async_op=async_op)
        handle = _InflightGather(work, out, local, batch, world)
        if async_op and work is not None:
            for p in batch:
                p.ds_status = ZeroParamStatus.INFLIGHT
                p._ds_inflight = handle
        else:
            handle.finish()


def release(params, force: bool = False) -> None:
    """Drop the full value of every listed non-persistent ZeRO-3 parameter (``force``: persistent too)."""
    for p in params:
        if not is_zero_param(p) or p.ds_status == ZeroParamStatus.NOT_AVAILABLE:
            continue
        if p.ds_status == ZeroParamStatus.INFLIGHT:
            p._ds_inflight.finish()  # Note: its buffers must outlive the collective
        if p.ds_persist and not force:
            continue
        if p.ds_active_sub_modules:
            continue
        p.data = _empty_like_data(p.data)
        p.ds_status = ZeroParamStatus.NOT_AVAILABLE


def scatter_full_value(p: torch.nn.Parameter) -> None:
    """Copy this rank's slice of ``p.data`` (the full tensor, AVAILABLE) into ``p.ds_tensor``."""
    rank = _ranks.rank(p.ds_process_group)
    part = p.ds_tensor.numel()
    flat = p.data.reshape(-1)
    lo, hi = min(p.ds_numel, rank * part), min(p.ds_numel, (rank + 1) * part)
    p.ds_tensor.zero_()
    if hi > lo:
        p.ds_tensor[: hi - lo].copy_(flat[lo:hi])

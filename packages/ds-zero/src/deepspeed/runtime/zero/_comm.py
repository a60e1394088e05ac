"""The few collectives ZeRO needs, over ``torch.distributed`` process groups.

# Note: ZeRO calls torch.distributed directly rather than deepspeed.comm so that the optimizer
# works in any process that initialised torch.distributed (Lightning, Accelerate, plain torchrun);
# the groups it receives may come from deepspeed.comm, which wraps the same objects.

When every rank of a gloo group shares the host, the three bulk collectives go through
``deepspeed.comm.shm`` (shared memory, synchronous; async callers get a completed handle).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from deepspeed.comm import shm as _shm


def world_size(group=None) -> int:
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


def rank(group=None) -> int:
    if not (dist.is_available() and dist.is_initialized()):
        return 0
    return dist.get_rank(group)


def _shared(group, tensor: torch.Tensor):
    """The group's shared-memory collectives when they can carry ``tensor`` (None: gloo)."""
    if tensor.device.type != "cpu":
        return None
    return _shm.for_group(group)


def all_reduce(tensor: torch.Tensor, op=None, group=None, async_op: bool = False):
    if world_size(group) == 1:
        return None
    name = _shm.op_name(op)
    sg = _shared(group, tensor) if name else None
    if sg is not None:
        sg.all_reduce_(tensor, name)
        return _shm.DONE
    return dist.all_reduce(tensor, op=op or dist.ReduceOp.SUM, group=group, async_op=async_op)


def reduce_scatter_v(output: torch.Tensor, pieces: list[torch.Tensor], group=None, async_op: bool = False,
                     flat: torch.Tensor | None = None):
    """Sum ``pieces[r]`` over ranks into ``output`` on rank ``r``; pieces may differ in size (or be empty).

    ``flat``: a contiguous tensor the pieces tile in rank order (saves a copy when they are equal);
    the caller keeps it (and the pieces) alive until an async collective completes.
    """
    if world_size(group) == 1:
        output.copy_(pieces[0])
        return None
    sg = _shared(group, output)
    if sg is not None:
        sg.reduce_scatter_(output, pieces)
        return _shm.DONE
    sizes = {p.numel() for p in pieces}
    if len(sizes) == 1:
        if flat is None:
            flat = torch.cat(pieces) if len(pieces) > 1 else pieces[0]
        fn = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
        return fn(output, flat, group=group, async_op=async_op)
    return dist.reduce_scatter(output, pieces, group=group, async_op=async_op)


def reduce_scatter_sources(output: torch.Tensor, sources: list[torch.Tensor], sizes: list[int], dtype: torch.dtype,
                           group=None, async_op: bool = False):
    """Reduce-scatter of the concatenation of ``sources`` (1-D, cast to ``dtype``) cut into per-rank
    pieces of ``sizes``. In shared memory the sources are read where they are; otherwise they are
    concatenated first. Returns (work, staging): keep staging alive until the work completes."""
    sg = _shared(group, output) if world_size(group) > 1 else None
    if sg is not None:
        sg.reduce_scatter_from_(output, sources, sizes)
        return _shm.DONE, None
    staging = torch.cat([s.to(dtype) for s in sources]) if len(sources) > 1 else sources[0].to(dtype, copy=True)
    pieces = list(staging.split(sizes))
    return reduce_scatter_v(output, pieces, group=group, async_op=async_op, flat=staging), staging


def all_gather_into(output: torch.Tensor, local: torch.Tensor, group=None, async_op: bool = False):
    """Gather equal-sized ``local`` tensors of every rank, in rank order, into flat ``output``.

    ``local`` may be this rank's own slice of ``output`` (copied first where the backend needs it).
    """
    if world_size(group) == 1:
        if output.data_ptr() != local.data_ptr():
            output.copy_(local)
        return None
    sg = _shared(group, local)
    if sg is not None:
        sg.all_gather_(output, local)
        return _shm.DONE
    if local.untyped_storage().data_ptr() == output.untyped_storage().data_ptr():
        local = local.clone()
    fn = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    return fn(output, local, group=group, async_op=async_op)


def broadcast(tensor: torch.Tensor, src_rank: int, group=None):
    """Broadcast from ``src_rank`` (a rank *in* ``group``) to the group."""
    if world_size(group) == 1:
        return
    src = dist.get_global_rank(group, src_rank) if group is not None else src_rank
    dist.broadcast(tensor, src=src, group=group)

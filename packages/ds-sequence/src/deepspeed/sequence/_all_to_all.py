"""The sequence <-> head all-to-all every Ulysses layer is built on.

A tensor sharded along one dimension (``gather_idx``, the sequence) is exchanged inside the
sequence-parallel group so that it comes out sharded along another (``scatter_idx``, the heads)
and whole along the first. Rank ``r`` sends its ``i``-th slice of ``scatter_idx`` to rank ``i``
and concatenates what it receives, in rank order, along ``gather_idx``. The backward pass is the
same exchange with the two dimensions swapped. Every collective goes through ``deepspeed.comm``.
"""

from __future__ import annotations

from typing import Any

import torch

import deepspeed.comm as dist


#: A group of this rank alone (no exchange), what the engine's topology means by a 1-wide dimension.
LOCAL = "local"


def resolve(group: Any) -> Any:
    """``None``: the engine's sequence-parallel group (``deepspeed.utils.groups``), looked up now;
    :data:`LOCAL` when the sequence dimension is 1 wide."""
    if group is not None:
        return group
    from deepspeed.comm import topology

    topo = topology.current()
    if topo.size("sequence") == 1 and topo.mpu is None:
        return LOCAL
    g = topo.group("sequence")
    return LOCAL if g is None else g


def group_size(group: Any) -> int:
    if group is LOCAL:
        return 1
    if group is None and not (dist.is_available() and dist.is_initialized()):
        return 1
    return int(dist.get_world_size(group))


def group_rank(group: Any) -> int:
    if group is LOCAL:
        return 0
    if group is None and not (dist.is_available() and dist.is_initialized()):
        return 0
    return int(dist.get_rank(group))


def all_to_all(x: torch.Tensor, scatter_idx: int, gather_idx: int, group: Any, what: str = "input") -> torch.Tensor:
    """Split ``x`` along ``scatter_idx`` over the group, gather along ``gather_idx`` (no autograd)."""
    world = group_size(group)
    if world == 1:
        return x
    scatter_idx %= x.dim()
    gather_idx %= x.dim()
    if scatter_idx == gather_idx:
        raise ValueError(f"all-to-all: scatter_idx and gather_idx are both dimension {scatter_idx} of {what} "
                         f"(shape {tuple(x.shape)}); they must name two different dimensions")
    n = x.shape[scatter_idx]
    if n % world != 0:
        raise ValueError(f"{what} has {n} elements along dimension {scatter_idx} (shape {tuple(x.shape)}), "
                         f"not divisible by the sequence-parallel size {world}; use a size that is a multiple "
                         f"of {world} or a sequence_parallel_size that divides {n}")
    # [world, ...]: slice i goes to rank i
    send = x.unflatten(scatter_idx, (world, n // world)).movedim(scatter_idx, 0).contiguous()
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=group)
    # slice j came from rank j: it holds rank j's part of gather_idx (dimension gather_idx + 1 of recv)
    out = recv.movedim(0, gather_idx)  # [..., world, local_g, ...]: world just before the gathered dim
    return out.flatten(gather_idx, gather_idx + 1)


class SeqAllToAll(torch.autograd.Function):
    """Differentiable :func:`all_to_all`; DeepSpeed's ``_SeqAllToAll`` argument order
    ``(group, input, scatter_idx, gather_idx[, batch_dim_idx, stream, handle, type, is_fwd])``."""

    @staticmethod
    def forward(ctx, group, input, scatter_idx, gather_idx, *rest):
        ctx.group, ctx.scatter_idx, ctx.gather_idx, ctx.n_rest = group, scatter_idx, gather_idx, len(rest)
        ctx.ndim = input.dim()
        return all_to_all(input, scatter_idx, gather_idx, group)

    @staticmethod
    def backward(ctx, grad):
        # the inverse exchange: split what was gathered, gather what was split
        s, g = ctx.scatter_idx % ctx.ndim, ctx.gather_idx % ctx.ndim
        back = all_to_all(grad.contiguous(), g, s, ctx.group, what="gradient")
        return (None, back, None, None) + (None,) * ctx.n_rest


class DimZeroAllToAll(torch.autograd.Function):
    """Differentiable all-to-all of a ``[world, ...]`` tensor along dimension 0 (DeepSpeed's
    ``_DimZeroAllToAll(group, input)``)."""

    @staticmethod
    def forward(ctx, group, input):
        world = group_size(group)
        if input.shape[0] != world:
            raise ValueError(f"dimension 0 of the input is {input.shape[0]}, not the group size {world}")
        ctx.group = group
        if world == 1:
            return input.clone()
        out = torch.empty_like(input.contiguous())
        dist.all_to_all_single(out, input.contiguous(), group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        return None, DimZeroAllToAll.apply(ctx.group, grad.contiguous())

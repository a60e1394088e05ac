"""Moving tokens to their experts and back: the capacity layout and the dropless layout.

* Capacity (``drop_tokens=True``, DeepSpeed's layout): every expert gets a ``[capacity, d]`` buffer
  (unused slots are zeros, dropped routes go nowhere); with expert parallelism one even all-to-all
  over the expert-parallel group sends each rank the buffers of its experts and one brings the
  results back. Tokens are gathered into slots by index (``S x k`` rows moved), not by DeepSpeed's
  dense ``einsum('sec,sm->ecm')``.
* Dropless (``drop_tokens=False``): the routes are sorted by expert, so each expert's tokens are one
  contiguous run of rows; with expert parallelism the per-expert counts are exchanged first and one
  uneven all-to-all moves exactly the routed rows. No padding to the largest load: memory is
  proportional to ``tokens x k``, not to ``experts x max load``.

Both are differentiable: the all-to-alls are autograd functions whose backward is the reverse
exchange, and every gather's backward is an index-add.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

import deepspeed.comm as dist
from deepspeed.moe._routing import Routes


class _AllToAll(torch.autograd.Function):
    """Even all-to-all over ``group`` along dim 0 (DeepSpeed's ``_AllToAll``)."""

    @staticmethod
    def forward(ctx: Any, group: Any, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - DeepSpeed's name
        ctx.group = group
        input = input.contiguous()
        output = torch.empty_like(input)
        dist.all_to_all_single(output, input, group=group)
        return output

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        return None, _AllToAll.apply(ctx.group, grad)


class _AllToAllV(torch.autograd.Function):
    """Uneven all-to-all along dim 0: ``in_splits[r]`` rows go to rank r, ``out_splits[r]`` come from it."""

    @staticmethod
    def forward(ctx: Any, group: Any, input: torch.Tensor, out_splits: list, in_splits: list) -> torch.Tensor:  # noqa: A002
        ctx.group, ctx.out_splits, ctx.in_splits = group, out_splits, in_splits
        input = input.contiguous()
        output = input.new_empty((sum(out_splits),) + tuple(input.shape[1:]))
        dist.all_to_all_single(output, input, output_split_sizes=out_splits, input_split_sizes=in_splits, group=group)
        return output

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        return None, _AllToAllV.apply(ctx.group, grad.contiguous(), ctx.in_splits, ctx.out_splits), None, None


def _check_shape(out: torch.Tensor, inp: torch.Tensor, which: str) -> torch.Tensor:
    if isinstance(out, tuple):
        out = out[0]  # Note: DeepSpeed ignores an expert's extra outputs (a bias term)
    if not torch.is_tensor(out) or out.shape != inp.shape:
        got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise ValueError(f"MoE {which} returned shape {got} for an input of shape {tuple(inp.shape)}; an expert must "
                         "map [tokens, hidden_size] to [tokens, hidden_size] (same shape as its input)")
    return out


def capacity_forward(x: torch.Tensor, routes: Routes, experts: torch.nn.Module, ep_group: Any, ep_size: int,
                     num_local_experts: int) -> torch.Tensor:
    """DeepSpeed's dispatch -> all-to-all -> experts -> all-to-all -> combine, over ``[E, C, d]`` buffers."""
    S, M = x.shape
    E, C = routes.num_experts, routes.capacity
    k = routes.expert.shape[1]
    slot = torch.where(routes.kept, routes.expert * C + routes.location, torch.full_like(routes.expert, E * C))
    tokens = torch.arange(S, device=x.device).unsqueeze(1).expand(S, k)
    source = torch.full((E * C + 1,), S, dtype=torch.long, device=x.device)
    source.scatter_(0, slot.reshape(-1), tokens.reshape(-1))
    padded = torch.cat([x, x.new_zeros(1, M)])
    dispatched = padded.index_select(0, source[:E * C]).view(E, C, M)
    if ep_size > 1:
        dispatched = _AllToAll.apply(ep_group, dispatched)
    grouped = dispatched.reshape(ep_size, num_local_experts, C, M)
    expert_out = _check_shape(experts(grouped), grouped, "experts")
    expert_out = expert_out.reshape(E, C, M)
    if ep_size > 1:
        expert_out = _AllToAll.apply(ep_group, expert_out)
    padded_out = torch.cat([expert_out.reshape(E * C, M), expert_out.new_zeros(1, M)])
    routed = padded_out.index_select(0, slot.reshape(-1)).view(S, k, M)
    weight = torch.where(routes.kept, routes.gate, torch.zeros_like(routes.gate))
    # Note: gates are fp32, so the weighted sum over routes accumulates in fp32 (as DeepSpeed's einsum).
    return (routed * weight.unsqueeze(-1)).sum(1).to(x.dtype)


def _run_grouped(rows: torch.Tensor, counts: list[int], modules: list[Callable]) -> torch.Tensor:
    """Each expert over its contiguous run of rows (one call per expert that got tokens)."""
    outs, start = [], 0
    for n, module in zip(counts, modules):
        if n:
            piece = rows.narrow(0, start, n)
            outs.append(_check_shape(module(piece), piece, "expert"))
        start += n
    if not outs:
        return rows.new_zeros(rows.shape)  # Note: no rows at all; keeps the graph (and the exchange) uniform
    return torch.cat(outs) if len(outs) > 1 else outs[0]


def dropless_forward(x: torch.Tensor, routes: Routes, local_experts: list[Callable], ep_group: Any, ep_size: int,
                     num_local_experts: int) -> torch.Tensor:
    """Every kept route computed once: rows sorted by expert, uneven all-to-all, grouped experts."""
    S, M = x.shape
    E = routes.num_experts
    k = routes.expert.shape[1]
    kept = routes.kept.reshape(-1)
    expert = routes.expert.reshape(-1)[kept]
    token = torch.arange(S, device=x.device).repeat_interleave(k)[kept]
    gate = routes.gate.reshape(-1)[kept]
    order = torch.argsort(expert, stable=True)
    expert, token, gate = expert[order], token[order], gate[order]
    counts = torch.bincount(expert, minlength=E)
    rows = x.index_select(0, token)
    if ep_size > 1:
        per_rank = counts.view(ep_size, num_local_experts)
        recv_counts = torch.empty_like(per_rank)
        dist.all_to_all_single(recv_counts, per_rank.contiguous(), group=ep_group)
        send = per_rank.sum(1).tolist()
        recv = recv_counts.sum(1).tolist()
        received = _AllToAllV.apply(ep_group, rows, recv, send)
        # Note: rows arrive grouped by source rank, then expert; a stable sort on (expert, source)
        # regroups them by expert, then source.
        src, exp = torch.meshgrid(torch.arange(ep_size, device=x.device),
                                  torch.arange(num_local_experts, device=x.device), indexing="ij")
        key = torch.repeat_interleave((exp * ep_size + src).reshape(-1), recv_counts.reshape(-1))
        perm = torch.argsort(key, stable=True)
        local_counts = recv_counts.sum(0).tolist()
        out = _run_grouped(received.index_select(0, perm), local_counts, local_experts)
        inverse = torch.empty_like(perm)
        inverse[perm] = torch.arange(perm.numel(), device=x.device)
        out = _AllToAllV.apply(ep_group, out.index_select(0, inverse), send, recv)
    else:
        out = _run_grouped(rows, counts.tolist(), local_experts)
    weighted = out.float() * gate.unsqueeze(1)
    return x.new_zeros(S, M, dtype=torch.float32).index_add(0, token, weighted).to(x.dtype)

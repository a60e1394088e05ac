"""Routing: which expert each token goes to, at which capacity slot, with which gate weight.

Every gating function computes one :class:`Routes` (a compact ``[tokens, k]`` description of the
routing); the public ``top1gating`` / ``top2gating`` / ``topkgating`` of
:mod:`deepspeed.moe.sharded_moe` expand it into DeepSpeed's dense ``combine_weights`` /
``dispatch_mask`` tensors, and :class:`~deepspeed.moe.sharded_moe.MOELayer` dispatches from it
directly (no ``tokens x experts x capacity`` tensor is built on the layer's path).

DeepSpeed's rules, kept here:

* capacity (``drop_tokens=True``): ``ceil(tokens / experts * capacity_factor * k)``, at least
  ``min_capacity``; ``drop_tokens=False``: the largest expert load over the expert-parallel group.
* top-1: the first expert by gate (or by gate logits + Gumbel noise with ``noisy_gate_policy=
  'RSample'``); over capacity, Random Token Selection (``use_rts``) keeps the tokens with the
  highest uniform draw, otherwise the first ones in token order.
* top-2: the second expert by the logits with Gumbel noise (``top2_2nd_expert_sampling``); second
  choices queue behind every first choice of that expert; the two gates are renormalised over what
  survived the capacity cut.
* top-k (k > 2): the k best gates; over capacity, ``drop_policy='probs'`` keeps the tokens with
  the highest gate for that expert, ``'position'`` the first ones; gates renormalised over the
  surviving routes.
* ``l_aux``: ``num_experts * sum_e(mean gate_e * fraction of tokens whose first choice is e)``
  (top-1 and top-2; over top-k selections and divided by k for k > 2). ``exp_counts``: routes per
  expert before the capacity cut.

Unlike DeepSpeed, no function here writes into its inputs (DeepSpeed's ``top2gating`` adds its
sampling noise to the caller's logits), and ``used_token`` may be a float, int or bool mask
(non-zero = used).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

import deepspeed.comm as dist

NOISY_GATE_POLICIES = (None, "None", "Jitter", "RSample")
DROP_POLICIES = ("probs", "position")


class Routes(NamedTuple):
    """One routing decision for ``S`` tokens and ``k`` routes each.

    ``expert``/``location``: ``[S, k]`` int64 (expert index, slot in that expert's capacity
    buffer); ``gate``: ``[S, k]`` fp32 combine weight (0 for a dropped route); ``kept``: ``[S, k]``
    bool; ``capacity``: slots per expert (an int); ``l_aux``: the load-balancing loss (0-d, with
    gradient); ``exp_counts``: ``[E]`` int64 routes per expert before the capacity cut.
    """

    expert: torch.Tensor
    location: torch.Tensor
    gate: torch.Tensor
    kept: torch.Tensor
    capacity: int
    l_aux: torch.Tensor
    exp_counts: torch.Tensor
    num_experts: int


def _keep_best(mask: torch.Tensor, score: torch.Tensor, capacity: int) -> torch.Tensor:
    """``mask`` ([S, E]) keeping, per expert, the ``capacity`` routed tokens of highest ``score``
    (scores in [0, 1]; ties: the earlier token first)."""
    S, E = mask.shape
    scored = torch.where(mask.bool(), score, torch.full_like(score, -1.0))
    order = torch.argsort(scored, dim=0, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(0, order, torch.arange(S, device=mask.device).unsqueeze(1).expand(S, E))
    return mask * (rank < capacity).to(mask.dtype)


def check_logits(logits: torch.Tensor, k: int) -> None:
    if logits.dim() != 2:
        raise ValueError(f"gating logits must be [tokens, num_experts]; got shape {tuple(logits.shape)}")
    if not 1 <= k <= logits.shape[1]:
        raise ValueError(f"k={k} must be between 1 and num_experts={logits.shape[1]}")


def capacity_for(num_tokens: int, num_experts: int, capacity_factor: float, min_capacity: int) -> int:
    """DeepSpeed's ``_capacity``: ``ceil(tokens / experts * factor)``, at least ``min_capacity``."""
    return max(int(math.ceil(num_tokens / num_experts * capacity_factor)), int(min_capacity))


def max_load(exp_counts: torch.Tensor, ep_group: Any) -> int:
    """The largest per-expert load, over the expert-parallel group (DeepSpeed's dropless capacity)."""
    load = exp_counts.max().reshape(1).clone()
    if ep_group is not None and dist.is_initialized() and dist.get_world_size(group=ep_group) > 1:
        dist.all_reduce(load, op=dist.ReduceOp.MAX, group=ep_group)
    return int(load.item())


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """``[S, E]`` 0/1 mask -> each route's position in its expert's queue (token order)."""
    return torch.cumsum(mask, dim=0) - 1


def _gumbel(shape, device, generator=None) -> torch.Tensor:
    u = torch.rand(shape, device=device, generator=generator)
    tiny = torch.finfo(u.dtype).tiny
    e = -torch.log(u.clamp(min=tiny))  # Exp(1)
    return -torch.log(e.clamp(min=tiny))


def route_top1(logits: torch.Tensor, capacity_factor: float, min_capacity: int, used_token: torch.Tensor | None = None,
               noisy_gate_policy: str | None = None, drop_tokens: bool = True, use_rts: bool = True,
               ep_group: Any = None, bias: torch.Tensor | None = None) -> Routes:
    check_logits(logits, 1)
    S, E = logits.shape
    gates = F.softmax(logits.float(), dim=1)
    scores = gates
    if noisy_gate_policy == "RSample":
        scores = logits.float() + _gumbel(logits.shape, logits.device)
    if bias is not None:
        scores = scores + bias
    idx = torch.argmax(scores, dim=1)
    mask = F.one_hot(idx, num_classes=E)
    if used_token is not None:
        if used_token.shape != (S,):
            raise ValueError(f"used_token must have one entry per token, shape ({S},); got {tuple(used_token.shape)}")
        mask = mask * (used_token != 0).to(mask.dtype).unsqueeze(1)
    exp_counts = mask.sum(dim=0).detach()
    me = gates.mean(dim=0)
    ce = mask.float().mean(dim=0)
    l_aux = torch.sum(me * ce) * E
    if drop_tokens:
        if S < min_capacity:
            raise ValueError(f"top-1 gating got {S} tokens, fewer than min_capacity={min_capacity}; set "
                             "min_capacity to 0 or pass at least that many tokens")
        capacity = capacity_for(S, E, capacity_factor, min_capacity)
        if use_rts:
            # Note: Random Token Selection: over capacity, an expert keeps the routed tokens with the
            # highest uniform draw (one draw per token, torch's global generator).
            draw = torch.rand(S, device=logits.device)
            mask = _keep_best(mask, draw.unsqueeze(1).expand(S, E), capacity)
        else:
            mask = mask * (_positions(mask) < capacity).to(mask.dtype)
    else:
        capacity = min(max_load(exp_counts, ep_group), S)
    loc = (_positions(mask) * mask).sum(dim=1)
    kept = mask.sum(dim=1) > 0
    gate = (gates * mask).sum(dim=1)
    return Routes(idx.unsqueeze(1), loc.unsqueeze(1), gate.unsqueeze(1), kept.unsqueeze(1), capacity, l_aux,
                  exp_counts, E)


def route_top2(logits: torch.Tensor, capacity_factor: float, min_capacity: int, drop_tokens: bool = True,
               ep_group: Any = None, top2_2nd_expert_sampling: bool = True,
               bias: torch.Tensor | None = None) -> Routes:
    check_logits(logits, 2)
    S, E = logits.shape
    gates = F.softmax(logits.float(), dim=1)
    first = gates if bias is None else gates + bias
    idx1 = torch.argmax(first, dim=1)
    mask1 = F.one_hot(idx1, num_classes=E)
    second = logits.float()
    if top2_2nd_expert_sampling:
        second = second + _gumbel(logits.shape, logits.device)  # Note: a new tensor; the caller's logits stay
    if bias is not None:
        second = second + bias
    idx2 = torch.argmax(second.masked_fill(mask1.bool(), float("-inf")), dim=1)
    mask2 = F.one_hot(idx2, num_classes=E)
    loc1 = _positions(mask1)
    loc2 = _positions(mask2) + mask1.sum(dim=0, keepdim=True)
    me = gates.mean(dim=0)
    ce = mask1.float().mean(dim=0)
    l_aux = torch.mean(me * ce) * E * E
    exp_counts = (mask1 + mask2).sum(dim=0).detach()
    if drop_tokens:
        capacity = capacity_for(S, E, capacity_factor * 2, min_capacity)
        mask1 = mask1 * (loc1 < capacity).to(mask1.dtype)
        mask2 = mask2 * (loc2 < capacity).to(mask2.dtype)
    else:
        capacity = max_load(exp_counts, ep_group)
    l1 = (loc1 * mask1).sum(dim=1)
    l2 = (loc2 * mask2).sum(dim=1)
    g1 = (gates * mask1).sum(dim=1)
    g2 = (gates * mask2).sum(dim=1)
    denom = torch.clamp(g1 + g2, min=torch.finfo(g1.dtype).eps)
    g1, g2 = g1 / denom, g2 / denom
    return Routes(torch.stack([idx1, idx2], 1), torch.stack([l1, l2], 1), torch.stack([g1, g2], 1),
                  torch.stack([mask1.sum(1) > 0, mask2.sum(1) > 0], 1), capacity, l_aux, exp_counts, E)


def route_topk(logits: torch.Tensor, k: int, capacity_factor: float, min_capacity: int, drop_tokens: bool = True,
               ep_group: Any = None, drop_policy: str = "probs", bias: torch.Tensor | None = None) -> Routes:
    check_logits(logits, k)
    if drop_policy not in DROP_POLICIES:
        raise ValueError(f"drop_policy={drop_policy!r} is not one of {DROP_POLICIES}")
    S, E = logits.shape
    gates = F.softmax(logits.float(), dim=1)
    _, top_idx = torch.topk(gates if bias is None else gates + bias, k=k, dim=1)
    mask = torch.zeros_like(gates, dtype=torch.long).scatter_(1, top_idx, 1)
    exp_counts = mask.sum(dim=0).detach()
    me = gates.mean(dim=0)
    ce = mask.float().mean(dim=0)
    l_aux = torch.mean(me * ce) * E * E / k
    if drop_tokens:
        capacity = capacity_for(S, E, capacity_factor * k, min_capacity)
        if drop_policy == "probs":
            # Note: each expert keeps the `capacity` routed tokens with the highest gate (ties: the
            # earlier token first).
            mask = _keep_best(mask, gates.detach(), capacity)
        else:
            mask = mask * (_positions(mask) < capacity).to(mask.dtype)
    else:
        capacity = max_load(exp_counts, ep_group)
    locations = _positions(mask)
    masked = gates * mask
    masked = masked / torch.clamp(masked.sum(dim=1, keepdim=True), min=torch.finfo(masked.dtype).eps)
    kept = mask.gather(1, top_idx) > 0
    return Routes(top_idx, (locations * mask).gather(1, top_idx), masked.gather(1, top_idx), kept, capacity, l_aux,
                  exp_counts, E)


def dense(routes: Routes) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepSpeed's ``combine_weights`` ``[S, E, C]`` (fp32) and ``dispatch_mask`` (bool) of ``routes``."""
    S, k = routes.expert.shape
    E, C = routes.num_experts, routes.capacity
    # Note: dropped routes are parked on one scratch column past the last slot, then cut off.
    slot = torch.where(routes.kept, routes.expert * C + routes.location, torch.full_like(routes.expert, E * C))
    weight = torch.where(routes.kept, routes.gate, torch.zeros_like(routes.gate))
    combine = routes.gate.new_zeros(S, E * C + 1).scatter_add(1, slot, weight)[:, :E * C].reshape(S, E, C)
    dispatch = torch.zeros(S, E * C + 1, dtype=torch.bool, device=slot.device)
    dispatch.scatter_(1, slot, True)
    return combine, dispatch[:, :E * C].reshape(S, E, C)

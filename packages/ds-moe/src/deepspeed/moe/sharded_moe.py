"""``deepspeed.moe.sharded_moe``: DeepSpeed's gating functions, ``TopKGate`` and ``MOELayer``.

The gating functions return DeepSpeed's ``(l_aux, combine_weights, dispatch_mask, exp_counts)``
(or, with ``sparse_routes=True``, DeepSpeed 0.19's per-route tuple);
the rules are in :mod:`deepspeed.moe._routing` and the token exchange in
:mod:`deepspeed.moe._dispatch`.
"""

from __future__ import annotations

from typing import Any

import torch

import deepspeed.comm as dist
from deepspeed.moe import _routing
from deepspeed.moe._dispatch import _AllToAll, capacity_forward, dropless_forward  # noqa: F401 - DeepSpeed's name
from deepspeed.moe._routing import NOISY_GATE_POLICIES, Routes, dense
from deepspeed.utils.logging import logger

__all__ = ["MOELayer", "TopKGate", "gumbel_rsample", "multiplicative_jitter", "top1gating", "top2gating",
           "topkgating"]


def multiplicative_jitter(x: torch.Tensor, device: torch.device = None, epsilon: float = 1e-2) -> torch.Tensor:
    """``x`` times a uniform draw in ``[1 - epsilon, 1 + epsilon]`` per element (a new tensor)."""
    if epsilon == 0:
        return x
    return x * torch.empty_like(x).uniform_(1.0 - epsilon, 1.0 + epsilon)


def gumbel_rsample(shape, device: torch.device = None) -> torch.Tensor:
    """Standard Gumbel samples of ``shape``."""
    return _routing._gumbel(shape, device)


def _capacity(gates: torch.Tensor, capacity_factor, min_capacity) -> torch.Tensor:
    """DeepSpeed's capacity of ``[tokens, experts]`` gates, as an int64 0-d tensor."""
    S, E = gates.shape
    return torch.tensor(_routing.capacity_for(S, E, float(capacity_factor), int(min_capacity)))


def _output(routes: Routes, sparse_routes: bool = False):
    """DeepSpeed's dense tuple, or with ``sparse_routes`` its per-route one: ``(l_aux, capacity,
    num_experts, indices [k,S] int32 (-1: dropped), locations [k,S] int32, gates [k,S], exp_counts)``."""
    if sparse_routes:
        idx = torch.where(routes.kept, routes.expert, torch.full_like(routes.expert, -1))
        return (routes.l_aux, torch.tensor(routes.capacity), routes.num_experts, idx.t().contiguous().to(torch.int32),
                routes.location.t().contiguous().to(torch.int32), routes.gate.t().contiguous(), routes.exp_counts)
    combine, dispatch = dense(routes)
    return routes.l_aux, combine, dispatch, routes.exp_counts


def top1gating(logits: torch.Tensor, capacity_factor: float, min_capacity: int, used_token: torch.Tensor = None,
               noisy_gate_policy: str | None = None, drop_tokens: bool = True, use_rts: bool = True,
               ep_group: Any = None, sparse_routes: bool = False, use_tutel: bool = False):
    """Top-1 gating: ``(l_aux, combine_weights [S,E,C], dispatch_mask [S,E,C], exp_counts [E])``."""
    return _output(_routing.route_top1(logits, capacity_factor, min_capacity, used_token, noisy_gate_policy,
                                       drop_tokens, use_rts, ep_group), sparse_routes)


def top2gating(logits: torch.Tensor, capacity_factor: float, min_capacity: int, drop_tokens: bool = True,
               ep_group: Any = None, top2_2nd_expert_sampling: bool = True, sparse_routes: bool = False):
    """Top-2 gating (GShard): ``(l_aux, combine_weights, dispatch_mask, exp_counts)``; ``logits`` is not modified."""
    return _output(_routing.route_top2(logits, capacity_factor, min_capacity, drop_tokens, ep_group,
                                       top2_2nd_expert_sampling), sparse_routes)


def topkgating(logits: torch.Tensor, k: int, capacity_factor: float, min_capacity: int, drop_tokens: bool = True,
               ep_group: Any = None, drop_policy: str = "probs", sparse_routes: bool = False):
    """Top-k gating for any k: ``(l_aux, combine_weights, dispatch_mask, exp_counts)``."""
    return _output(_routing.route_topk(logits, k, capacity_factor, min_capacity, drop_tokens, ep_group,
                                       drop_policy), sparse_routes)


class TopKGate(torch.nn.Module):
    """The router: a bias-free linear ``wg`` from the model dimension to the experts, then top-k gating.

    ``forward(input, used_token=None)`` returns the gating tuple like DeepSpeed's. Beyond DeepSpeed:
    ``k`` may exceed 2, ``drop_policy`` ('probs' or 'position') picks which tokens an over-full
    expert keeps for k > 2, and ``bias_update_rate > 0`` turns on auxiliary-loss-free balancing
    (DeepSeek-V3): a per-expert bias buffer ``expert_bias`` is added to the scores that *select*
    experts (never to the combine weights) and, after every training forward, moves by
    ``bias_update_rate`` towards balance (``+rate`` for experts below the mean load, ``-rate`` above;
    loads summed over every rank so the bias stays identical everywhere).
    """

    def __init__(self, model_dim: int, num_experts: int, k: int = 1, capacity_factor: float = 1.0,
                 eval_capacity_factor: float = 1.0, min_capacity: int = 8, noisy_gate_policy: str | None = None,
                 drop_tokens: bool = True, use_rts: bool = True, ep_group: Any = None,
                 top2_2nd_expert_sampling: bool = True, drop_policy: str = "probs", bias_update_rate: float = 0.0):
        super().__init__()
        if not isinstance(k, int) or not 1 <= k <= num_experts:
            raise ValueError(f"TopKGate: k={k!r} must be an int between 1 and num_experts={num_experts}")
        if noisy_gate_policy not in NOISY_GATE_POLICIES:
            raise ValueError(f"noisy_gate_policy={noisy_gate_policy!r} is not one of {NOISY_GATE_POLICIES}")
        if drop_policy not in _routing.DROP_POLICIES:
            raise ValueError(f"drop_policy={drop_policy!r} is not one of {_routing.DROP_POLICIES}")
        if capacity_factor <= 0 or eval_capacity_factor <= 0:
            raise ValueError(f"capacity_factor={capacity_factor} and eval_capacity_factor={eval_capacity_factor} "
                             "must be > 0")
        if bias_update_rate < 0:
            raise ValueError(f"bias_update_rate={bias_update_rate} must be >= 0 (0 turns the balancing bias off)")
        self.wg = torch.nn.Linear(model_dim, num_experts, bias=False)
        self.ep_group = ep_group
        self.k = k
        self.num_experts = num_experts
        self.capacity_factor = capacity_factor
        self.eval_capacity_factor = eval_capacity_factor
        self.min_capacity = min_capacity
        self.noisy_gate_policy = None if noisy_gate_policy == "None" else noisy_gate_policy
        self.drop_tokens = drop_tokens
        self.use_rts = use_rts
        self.top2_2nd_expert_sampling = top2_2nd_expert_sampling
        self.drop_policy = drop_policy
        self.bias_update_rate = float(bias_update_rate)
        self.wall_clock_breakdown = False
        self.gate_time = 0.0
        if self.bias_update_rate > 0:
            self.register_buffer("expert_bias", torch.zeros(num_experts))
        else:
            self.expert_bias = None

    def _set_ep_group(self, ep_group: Any) -> None:
        self.ep_group = ep_group

    def logits(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - DeepSpeed's name
        x = input.float()
        if self.noisy_gate_policy == "Jitter" and self.training:
            x = multiplicative_jitter(x)
        return torch.nn.functional.linear(x, self.wg.weight.float())

    def route(self, input: torch.Tensor, used_token: torch.Tensor | None = None,  # noqa: A002
              dense_capacity: bool = True) -> Routes:
        """The routing of ``input`` ``[tokens, model_dim]``. ``dense_capacity=False`` (the dropless
        layer) skips agreeing on the largest load over the expert-parallel group."""
        logits = self.logits(input)
        cf = self.capacity_factor if self.training else self.eval_capacity_factor
        ep_group = self.ep_group if dense_capacity else None
        bias = self.expert_bias
        if self.k == 1:
            routes = _routing.route_top1(logits, cf, self.min_capacity, used_token,
                                         self.noisy_gate_policy if self.training else None, self.drop_tokens,
                                         self.use_rts, ep_group, bias)
        else:
            if used_token is not None:
                raise ValueError(f"used_token is only supported with k=1 (as in DeepSpeed); this gate has k={self.k}")
            if self.k == 2:
                routes = _routing.route_top2(logits, cf, self.min_capacity, self.drop_tokens, ep_group,
                                             self.top2_2nd_expert_sampling, bias)
            else:
                routes = _routing.route_topk(logits, self.k, cf, self.min_capacity, self.drop_tokens, ep_group,
                                             self.drop_policy, bias)
        if bias is not None and self.training:
            self._update_bias(routes.exp_counts)
        return routes

    @torch.no_grad()
    def _update_bias(self, exp_counts: torch.Tensor) -> None:
        load = exp_counts.to(self.expert_bias.dtype)
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(load)
        self.expert_bias.add_(torch.sign(load.mean() - load) * self.bias_update_rate)

    def forward(self, input: torch.Tensor, used_token: torch.Tensor = None, sparse_routes: bool = False,  # noqa: A002
                use_tutel: bool = False):
        return _output(self.route(input, used_token), sparse_routes)


class MOELayer(torch.nn.Module):
    """Gate, then experts over the expert-parallel group, then the gate-weighted combination.

    ``forward(input, used_token=None)`` takes ``[..., d]`` and returns the same shape; ``l_aux`` and
    ``exp_counts`` of the last call are attributes. ``drop_tokens=True`` on the gate uses the
    capacity layout, ``False`` the dropless one (:mod:`deepspeed.moe._dispatch`).
    """

    def __init__(self, gate: torch.nn.Module, experts: torch.nn.Module, ep_group_name: str, ep_size: int,
                 num_local_experts: int, use_tutel: bool = False):
        super().__init__()
        self.gate = gate
        self.experts = experts
        self.ep_group = None
        self.ep_size = int(ep_size)
        self.ep_group_name = ep_group_name
        self.num_local_experts = int(num_local_experts)
        self.wall_clock_breakdown = False
        self.time_falltoall = self.time_salltoall = self.time_moe = 0.0
        self.l_aux = None
        self.exp_counts = None
        self.use_tutel = False
        if use_tutel:
            logger.warning("use_tutel=True: Tutel is not used by ds-moe; the built-in dispatch runs instead")

    def _set_ep_group(self, ep_group: Any) -> None:
        self.ep_group = ep_group
        self.gate._set_ep_group(ep_group)

    def forward(self, *input: torch.Tensor, **kwargs: Any) -> torch.Tensor:  # noqa: A002
        hidden = input[0]
        used_token = input[1] if len(input) > 1 else kwargs.get("used_token")
        if self.ep_size > 1 and self.ep_group is None and dist.is_initialized():
            raise RuntimeError(f"MoE layer with ep_size={self.ep_size} has no expert-parallel group yet; build the "
                               "engine with deepspeed.initialize (it sets the groups up) or call "
                               "moe.set_deepspeed_parallelism() on every rank first")
        d = hidden.shape[-1]
        x = hidden.reshape(-1, d)
        if used_token is not None:
            used_token = used_token.reshape(-1)
        routes = self.gate.route(x, used_token, dense_capacity=self.gate.drop_tokens)
        self.l_aux, self.exp_counts = routes.l_aux, routes.exp_counts
        ep = self.ep_size if self.ep_group is not None else 1
        if ep == 1 and self.ep_size > 1:
            raise RuntimeError(f"MoE layer with ep_size={self.ep_size} outside torch.distributed: it holds only "
                               f"{self.num_local_experts} of {self.gate.num_experts} experts; run it on "
                               f"{self.ep_size} ranks or build it with ep_size=1")
        if self.gate.drop_tokens:
            out = capacity_forward(x, routes, self.experts, self.ep_group, ep, self.num_local_experts)
        else:
            out = dropless_forward(x, routes, list(self.experts.deepspeed_experts), self.ep_group, ep,
                                   self.num_local_experts)
        return out.reshape(hidden.shape)

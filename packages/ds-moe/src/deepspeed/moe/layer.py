"""``deepspeed.moe.layer.MoE``: DeepSpeed's Mixture-of-Experts layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deepspeed.moe.experts import Experts
from deepspeed.moe.sharded_moe import MOELayer, TopKGate
from deepspeed.utils import groups
from deepspeed.utils.logging import log_dist


class MoE(torch.nn.Module):
    """A Mixture-of-Experts layer with DeepSpeed's arguments.

    ``expert``: the module every expert copies (it must map ``[tokens, hidden_size]`` to the same
    shape). ``num_experts`` experts in total, ``num_experts / ep_size`` on each rank of an
    expert-parallel group of ``ep_size`` ranks. ``k``: experts per token (1, 2, or more: top-k).
    ``drop_tokens=False`` computes every routed token (dropless: no capacity, no padding).
    ``use_residual``: PR-MoE / residual MoE (a dense copy of ``expert`` mixed in by a learned
    2-way coefficient). ``forward(hidden_states, used_token=None)`` returns
    ``(output, l_aux, exp_counts)``.

    Beyond DeepSpeed's arguments (keyword-only): ``drop_policy`` for k > 2 and
    ``bias_update_rate`` (auxiliary-loss-free balancing, see :class:`TopKGate`).
    """

    def __init__(self, hidden_size: int, expert: torch.nn.Module, num_experts: int = 1, ep_size: int = 1, k: int = 1,
                 capacity_factor: float = 1.0, eval_capacity_factor: float = 1.0, min_capacity: int = 4,
                 use_residual: bool = False, noisy_gate_policy: str | None = None, drop_tokens: bool = True,
                 use_rts: bool = True, use_tutel: bool = False, enable_expert_tensor_parallelism: bool = False,
                 top2_2nd_expert_sampling: bool = True, *, drop_policy: str = "probs", bias_update_rate: float = 0.0):
        super().__init__()
        if not isinstance(num_experts, int) or num_experts < 1:
            raise ValueError(f"MoE: num_experts={num_experts!r} must be a positive int")
        if not isinstance(ep_size, int) or ep_size < 1:
            raise ValueError(f"MoE: ep_size={ep_size!r} must be a positive int")
        if num_experts % ep_size:
            raise ValueError(f"MoE: num_experts={num_experts} is not divisible by ep_size={ep_size}; every rank of "
                             f"the expert-parallel group holds num_experts / ep_size experts, so pick an ep_size "
                             f"that divides {num_experts}")
        if not isinstance(k, int) or not 1 <= k <= num_experts:
            raise ValueError(f"MoE: k={k!r} must be an int between 1 and num_experts={num_experts}")
        if not isinstance(expert, torch.nn.Module):
            raise ValueError(f"MoE: expert must be a torch.nn.Module, got {type(expert).__name__}")
        self.use_residual = use_residual
        self.enable_expert_tensor_parallelism = enable_expert_tensor_parallelism
        self.ep_size = ep_size
        self.expert_group_name = f"ep_size_{ep_size}"
        self.num_experts = num_experts
        self.num_local_experts = num_experts // ep_size
        log_dist(f"Creating MoE layer with num_experts: {num_experts} | num_local_experts: {self.num_local_experts} "
                 f"| expert_parallel_size: {ep_size}", [0])
        experts = Experts(expert, self.num_local_experts, self.expert_group_name)
        gate = TopKGate(hidden_size, num_experts, k, capacity_factor, eval_capacity_factor, min_capacity,
                        noisy_gate_policy, drop_tokens, use_rts, None, top2_2nd_expert_sampling,
                        drop_policy=drop_policy, bias_update_rate=bias_update_rate)
        self.deepspeed_moe = MOELayer(gate, experts, self.expert_group_name, ep_size, self.num_local_experts,
                                      use_tutel=use_tutel)
        if use_residual:
            self.mlp = expert
            self.coefficient = torch.nn.Linear(hidden_size, 2)

    def set_deepspeed_parallelism(self, use_data_before_expert_parallel_: bool = False) -> None:
        """Create (collectively) and attach this layer's expert-parallel group; the engine calls it."""
        self._create_process_groups(use_data_before_expert_parallel_=use_data_before_expert_parallel_)

    def _create_process_groups(self, use_data_before_expert_parallel_: bool = False) -> None:
        if self.enable_expert_tensor_parallelism and groups.get_tensor_model_parallel_world_size() > 1:
            raise NotImplementedError("MoE(enable_expert_tensor_parallelism=True) with tensor parallelism is not "
                                      "implemented by ds-moe; set it to False (experts are then replicated across "
                                      "the tensor-parallel ranks)")
        try:
            groups._create_expert_and_data_parallel(self.ep_size,
                                                    use_data_before_expert_parallel_=use_data_before_expert_parallel_)
        except ValueError as e:
            raise ValueError(f"MoE: ep_size={self.ep_size} does not fit this job: {e}") from None
        self.deepspeed_moe._set_ep_group(groups._get_expert_parallel_group(self.expert_group_name))

    def forward(self, hidden_states: torch.Tensor, used_token: torch.Tensor | None = None):
        output = self.deepspeed_moe(hidden_states, used_token)
        if self.use_residual:
            dense = self.mlp(hidden_states)
            if isinstance(dense, tuple):
                dense = dense[0]
            coef = F.softmax(self.coefficient(hidden_states), dim=-1)
            output = output * coef[..., 0:1] + dense * coef[..., 1:]
        return output, self.deepspeed_moe.l_aux, self.deepspeed_moe.exp_counts

"""``deepspeed.moe.experts.Experts``: this rank's local experts, copies of one expert module."""

from __future__ import annotations

import copy

import torch


class Experts(torch.nn.Module):
    """``num_local_experts`` deep copies of ``expert`` in ``deepspeed_experts`` (DeepSpeed's layout and
    state-dict names). Their parameters are marked as DeepSpeed marks expert parameters:
    ``param.allreduce = False`` and ``param.group_name = expert_group_name`` (``ep_size_<N>``)."""

    def __init__(self, expert: torch.nn.Module, num_local_experts: int = 1, expert_group_name: str | None = None):
        super().__init__()
        self.deepspeed_experts = torch.nn.ModuleList([copy.deepcopy(expert) for _ in range(num_local_experts)])
        self.num_local_experts = num_local_experts
        for e in self.deepspeed_experts:
            for p in e.parameters():
                p.allreduce = False
                p.group_name = expert_group_name

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """``inputs`` ``[ranks, num_local_experts, capacity, d]``: expert ``j`` runs on ``inputs[:, j]``."""
        outputs = []
        for chunk, expert in zip(inputs.chunk(self.num_local_experts, dim=1), self.deepspeed_experts):
            out = expert(chunk)
            if isinstance(out, tuple):
                out = out[0]
            outputs.append(out)
        return torch.cat(outputs, dim=1)

"""The loss of a sequence-parallel batch: the mean over every valid token of the whole sequence.

Each rank of the sequence-parallel group computes the mean loss of its own shard. Shards are
padded unevenly (the labels of padding are ``-100``), so the plain mean of the ranks' means is
wrong; :func:`sequence_parallel_mean_loss` weights each rank's mean by its number of valid tokens:
``sum_r(loss_r * n_r) / sum_r(n_r)``. A shard with no valid token contributes nothing (its NaN
mean is ignored). The gradient is exact under the engine's averaging over the
sequence-data-parallel group: each rank's backward gets ``P * n_r / N`` of the upstream gradient
(``P`` the group size), which the engine's division by ``P`` turns back into ``n_r / N``.
"""

from __future__ import annotations

from typing import Any

import torch

import deepspeed.comm as dist
from deepspeed.sequence._all_to_all import group_size


class _WeightedMean(torch.autograd.Function):
    @staticmethod
    def forward(ctx, loss, n, group):
        world = group_size(group)
        n = n.to(torch.float64)
        part = torch.where(n > 0, loss.detach().to(torch.float64) * n, torch.zeros_like(n))
        both = torch.stack([part, n]).reshape(2)
        if world > 1:
            dist.all_reduce(both, group=group)
        total = both[1]
        if total <= 0:
            raise ValueError("sequence_parallel_mean_loss: no valid token in the whole sequence (every label is "
                             "the ignore index); the mean loss is undefined")
        ctx.group, ctx.world, ctx.weight = group, world, float(n / total)
        return (both[0] / total).to(loss.dtype)

    @staticmethod
    def backward(ctx, grad):
        g = grad.detach().clone()
        if ctx.world > 1:
            # every rank's upstream gradient reaches every rank's term (normally all equal)
            dist.all_reduce(g, group=ctx.group)
        return g * ctx.weight, None, None


def sequence_parallel_mean_loss(loss: torch.Tensor, num_valid_tokens: Any, group: Any = None) -> torch.Tensor:
    """``loss``: this rank's mean loss over its ``num_valid_tokens`` valid tokens. Returns the
    mean over the whole sequence (the same value on every rank of ``group``; default: the
    sequence-parallel group of the engine's topology)."""
    if group is None:
        from deepspeed.utils import groups

        try:
            group = groups._get_sequence_parallel_group()
        except (KeyError, RuntimeError, AssertionError):
            group = None
    if loss.dim() != 0:
        raise ValueError(f"sequence_parallel_mean_loss: loss must be a scalar (got shape {tuple(loss.shape)})")
    n = torch.as_tensor(num_valid_tokens, device=loss.device).reshape(())
    if n < 0:
        raise ValueError(f"sequence_parallel_mean_loss: num_valid_tokens must be >= 0 (got {int(n)})")
    return _WeightedMean.apply(loss, n, group)

"""``deepspeed.runtime.utils``: the few helpers integrations import from DeepSpeed's path
(``move_to_device``, ``see_memory_usage``, ``clip_grad_norm_``, ``partition_uniform``,
``partition_balanced``, ``prefix_sum_inc``, ``is_model_parallel_parameter``)."""

from __future__ import annotations

from typing import Any, Callable

import torch

from deepspeed.utils.logging import logger


def move_to_device(item: Any, device: Any, criterion_func: Callable[[Any], bool] | None = None) -> Any:
    """``item`` with every tensor (in nested lists, tuples and dicts) moved to ``device``;
    with ``criterion_func`` only the objects it accepts are moved (others are returned as is)."""
    if criterion_func is not None and not criterion_func(item) and not isinstance(item, (list, tuple, dict)):
        return item
    if torch.is_tensor(item):
        return item.to(device)
    if isinstance(item, list):
        return [move_to_device(v, device, criterion_func) for v in item]
    if isinstance(item, tuple):
        return tuple(move_to_device(v, device, criterion_func) for v in item)
    if isinstance(item, dict):
        return {k: move_to_device(v, device, criterion_func) for k, v in item.items()}
    return item


def see_memory_usage(message: str, force: bool = False) -> None:
    """Log the accelerator's allocated/reserved memory (only when ``force``, as in DeepSpeed)."""
    if not force:
        return
    from deepspeed.accelerator import get_accelerator

    acc = get_accelerator()
    gib = 1024**3
    logger.info(f"{message} | MA {acc.memory_allocated() / gib:.2f} GB | Max_MA {acc.max_memory_allocated() / gib:.2f} GB"
                f" | CA {acc.memory_reserved() / gib:.2f} GB")


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2, mpu=None) -> torch.Tensor:
    """Clip the gradients of ``parameters`` on their global norm; returns the norm before clipping."""
    return torch.nn.utils.clip_grad_norm_(parameters, max_norm, norm_type=norm_type)


def clip_coefficient(norm, max_norm: float):
    """The factor global-norm clipping multiplies gradients by: ``max_norm / (norm + 1e-6)``, at most 1.

    ``norm`` may be a float or a 0-d tensor (then the result is a tensor, with no host sync). The
    engine and every optimizer that clips (ZeRO's included) use this one function.
    """
    if torch.is_tensor(norm):
        return torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    return min(1.0, max_norm / (norm + 1e-6))


def partition_uniform(num_items: int, num_parts: int) -> list[int]:
    """Boundaries of ``num_parts`` contiguous parts of ``num_items`` items with equal counts
    (DeepSpeed's function): part ``p`` is ``parts[p]:parts[p + 1]``; the first
    ``num_items % num_parts`` parts hold one item more. With fewer items than parts, the first
    ``num_items`` parts hold one item each and the rest are empty."""
    if num_items <= num_parts:
        return [min(p, num_items) for p in range(num_parts + 1)]
    chunk, residual = divmod(num_items, num_parts)
    return [p * chunk + min(p, residual) for p in range(num_parts + 1)]


def partition_balanced(weights, num_parts: int) -> list[int]:
    """Boundaries of ``num_parts`` contiguous parts of ``weights`` whose sums are close (DeepSpeed's
    function, used for layer partitioning, so it returns DeepSpeed's boundaries).

    Dynamic programming over (first ``i`` items, ``j`` parts): each state keeps the largest and
    smallest part sum of its best split, and a split of ``i`` items into ``j`` parts extends the
    ``j - 1``-part split of its first ``k`` items whose spread (largest minus smallest part sum)
    is smallest, the largest ``k`` on ties. Fewer items than parts: :func:`partition_uniform`.
    """
    n, m = len(weights), int(num_parts)
    if n <= m:
        return partition_uniform(n, m)
    inf = float("inf")
    prefix = [0.0] * (n + 1)
    for i, w in enumerate(weights):
        prefix[i + 1] = prefix[i] + float(w)
    # best_max/best_min[j][i]: largest/smallest part sum of the chosen split of i items in j parts,
    # cut[j][i]: where its last part starts
    best_max = [[inf] * (n + 1) for _ in range(m + 1)]
    best_min = [[inf] * (n + 1) for _ in range(m + 1)]
    cut = [[0] * (n + 1) for _ in range(m + 1)]
    best_max[0][0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, min(i, m) + 1):
            prev_max, prev_min = best_max[j - 1], best_min[j - 1]
            cost_i = inf
            for k in range(i):
                seg = prefix[i] - prefix[k]
                hi = prev_max[k] if prev_max[k] > seg else seg
                lo = prev_min[k] if prev_min[k] < seg else seg
                spread = hi - lo
                if cost_i >= spread:  # ties (and unreachable k, spread inf) go to the larger k
                    cost_i = spread
                    best_max[j][i], best_min[j][i], cut[j][i] = hi, lo, k
    parts = [n]
    for j in range(m, 0, -1):
        parts.append(cut[j][parts[-1]])
    parts.reverse()
    return parts


def is_model_parallel_parameter(p) -> bool:
    """Whether ``p`` is split across tensor-parallel ranks (Megatron's ``tensor_model_parallel``
    or DeepSpeed's ``model_parallel`` attribute is true)."""
    return bool(getattr(p, "model_parallel", False) or getattr(p, "tensor_model_parallel", False))


def prefix_sum_inc(weights) -> list:
    """Inclusive prefix sums: ``[3, 4, 5]`` -> ``[3, 7, 12]``."""
    out, total = [], 0
    for w in weights:
        total = total + w
        out.append(total)
    return out

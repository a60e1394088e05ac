"""``deepspeed.runtime.utils``: the few helpers integrations import from DeepSpeed's path
(``move_to_device``, ``see_memory_usage``, ``clip_grad_norm_``)."""

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

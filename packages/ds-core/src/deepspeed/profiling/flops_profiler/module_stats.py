"""What the profiler's hooks record on each module (``__flops__``, ``__macs__``, ``__duration__``),
summed over a module's subtree. Read by the profiler and by its report."""

from __future__ import annotations

import torch.nn as nn


def get_module_flops(module: nn.Module) -> int:
    return getattr(module, "__flops__", 0) + sum(get_module_flops(c) for c in module.children())


def get_module_macs(module: nn.Module) -> int:
    return getattr(module, "__macs__", 0) + sum(get_module_macs(c) for c in module.children())


def get_module_duration(module: nn.Module) -> float:
    duration = getattr(module, "__duration__", 0.0)
    if duration == 0.0:  # a container that never ran forward itself (e.g. ModuleList)
        duration = sum(get_module_duration(c) for c in module.children())
    return duration

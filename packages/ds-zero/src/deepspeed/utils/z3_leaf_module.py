"""Mark modules that ZeRO-3 gathers as one unit (no hooks on their children).

Use for modules whose forward reads submodule parameters in a data-dependent order (MoE blocks),
and call it before ``deepspeed.initialize``.
"""

from __future__ import annotations

import torch

__all__ = ["get_z3_leaf_modules", "set_z3_leaf_modules", "unset_z3_leaf_modules", "z3_leaf_module",
           "z3_leaf_parameter"]


def _matches(module, leaf_module_classes) -> bool:
    for cls in leaf_module_classes:
        if isinstance(cls, str):
            if type(module).__name__ == cls or f"{type(module).__module__}.{type(module).__name__}" == cls:
                return True
        elif isinstance(module, cls):
            return True
    return False


def _set(model: torch.nn.Module, leaf_module_classes, flag: bool) -> list:
    if not isinstance(leaf_module_classes, (list, tuple)):
        raise ValueError(f"leaf_module_classes must be a list of module classes or class names, got "
                         f"{type(leaf_module_classes).__name__}")
    hits = [m for m in model.modules() if _matches(m, leaf_module_classes)]
    if not hits:
        raise ValueError(f"no module of {[getattr(c, '__name__', c) for c in leaf_module_classes]} found in "
                         f"{type(model).__name__}; check the class names")
    for m in hits:
        m._z3_leaf = flag
    return hits


def set_z3_leaf_modules(model: torch.nn.Module, leaf_module_classes) -> list:
    """Mark every module of the given classes as a ZeRO-3 leaf; return them."""
    return _set(model, leaf_module_classes, True)


def unset_z3_leaf_modules(model: torch.nn.Module, leaf_module_classes) -> list:
    return _set(model, leaf_module_classes, False)


def z3_leaf_module(model: torch.nn.Module) -> bool:
    return bool(getattr(model, "_z3_leaf", False))


def z3_leaf_parameter(model: torch.nn.Parameter) -> bool:
    return bool(getattr(model, "ds_z3_leaf_module", False))


def get_z3_leaf_modules(model: torch.nn.Module) -> list:
    return [m for m in model.modules() if z3_leaf_module(m)]

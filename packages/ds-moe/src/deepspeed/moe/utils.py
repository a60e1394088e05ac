"""``deepspeed.moe.utils``: telling expert parameters from shared ones, and optimizer groups for them."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch

#: DeepSpeed's default largest optimizer group of expert parameters (elements).
DEFAULT_MAX_GROUP_SIZE = 178956971


def has_moe_layers(m: torch.nn.Module) -> tuple[bool, int]:
    """``(True, num_experts of the first MoE layer)`` when ``m`` holds an MoE layer, else ``(False, 0)``."""
    from deepspeed.moe.layer import MoE

    for module in m.modules():
        if isinstance(module, MoE):
            return True, module.num_experts
    return False, 0


def is_moe_param(param: torch.Tensor) -> bool:
    """True for an expert parameter (DeepSpeed marks them ``allreduce = False``)."""
    return hasattr(param, "allreduce") and not param.allreduce


def split_params_into_shared_and_expert_params(params: list) -> tuple[list, list]:
    shared, expert = [], []
    for p in params:
        (expert if is_moe_param(p) else shared).append(p)
    return shared, expert


def split_params_grads_into_shared_and_expert_params(group: list) -> tuple[list, list]:
    """Gradients of ``group`` split into (shared, expert), parameters without a gradient skipped."""
    shared, expert = [], []
    for p in group:
        if p.grad is not None:
            (expert if is_moe_param(p) else shared).append(p.grad.to(p.dtype))
    return shared, expert


def _as_list(param_groups: Any) -> list:
    if isinstance(param_groups, tuple):
        return list(param_groups)
    if isinstance(param_groups, dict):
        return [param_groups]
    if isinstance(param_groups, list):
        return param_groups
    raise ValueError(f"split_params_into_different_moe_groups_for_optimizer: param_groups must be a dict, list or "
                     f"tuple of dicts; got {type(param_groups).__name__}")


def split_params_into_different_moe_groups_for_optimizer(param_groups: Any,
                                                         max_group_size: int | float | None = DEFAULT_MAX_GROUP_SIZE
                                                         ) -> list[dict]:
    """Move expert parameters out of each group into groups of their own, one per expert group
    name (``ep_size_<N>``), marked ``moe: True`` and named after the expert group; each copies
    the hyper-parameters of the group it came from and is cut into groups of at most
    ``max_group_size`` elements (None: no cut). Every input group needs a ``name`` when experts
    are present (DeepSpeed's rule). Returns the groups (the list given is changed in place)."""
    param_groups = _as_list(param_groups)
    names = []
    for g in param_groups:
        for p in g["params"]:
            if is_moe_param(p) and p.group_name not in names:
                names.append(p.group_name)
    if not names:
        return param_groups
    for i, g in enumerate(param_groups):
        if "name" not in g:
            raise ValueError(f"split_params_into_different_moe_groups_for_optimizer: param group {i} has no 'name' "
                             "key; give every group a unique name (e.g. {'params': ..., 'name': 'shared'})")
    moe: dict[str, dict[str, dict]] = defaultdict(dict)
    for g in param_groups:
        for key in names:
            moe[g["name"]][key] = {**g, "name": key, "moe": True, "params": []}
    for g in param_groups:
        keep = []
        for p in g["params"]:
            if is_moe_param(p):
                moe[g["name"]][p.group_name]["params"].append(p)
            else:
                keep.append(p)
        g["params"] = keep
    for per_name in moe.values():
        for g in per_name.values():
            if max_group_size is None:
                param_groups.append(g)
                continue
            current, size = [], 0
            for p in g["params"]:
                if current and size + p.numel() > max_group_size:
                    param_groups.append({**g, "params": current})
                    current, size = [], 0
                current.append(p)
                size += p.numel()
            if current:
                param_groups.append({**g, "params": current})
    return param_groups


def is_moe_param_group(param_group: dict) -> bool:
    return bool(param_group.get("moe", False))


def configure_moe_param_groups(model_parameters: list) -> list:
    """``model_parameters`` (parameters or groups) with expert parameters in their own ``moe`` groups."""
    if not isinstance(model_parameters, list):
        raise ValueError(f"configure_moe_param_groups: model_parameters must be a list, got "
                         f"{type(model_parameters).__name__}")
    if model_parameters and isinstance(model_parameters[0], dict):
        groups = [dict(g, name=g.get("name", f"group_{i}")) for i, g in enumerate(model_parameters)]
        return split_params_into_different_moe_groups_for_optimizer(groups)
    return split_params_into_different_moe_groups_for_optimizer([{"params": list(model_parameters),
                                                                  "name": "dense-params"}])

"""``deepspeed.checkpoint.utils`` (DeepSpeed's module): checkpoint file names and
:func:`clone_tensors_for_torch_save`, which Accelerate and Transformers call on a state dict
before ``torch.save``.

Cloning matters because a tensor that is a view saves its whole storage: the engine keeps the
parameters of a model as views of one flat buffer, so ``torch.save(model.state_dict())`` of one
layer would write every layer. A clone owns just its own elements.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from deepspeed.checkpoint.constants import MODEL_FILE_PREFIX, MODEL_FILE_SUFFIX, OPTIM_FILE_SUFFIX, ZERO_FILE_PREFIX


def get_model_ckpt_name_for_rank(base_folder: str, mp_rank_str: str) -> str:
    """``<base_folder>/mp_rank_<mp_rank_str>_model_states.pt`` (``mp_rank_str`` such as ``"00"``)."""
    return os.path.join(base_folder, f"{MODEL_FILE_PREFIX}{mp_rank_str}{MODEL_FILE_SUFFIX}")


def get_zero_ckpt_name_for_rank(base_folder: str, dp_rank: int, mp_rank: int) -> str:
    """``<base_folder>/zero_pp_rank_<dp>_mp_rank_<mp:02d>_optim_states.pt``."""
    return os.path.join(base_folder, f"{ZERO_FILE_PREFIX}{dp_rank}_{MODEL_FILE_PREFIX}{mp_rank:02d}{OPTIM_FILE_SUFFIX}")


def get_layer_ckpt_name_for_rank(base_folder: str, layer_id: str, tp_rank: int) -> str:
    """``<base_folder>/<layer_id>-model_<tp:02d>_model_states.pt`` (pipeline layer files)."""
    return os.path.join(base_folder, f"{layer_id}-model_{tp_rank:02d}{MODEL_FILE_SUFFIX}")


def clone_tensors_for_torch_save(item: Any, device: torch.device | str = torch.device("cpu")) -> Any:
    """A copy of ``item`` whose tensors (also inside nested lists, tuples and dicts, whose types
    are kept) are detached copies on ``device`` that own their storage; other values are
    returned as they are."""
    if torch.is_tensor(item):
        device = torch.device(device)
        if item.device == device:
            return item.detach().clone()
        return item.detach().to(device)
    if isinstance(item, list):
        return [clone_tensors_for_torch_save(v, device) for v in item]
    if isinstance(item, tuple):
        values = [clone_tensors_for_torch_save(v, device) for v in item]
        return type(item)(*values) if hasattr(item, "_fields") else type(item)(values)
    if isinstance(item, dict):
        return type(item)({k: clone_tensors_for_torch_save(v, device) for k, v in item.items()})
    return item


__all__ = ["clone_tensors_for_torch_save", "get_layer_ckpt_name_for_rank", "get_model_ckpt_name_for_rank",
           "get_zero_ckpt_name_for_rank"]

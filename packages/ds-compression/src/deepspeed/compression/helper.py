"""Helpers DeepSpeed's compression scripts import: ``convert_conv1d_to_linear``,
``recursive_getattr`` / ``recursive_setattr``, and the knowledge-distillation losses used with
layer reduction."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def recursive_getattr(model: nn.Module, module_name: str) -> nn.Module:
    """``model.a.b.c`` for ``"a.b.c"``."""
    return model.get_submodule(module_name)


def recursive_setattr(model: nn.Module, module_name: str, module: nn.Module) -> None:
    parent, _, leaf = module_name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def convert_conv1d_to_linear(model: nn.Module, convert_type: type) -> nn.Module:
    """Replace every module of ``convert_type`` (HF transformers' ``Conv1D``: weight stored
    ``[in, out]``, ``y = x @ W + b``) by an equivalent ``nn.Linear``; returns ``model``."""
    for name, m in list(model.named_modules()):
        if name and isinstance(m, convert_type):
            w = m.weight.detach()
            lin = nn.Linear(w.shape[0], w.shape[1], bias=getattr(m, "bias", None) is not None,
                            device=w.device, dtype=w.dtype)
            with torch.no_grad():
                lin.weight.copy_(w.t())
                if lin.bias is not None:
                    lin.bias.copy_(m.bias.detach())
            recursive_setattr(model, name, lin)
    return model


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float = 1.0) -> torch.Tensor:
    """Soft-label knowledge distillation: ``T^2 * KL(softmax(teacher/T) || softmax(student/T))``,
    averaged over the rows (the last dimension is the classes)."""
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0")
    s = F.log_softmax(student_logits.flatten(0, -2) / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.detach().flatten(0, -2) / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature ** 2


def hidden_state_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor) -> torch.Tensor:
    """Intermediate-layer distillation: mean squared error to the teacher's hidden states."""
    return F.mse_loss(student_hidden, teacher_hidden.detach())

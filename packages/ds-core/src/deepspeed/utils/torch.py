"""``deepspeed.utils.torch`` (DeepSpeed's module): torch version checks and hooks that DeepSpeed's
code and test suites import (``required_torch_version``)."""

from __future__ import annotations

from typing import Callable

import torch
from torch.torch_version import TorchVersion


def required_torch_version(min_version=None, max_version=None) -> bool:
    """Whether the installed torch is at least ``min_version`` and at most ``max_version``
    (numbers or strings such as ``2.1`` or ``"2.4.1"``; pre-release and local tags compare as
    torch's own version does)."""
    if min_version is None and max_version is None:
        raise ValueError("required_torch_version: pass min_version and/or max_version (e.g. min_version=2.1)")
    installed = TorchVersion(torch.__version__)
    if min_version is not None and installed < str(min_version):
        return False
    if max_version is not None and installed > str(max_version):
        return False
    return True


def is_functorch_transforming() -> bool:
    """True inside ``torch.func.grad`` / ``vmap`` / ``jacrev`` transforms."""
    functorch = getattr(torch._C, "_functorch", None)
    peek = getattr(functorch, "peek_interpreter_stack", None) if functorch is not None else None
    return peek is not None and peek() is not None


def register_grad_hook(param: torch.Tensor, hook: Callable) -> torch.utils.hooks.RemovableHandle:
    """``hook(param)`` after each gradient accumulation into ``param.grad``."""
    return param.register_post_accumulate_grad_hook(hook)


__all__ = ["is_functorch_transforming", "register_grad_hook", "required_torch_version"]

"""Loading the quantizer ops (``quantizer``, ``fp_quantizer``) of the current accelerator's ops
package, once per process. When an op cannot load (no ops package, no compiler) the Python API
runs its pure-PyTorch reference instead (same numbers, slower) and warns once, naming the cause."""

from __future__ import annotations

import os
import threading
import warnings
from typing import Any

_lock = threading.Lock()
_loaded: dict[str, Any] = {}


class QuantizerFallbackWarning(RuntimeWarning):
    """A quantizer op runs its pure-PyTorch reference because the native op cannot load."""


def load(op_name: str) -> tuple[Any, int] | None:
    """``(module, isa_index)`` of the native op, or None."""
    with _lock:
        if op_name in _loaded:
            return _loaded[op_name]
    try:
        from deepspeed.accelerator import get_accelerator

        module = get_accelerator().create_op_builder(op_name).load(verbose=False)
        found = (module, module.resolve_isa(os.environ.get("DS_CPU_ISA", "auto")))
    except Exception as exc:  # any failure means: the reference path, and say why
        found = None
        warnings.warn(f"native op '{op_name}' is unavailable, using the PyTorch reference (same results, slower). "
                      f"Cause: {type(exc).__name__}: {exc}", QuantizerFallbackWarning, stacklevel=3)
    with _lock:
        _loaded.setdefault(op_name, found)
        return _loaded[op_name]


def threads() -> int:
    import torch

    return max(1, torch.get_num_threads())

"""``deepspeed.utils.init_on_device`` (DeepSpeed's module): ``OnDevice``, build modules directly on
a device (``"meta"`` for shape-only models) and in a floating-point dtype.

    with deepspeed.OnDevice(dtype=torch.float16, device="meta"):
        model = MyModel()      # parameters are fp16 meta tensors, no memory allocated

Tensors created inside the block without an explicit ``device`` go to ``device`` (torch's device
context), and floating-point ones without an explicit ``dtype`` are ``dtype`` (torch's default
dtype, restored on exit). Unlike DeepSpeed's, a floating-point tensor created with an explicit
``dtype=`` keeps it.
"""

from __future__ import annotations

import torch


class OnDevice:
    """``OnDevice(dtype, device="meta", enabled=True)``: a context manager (DeepSpeed's signature)."""

    def __init__(self, dtype: torch.dtype, device="meta", enabled: bool = True) -> None:
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(f"OnDevice(dtype={dtype}): dtype must be a floating-point dtype such as torch.float16")
        self.dtype = dtype
        self.device = device
        self.enabled = enabled
        self._device_ctx = None
        self._previous_dtype = None

    def __enter__(self):
        if not self.enabled:
            return self
        self._device_ctx = torch.device(self.device)
        self._device_ctx.__enter__()
        if self.dtype is not None:
            self._previous_dtype = torch.get_default_dtype()
            torch.set_default_dtype(self.dtype)
        return self

    def __exit__(self, exc_type, exc_value, traceback) -> None:
        if not self.enabled:
            return
        if self._previous_dtype is not None:
            torch.set_default_dtype(self._previous_dtype)
            self._previous_dtype = None
        self._device_ctx.__exit__(exc_type, exc_value, traceback)
        self._device_ctx = None


__all__ = ["OnDevice"]

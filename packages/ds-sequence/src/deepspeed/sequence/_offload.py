"""Activation offload: tensors autograd saves for backward are kept in host memory.

Inside :func:`offload_saved_tensors` every tensor saved for backward that lives on an accelerator
is copied to (pinned) host memory when saved and copied back when backward unpacks it, so the
device holds it only while it is being used. Tensors already on the host are kept as they are
(copying them would only cost memory). ``stats`` counts what was moved (``tensors``, ``bytes``);
``device="cpu"`` and ``force=True`` move host tensors too (used by tests to check the round trip on
a machine without an accelerator).
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch


@contextlib.contextmanager
def offload_saved_tensors(stats: Optional[dict] = None, force: bool = False, pin_memory: Optional[bool] = None):
    from deepspeed.accelerator import get_accelerator

    if pin_memory is None:
        pin_memory = get_accelerator().device_name() != "cpu"

    def pack(t: torch.Tensor):
        if t.device.type == "cpu" and not force:
            return t
        host = torch.empty(t.shape, dtype=t.dtype, layout=t.layout, pin_memory=pin_memory and t.device.type != "cpu")
        host.copy_(t, non_blocking=pin_memory)
        if stats is not None:
            stats["tensors"] = stats.get("tensors", 0) + 1
            stats["bytes"] = stats.get("bytes", 0) + t.numel() * t.element_size()
        return (t.device, host)

    def unpack(packed):
        if isinstance(packed, torch.Tensor):
            return packed
        device, host = packed
        return host.to(device, non_blocking=pin_memory)

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        yield

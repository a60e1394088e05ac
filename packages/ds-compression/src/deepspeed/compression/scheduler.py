"""``compression_scheduler``: switches each technique on at its ``schedule_offset`` and runs
weight quantization's bit schedule.

Call :meth:`compression_scheduler.step` once per optimizer step (the engine does when the
compression feature is active). Weight quantization *in the forward pass*
(``quantize_weight_in_forward: true``) fake-quantizes at ``target_bits`` from the offset on.
Otherwise the scheduler rounds the stored weights in place after every step from the offset
on, starting at ``start_bits`` and dropping one bit each time ``quantization_period`` steps
have passed at the current width, the period doubling at each drop, until ``target_bits``
(DeepSpeed's MoQ schedule; ``quantization_period: 0`` goes straight to ``target_bits``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from deepspeed.compression.basic_layer import COMPRESS_LAYERS
from deepspeed.compression.compress import _section


def bits_at(start_bits: int, target_bits: int, period: int, steps: int) -> int:
    """Bit width after ``steps`` scheduled steps (see the module docstring)."""
    bits, at, p = start_bits, 0, period
    if p <= 0:
        return target_bits
    while bits > target_bits and steps >= at + p:
        at += p
        p *= 2
        bits -= 1
    return bits


class compression_scheduler:  # noqa: N801 (DeepSpeed's name)
    """Schedules the techniques ``init_compression`` configured on ``model``."""

    def __init__(self, model: nn.Module, compression_config: Any):
        self.model = model
        self.compression_config = _section(compression_config)
        self.training_steps = 0
        self.step(step_zero_check=True)

    def _layers(self):
        return [m for m in self.model.modules() if isinstance(m, COMPRESS_LAYERS)]

    def _due(self, technique: str) -> bool:
        sp = getattr(self.compression_config, technique).shared_parameters
        return sp.enabled and self.training_steps >= sp.schedule_offset

    def step(self, step_zero_check: bool = False) -> None:
        """Advance one training step (``step_zero_check``: only apply what is due at step 0)."""
        if not step_zero_check:
            self.training_steps += 1
        layers = self._layers()
        if self._due("weight_quantization"):
            for m in layers:
                if m.wq is None:
                    continue
                m.weight_quantization_enabled = True
                if not m.wq["in_forward"]:
                    wq = m.wq
                    wq["bits"] = bits_at(wq["start_bits"], wq["target_bits"], wq["period"], wq["steps"])
                    if not step_zero_check:
                        wq["steps"] += 1
                    with torch.no_grad():
                        w, _ = m.effective_weight(bits=wq["bits"])
                        m.weight.data.copy_(w)
        if self._due("activation_quantization"):
            for m in layers:
                if m.aq is not None:
                    m.activation_quantization_enabled = True
        for technique, flag, start, cfg_attr in (
                ("sparse_pruning", "sparse_pruning_enabled", "start_sparse_pruning", "sparse_cfg"),
                ("row_pruning", "row_pruning_enabled", "start_row_pruning", "row"),
                ("head_pruning", "head_pruning_enabled", "start_head_pruning", "head"),
                ("channel_pruning", "channel_pruning_enabled", "start_channel_pruning", "channel")):
            if not self._due(technique):
                continue
            for m in layers:
                if getattr(m, cfg_attr, None) is not None and not getattr(m, flag):
                    getattr(m, start)()

    # -- checkpoints (the masks and scores are module buffers/parameters, saved with the model) --

    _FLAGS = ("weight_quantization_enabled", "activation_quantization_enabled", "sparse_pruning_enabled",
              "row_pruning_enabled", "head_pruning_enabled", "channel_pruning_enabled")

    def state_dict(self) -> dict:
        """The step count and which technique runs on which layer (with the bit schedule's state)."""
        layers = {}
        for name, m in self.model.named_modules():
            if isinstance(m, COMPRESS_LAYERS):
                layers[name] = {"flags": {f: bool(getattr(m, f)) for f in self._FLAGS},
                                "wq": None if m.wq is None else {"bits": m.wq["bits"], "steps": m.wq["steps"]}}
        return {"training_steps": self.training_steps, "layers": layers}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` without recomputing masks (they come back with the model)."""
        self.training_steps = int(state["training_steps"])
        for name, m in self.model.named_modules():
            saved = state["layers"].get(name)
            if saved is None or not isinstance(m, COMPRESS_LAYERS):
                continue
            for f, v in saved["flags"].items():
                setattr(m, f, v)
            if saved["wq"] is not None and m.wq is not None:
                m.wq.update(saved["wq"])

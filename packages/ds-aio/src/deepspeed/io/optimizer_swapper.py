"""Optimizer state on NVMe (ZeRO-Infinity's ``offload_optimizer.device: "nvme"``).

:class:`OptimizerStateSwapper` keeps a torch optimizer's per-parameter state tensors
(``exp_avg``, ``exp_avg_sq``, ...) in swap files and steps the optimizer one parameter (one ZeRO
flat sub-group) at a time: read its state, step it, write it back, free it. Only one parameter's
state is in host memory at once, two with ``pipeline_read``/``pipeline_write`` (the next
parameter's state is read, and the previous one's written, while the current one steps).
Scalar state (``step``) stays in memory. ``state_dict()`` reads every state back (a checkpoint
holds the real values) and ``load_state_dict()`` writes the loaded state out again.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from deepspeed.io.swap import SwapFolder, TensorSwapper


def _swappable(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() > 0 and value.numel() > 1


class OptimizerStateSwapper:
    """Attach to ``optimizer``: its ``step`` becomes the swapping, per-parameter step."""

    def __init__(self, optimizer: torch.optim.Optimizer, nvme_path, aio_config: Mapping[str, Any] | None = None,
                 pipeline_read: bool = False, pipeline_write: bool = False, buffer_count: int = 4,
                 key: str = "zero_optimization.offload_optimizer.nvme_path", rank: int = 0):
        self.optimizer = optimizer
        self.folder = SwapFolder(nvme_path, key=key, tag="optimizer", rank=rank)
        self.swapper = TensorSwapper(self.folder, aio_config, buffer_count=max(int(buffer_count), 4))
        self.pipeline_read = bool(pipeline_read)
        self.pipeline_write = bool(pipeline_write)
        self._ids: dict[int, int] = {}
        self._swapped: dict[int, dict[str, tuple[torch.Size, torch.dtype]]] = {}
        self._step: Callable = optimizer.step
        optimizer.step = self.step
        self._hooks = [optimizer.register_state_dict_pre_hook(lambda opt: self.swap_in_all()),
                       optimizer.register_state_dict_post_hook(self._after_state_dict),
                       optimizer.register_load_state_dict_pre_hook(self._before_load),
                       optimizer.register_load_state_dict_post_hook(lambda opt: self.swap_out_all())]

    # -- per-parameter swapping ---------------------------------------------------------------
    def _key(self, p: torch.Tensor, name: str) -> str:
        idx = self._ids.setdefault(id(p), len(self._ids))
        return f"p{idx}.{name}"

    def _read(self, p: torch.Tensor, async_op: bool) -> None:
        entry = self._swapped.pop(id(p), None)
        if not entry:
            return
        state = self.optimizer.state[p]
        for name in entry:
            state[name] = self.swapper.swap_in(self._key(p, name), async_op=async_op)

    def _write(self, p: torch.Tensor, async_op: bool) -> None:
        state = self.optimizer.state.get(p)
        if not state:
            return
        entry = {}
        for name, value in state.items():
            if _swappable(value):
                self.swapper.swap_out(self._key(p, name), value.contiguous(), async_op=async_op)
                entry[name] = (value.shape, value.dtype)
        self._swapped[id(p)] = entry

    def _drop(self, p: torch.Tensor, release: bool = True) -> None:
        """After its write completed: free the parameter's state tensors (placeholders remain);
        ``release``: their buffers go back to the pool (not when a state_dict still holds them)."""
        entry = self._swapped.get(id(p))
        if not entry:
            return
        state = self.optimizer.state[p]
        for name, (shape, dtype) in entry.items():
            buf = state[name]
            state[name] = torch.empty(0, dtype=dtype)
            if release and buf.data_ptr() % 4096 == 0:
                self.swapper.release(buf)

    def is_resident(self, p: torch.Tensor) -> bool:
        return id(p) not in self._swapped

    def swap_in_all(self) -> None:
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                self._read(p, async_op=True)
        self.swapper.wait()

    def swap_out_all(self, release: bool = True) -> None:
        params = [p for group in self.optimizer.param_groups for p in group["params"]
                  if self.is_resident(p) and self.optimizer.state.get(p)]
        for p in params:
            self._write(p, async_op=True)
        self.swapper.wait()
        for p in params:
            self._drop(p, release)

    def _before_load(self, opt, state_dict):
        # the loaded values replace every state; the old swap files are rewritten after the load
        self._swapped.clear()
        return state_dict

    def _after_state_dict(self, opt, state_dict):
        # Note: torch packs the optimizer's own per-parameter dicts; copy them so the returned dict
        # keeps the values while the optimizer's entries go back to disk.
        state_dict["state"] = {k: dict(v) for k, v in state_dict["state"].items()}
        self.swap_out_all(release=False)
        return state_dict

    # -- the step -----------------------------------------------------------------------------
    def step(self, closure: Callable[[], Any] | None = None, **kwargs):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if kwargs:  # per-group extras (fp16_param_groups) index whole groups: step everything at once
            self.swap_in_all()
            self._step(**kwargs)
            self.swap_out_all()
            return loss
        groups = self.optimizer.param_groups
        saved = [group["params"] for group in groups]
        order = [(gi, p) for gi, params in enumerate(saved) for p in params if p.grad is not None]
        try:
            if order:
                self._read(order[0][1], async_op=False)
            for i, (gi, p) in enumerate(order):
                nxt = order[i + 1][1] if i + 1 < len(order) else None
                if self.pipeline_read and nxt is not None:
                    self._read(nxt, async_op=True)  # overlaps this parameter's step
                for g, group in enumerate(groups):
                    group["params"] = [p] if g == gi else []
                self._step()
                # Note: the write-back and the read-ahead are in flight together; one wait ends both.
                self._write(p, async_op=self.pipeline_write)
                self.swapper.wait()
                self._drop(p)
                if nxt is not None and not self.pipeline_read:
                    self._read(nxt, async_op=False)
        finally:
            for group, params in zip(groups, saved):
                group["params"] = params
        return loss

    def close(self) -> None:
        """Remove the swap files (also done at interpreter exit)."""
        for h in self._hooks:
            h.remove()
        self.swapper.close()

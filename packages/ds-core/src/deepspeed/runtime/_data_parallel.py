"""The engine's own :class:`~deepspeed.protocols.optimizer.EngineOptimizer`: data-parallel training
without partitioning (what DeepSpeed calls ZeRO stage 0).

Gradients are reduced by the engine's :class:`~deepspeed.runtime._grad_reduce.GradientReducer`
(flat buffers, bucketed all-reduce overlapped with backward); fp16/bf16 step fp32 master weights
through :class:`~deepspeed.runtime._precision.MixedPrecisionOptimizer`. What users see as
``engine.optimizer`` is :attr:`public`: the torch optimizer itself in fp32, the mixed-precision
wrapper otherwise (DeepSpeed's FP16_Optimizer / BF16_Optimizer roles).
"""

from __future__ import annotations

from typing import Any

import torch

from deepspeed.protocols.optimizer import EngineOptimizer
from deepspeed.runtime._precision import MixedPrecisionOptimizer
from deepspeed.runtime.utils import clip_coefficient

#: Per-rank file of the bf16 master weights and optimizer state (DeepSpeed's name).
BF16_RANK_FILE = "bf16_zero_pp_rank_{dp_rank}_mp_rank_{mp_rank:02d}_optim_states.pt"
#: Per-rank file of an optimizer whose state differs between ranks (``per_rank_state = True``: the
#: 1-bit optimizers' error-feedback buffers), so every rank resumes its own.
RANK_OPTIM_FILE = "optim_pp_rank_{dp_rank}_mp_rank_{mp_rank:02d}_optim_states.pt"


class DataParallelOptimizer(EngineOptimizer):
    """Drives ``optimizer`` (or, for fp16/bf16, ``precision``) over the gradients ``reducer``
    keeps. ``reducer`` is None when nothing is trainable or reduced; ``optimizer`` is None for an
    engine built without one (inference, or gradients only)."""

    zero_stage = 0

    def __init__(self, optimizer: Any, reducer: Any, precision: MixedPrecisionOptimizer | None = None,
                 clip_grad: float = 0.0, named_params: list | None = None, separate_rank_file: bool = False):
        self.optimizer = optimizer
        self.reducer = reducer
        self.precision = precision
        self.clip_grad = float(clip_grad or 0.0)
        self.overflow = False
        self._reduce = True
        self._norm = None
        self._named_params = list(named_params or [])
        self._separate_rank_file = separate_rank_file

    @property
    def public(self) -> Any:
        """What ``engine.optimizer`` is: the mixed-precision wrapper, or the torch optimizer."""
        return self.precision if self.precision is not None else self.optimizer

    @property
    def loss_scale(self) -> float:
        return self.precision.loss_scale if self.precision is not None else 1.0

    # -- training step ---------------------------------------------------------------------

    def set_gradient_accumulation_boundary(self, is_boundary: bool) -> None:
        self._reduce = bool(is_boundary)

    def backward(self, loss: torch.Tensor, retain_graph: bool = False) -> None:
        scale = self.loss_scale
        if scale != 1.0:
            loss = loss * scale
        reducer = self.reducer
        if reducer is not None:
            reducer.prepare(self._reduce)
        try:
            loss.backward(retain_graph=retain_graph)
        finally:
            if reducer is not None:
                reducer.finish()

    def step(self) -> bool:
        if self.precision is not None:
            applied = self.precision.step()  # zeroes the gradients
            self.overflow = not applied
            self._norm = self.precision._global_grad_norm
            return applied
        self.overflow = False
        if self.optimizer is not None:
            reducer = self.reducer
            if reducer is not None:
                reducer.ensure_views()  # a step after zero_grad without a backward
                # Note: the norm is also the non-finite check (one pass over the gradients, which
                # are already reduced, so every rank decides alike): a NaN/inf step is skipped.
                # (DeepSpeed reports the norm of a torch optimizer's step only when it clips.)
                norm = reducer.global_norm()
                if not bool(torch.isfinite(norm)):
                    self._norm = norm
                    self.overflow = True
                    self.zero_grad()
                    return False
                if self.clip_grad > 0:
                    self._norm = norm
                    coef = clip_coefficient(norm, self.clip_grad)
                    for flat in reducer.flats:
                        flat.mul_(coef.to(flat.dtype))
            self.optimizer.step()
        self.zero_grad()
        return True

    def zero_grad(self, set_to_none: bool = True) -> None:
        if self.reducer is not None:
            self.reducer.zero(set_to_none)
        elif self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=set_to_none)

    def reduce_gradients(self) -> None:
        if self.reducer is not None:
            self.reducer.ensure_views()
            self.reducer.reduce_now()

    def global_grad_norm(self):
        return self._norm

    # -- weights and checkpoints -------------------------------------------------------------

    def refresh_master_from_model(self) -> None:
        if self.precision is not None:
            self.precision.refresh_master_from_model()

    def model_states_entry(self) -> Any:
        if self._separate_rank_file or self.public is None:
            return None
        return self.public.state_dict()

    def load_model_states_entry(self, entry: Any) -> None:
        if entry is not None and self.public is not None and not self._separate_rank_file:
            self.public.load_state_dict(entry)

    def _rank_file(self) -> str:
        return BF16_RANK_FILE if self.precision is not None else RANK_OPTIM_FILE

    def rank_files(self) -> dict[str, Any]:
        if not self._separate_rank_file:
            return {}
        return {self._rank_file(): {"optimizer_state_dict": self.public.state_dict()}}

    def load_rank_files(self, states: dict[str, Any]) -> None:
        state = states.get(self._rank_file())
        if state is not None:
            self.public.load_state_dict(state["optimizer_state_dict"])

    def param_shapes(self) -> list[dict[str, list[int]]]:
        return [{n: list(p.shape) for n, p in self._named_params if p.requires_grad}]

    def destroy(self) -> None:
        if self.reducer is not None:
            self.reducer.remove_hooks()

    # -- torch.optim look-alike (DeepSpeedOptimizer) -------------------------------------------

    def state_dict(self) -> dict:
        return self.public.state_dict() if self.public is not None else {}

    def load_state_dict(self, sd: dict) -> None:
        if self.public is not None:
            self.public.load_state_dict(sd)

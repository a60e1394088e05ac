"""The optimizer contract: what the engine asks of the optimizer that drives training.

The engine talks to exactly one :class:`EngineOptimizer`. Core supplies one for data-parallel
training (fp32, fp16 and bf16 with fp32 master weights); a feature returns its own from the
``wrap_optimizer`` hook to take over gradient reduction, precision and stepping (ZeRO does). The
engine calls nothing else on it: no ``hasattr`` probes, no private methods.

Fragments (DeepSpeed's ``deepspeed.utils.safe_get_full_*`` helpers) are addressed by
:class:`Fragment` instead of strings.
"""

from __future__ import annotations

import abc
import enum
from typing import TYPE_CHECKING, Any


if TYPE_CHECKING:
    import torch


class Fragment(enum.Enum):
    """Which value of a parameter a fragment accessor reads or writes."""

    #: The fp32 master value.
    FP32_PARAM = "fp32"
    #: The reduced gradient (unscaled), valid between backward and step.
    GRAD = "grad"
    #: One entry of the optimizer state (``key``, e.g. ``"exp_avg"``).
    OPTIMIZER_STATE = "state"


class DeepSpeedOptimizer:
    """Base of the optimizers the engine wraps around a torch optimizer; subclasses keep the
    wrapped one in ``.optimizer``. Integrations check ``isinstance(opt, DeepSpeedOptimizer)`` to
    decide whether optimizer state goes through the engine's checkpoints (DeepSpeed's
    ``deepspeed.runtime.base_optimizer.DeepSpeedOptimizer``, re-exported there)."""

    optimizer = None

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value):
        self.optimizer.param_groups = value

    @property
    def state(self):
        return self.optimizer.state

    @property
    def defaults(self):
        return self.optimizer.defaults


class EngineOptimizer(DeepSpeedOptimizer, abc.ABC):
    """The optimizer the engine drives. ``self.optimizer`` is the wrapped torch optimizer (its
    ``param_groups`` are what LR schedules change).

    Call order in one accumulation window: ``set_gradient_accumulation_boundary`` and ``backward``
    for every micro-step, then at the boundary ``step`` (which also zeroes the gradients it
    consumed), and ``zero_grad`` whenever the user asks.
    """

    #: True after a skipped step (fp16 overflow, non-finite gradients).
    overflow: bool = False
    #: The ZeRO stage this optimizer implements (0: no partitioning), for DeepSpeed's names.
    zero_stage: int = 0
    #: True when this optimizer reduces the features' gradient groups over their own groups
    #: (``engine.gradient_groups``); the engine refuses one that does not while groups exist.
    supports_gradient_groups: bool = False

    # -- training step ---------------------------------------------------------------------

    def set_gradient_accumulation_boundary(self, is_boundary: bool) -> None:
        """Whether the next ``backward`` ends an accumulation window (gradients get reduced)."""

    @abc.abstractmethod
    def backward(self, loss: "torch.Tensor", retain_graph: bool = False) -> None:
        """Run backward on ``loss`` (already divided by the accumulation steps), applying the loss
        scale and reducing gradients as this optimizer's layout requires."""

    @abc.abstractmethod
    def step(self) -> bool:
        """At an accumulation boundary: unscale, clip, step, zero the gradients. Returns False when
        the step was skipped (then ``overflow`` is True)."""

    @abc.abstractmethod
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop the accumulated gradients."""

    def reduce_gradients(self) -> None:
        """Reduce gradients produced outside :meth:`backward` now (``engine.allreduce_gradients``)."""

    def global_grad_norm(self) -> "float | torch.Tensor | None":
        """The global L2 norm of the last step's gradients, or None when none was computed."""
        return None

    @property
    def loss_scale(self) -> float:
        """The current loss scale (1.0 without fp16)."""
        return 1.0

    def no_sync_refusal(self) -> str | None:
        """Why ``engine.no_sync()`` cannot be used with this optimizer, or None when it can."""
        return None

    # -- model weights ---------------------------------------------------------------------

    def weights_partitioned(self) -> bool:
        """True when the module's parameters hold only this rank's slices (ZeRO-3), so a full state
        dict needs :meth:`full_state_dict`."""
        return False

    def full_state_dict(self, exclude_frozen_parameters: bool = False) -> dict | None:
        """The full module state dict gathered on rank 0 (None on the others); a collective.
        Only called when :meth:`weights_partitioned` is True."""
        raise NotImplementedError(f"{type(self).__name__} does not partition weights")

    def refresh_master_from_model(self) -> None:
        """The module's weights were loaded from outside: copy them into the master weights."""

    # -- checkpoints -----------------------------------------------------------------------

    def model_states_entry(self) -> Any:
        """What the engine stores under ``"optimizer"`` in ``mp_rank_00_model_states.pt``, or None
        when this optimizer writes its own files (a feature's ``save_checkpoint_files``)."""
        return None

    def load_model_states_entry(self, entry: Any) -> None:
        """Restore what :meth:`model_states_entry` returned."""

    def rank_files(self) -> dict[str, Any]:
        """Extra per-rank files the engine writes with the checkpoint: ``{file name pattern:
        state}``; the pattern's ``{dp_rank}`` and ``{mp_rank}`` are filled in by the engine."""
        return {}

    def load_rank_files(self, states: dict[str, Any]) -> None:
        """Restore what :meth:`rank_files` returned (``{pattern: state read back}``)."""

    def param_shapes(self) -> list[dict[str, list[int]]]:
        """Per parameter group, ``{parameter name: shape}`` in the optimizer's flat order (the
        model-states file's ``param_shapes``, read by zero_to_fp32)."""
        return []

    # -- fragments (deepspeed.utils.safe_get_full_* / safe_get_local_*) -------------------

    def get_full_fragment(self, param: "torch.Tensor", fragment: Fragment, key: str | None = None) -> "torch.Tensor":
        """The full value of ``param``'s ``fragment`` assembled from every rank (a collective)."""
        raise NotImplementedError(f"{type(self).__name__} does not expose parameter fragments")

    def set_full_fragment(self, param: "torch.Tensor", value: "torch.Tensor", fragment: Fragment,
                          key: str | None = None) -> None:
        """Overwrite ``param``'s ``fragment`` with the full ``value`` (every rank calls it)."""
        raise NotImplementedError(f"{type(self).__name__} does not expose parameter fragments")

    def get_local_fragment(self, param: "torch.Tensor", fragment: Fragment,
                           key: str | None = None) -> "torch.Tensor | None":
        """This rank's part of ``param``'s ``fragment`` (None when it holds none)."""
        raise NotImplementedError(f"{type(self).__name__} does not expose parameter fragments")

    def set_local_fragment(self, param: "torch.Tensor", value: "torch.Tensor", fragment: Fragment,
                           key: str | None = None) -> None:
        """Overwrite this rank's part of ``param``'s ``fragment``."""
        raise NotImplementedError(f"{type(self).__name__} does not expose parameter fragments")

    # -- lifetime --------------------------------------------------------------------------

    def destroy(self) -> None:
        """Remove hooks and release buffers; the optimizer is unusable afterwards."""

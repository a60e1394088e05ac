"""What ZeRO's optimizers share: the engine-facing contract, loss scaling, overflow checks, the global
gradient norm over partitions, the unscale-clip-step of the partitioned masters, and the routing of
DeepSpeed's fragment helpers (``deepspeed.utils.safe_get_full_*``) to each stage's layout.

Stages 1/2 (:mod:`.stage_1_and_2`) and 3 (:mod:`.stage3`) subclass :class:`ZeroOptimizerBase` and
implement the layout-specific parts: ``_sources`` (the per-group partition tensors of a fragment
kind) and the four fragment accessors.
"""

from __future__ import annotations

import math

import torch

import deepspeed.comm as ds_comm
from deepspeed.protocols.optimizer import EngineOptimizer, Fragment
from deepspeed.runtime.utils import clip_coefficient


def cfg_get(cfg, key: str, default=None):
    """``cfg.key`` for a pydantic section, ``cfg[key]`` for a dict, ``default`` for None."""
    if cfg is None:
        return default
    if isinstance(cfg, dict):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def offload_device(cfg) -> str:
    """``"none"``, ``"cpu"`` or ``"nvme"`` from an offload section (pydantic model, dict or None)."""
    device = cfg_get(cfg, "device", "none") or "none"
    return str(getattr(device, "value", device)).lower()


def zero_version() -> str:
    from deepspeed.zero._version import __version__

    return __version__


def _all_reduce(tensor: torch.Tensor, group, op=None) -> None:
    if ds_comm.is_initialized() and ds_comm.get_world_size(group) > 1:
        ds_comm.all_reduce(tensor, op=op or ds_comm.ReduceOp.SUM, group=group)


class ZeroOptimizerBase(EngineOptimizer):
    """Base of DeepSpeedZeroOptimizer (stages 1, 2) and DeepSpeedZeroOptimizer_Stage3.

    Subclasses set ``optimizer`` (the wrapped torch optimizer), ``loss_scaler``,
    ``dp_process_group``, ``clip_grad``, ``_comm_device`` and ``zero_stage``.
    """

    loss_scaler = None
    dp_process_group = None
    clip_grad = 0.0
    _global_grad_norm = 0.0
    _comm_device = torch.device("cpu")

    # -- what integrations read -------------------------------------------------------------

    @property
    def loss_scale(self) -> float:
        return self.loss_scaler.loss_scale

    @property
    def cur_scale(self) -> float:
        return self.loss_scaler.cur_scale

    def get_global_grad_norm(self):
        return self._global_grad_norm

    def global_grad_norm(self):
        return self._global_grad_norm

    def set_gradient_accumulation_boundary(self, is_boundary: bool) -> None:
        self.is_gradient_accumulation_boundary = bool(is_boundary)

    def no_sync_refusal(self) -> str | None:
        if self.zero_stage >= 2:
            return (f"no_sync is not supported with ZeRO stage {self.zero_stage}; it needs stage 0 or 1 "
                    f"(ZeRO stage {self.zero_stage} partitions gradients, which needs a reduction every backward)")
        return None

    # -- the step ---------------------------------------------------------------------------

    def _any_overflow(self, partitions: list[torch.Tensor]) -> bool:
        """True when a gradient partition of any rank holds inf/NaN (a collective)."""
        flag = torch.zeros(1, device=self._comm_device)
        for g in partitions:
            if not torch.isfinite(g).all():
                flag.fill_(1.0)
                break
        _all_reduce(flag, self.dp_process_group, ds_comm.ReduceOp.MAX)
        return bool(flag.item())

    def _partition_norm(self, partitions: list[torch.Tensor]) -> float:
        """The global L2 norm of the gradients whose partitions the ranks hold (a collective)."""
        sq = torch.zeros(1, dtype=torch.float64, device=self._comm_device)
        for g in partitions:
            sq += torch.linalg.vector_norm(g).double().square().to(self._comm_device)
        _all_reduce(sq, self.dp_process_group)
        return math.sqrt(sq.item())

    def _unscale_clip_step(self, masters: list[torch.Tensor], grads: list[torch.Tensor], norm: float,
                           scale: float) -> None:
        """Divide the gradient partitions by the loss scale and the clipping coefficient (one pass),
        hand them to the fp32 masters and step the wrapped optimizer."""
        combined = scale
        if self.clip_grad > 0:
            coef = clip_coefficient(norm, self.clip_grad)
            if coef < 1.0:
                combined = scale / coef
        for master, g in zip(masters, grads):
            if combined != 1.0:
                g.div_(combined)
            master.grad = g
        self.optimizer.step()

    # -- fragments --------------------------------------------------------------------------

    def get_full_fragment(self, param, fragment: Fragment, key: str | None = None):
        return self._get_full(param, Fragment(fragment), key)

    def set_full_fragment(self, param, value, fragment: Fragment, key: str | None = None) -> None:
        self._set_full(param, value, Fragment(fragment), key)

    def get_local_fragment(self, param, fragment: Fragment, key: str | None = None):
        return self._get_local(param, Fragment(fragment), key)

    def set_local_fragment(self, param, value, fragment: Fragment, key: str | None = None) -> None:
        self._set_local(param, value, Fragment(fragment), key)

    def _state_sources(self, masters: list[torch.Tensor], key: str, *optimizers) -> list[torch.Tensor]:
        out = []
        for master in masters:
            state = {}
            for opt in optimizers:
                if opt is not None and master in opt.state:
                    state = opt.state[master]
                    break
            if key not in state:
                raise ValueError(f"optimizer state {key!r} does not exist (known: {sorted(state)}); the wrapped "
                                 f"{type(self.optimizer).__name__} creates its state at its first step.")
            out.append(state[key])
        return out

    def param_shapes(self):
        return self.zero_param_shapes()

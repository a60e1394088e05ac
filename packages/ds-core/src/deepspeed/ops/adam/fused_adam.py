"""``FusedAdam``: DeepSpeed's signature over torch's own multi-tensor Adam/AdamW, so it runs on
any device torch supports (fused kernels where torch has them, foreach otherwise)."""

from __future__ import annotations

from typing import Any, Iterable

import torch


class FusedAdam(torch.optim.Adam):
    """Adam (``adam_w_mode=False``) or AdamW (default) with DeepSpeed's ``FusedAdam`` arguments.

    Uses ``torch.optim.Adam(fused=True)`` when every parameter is on a device and dtype torch's
    fused kernel supports, else ``foreach=True``. ``zero_grad()`` sets grads to None when
    ``set_grad_none`` (default), as DeepSpeed's does.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        bias_correction: bool = True,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        adam_w_mode: bool = True,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        set_grad_none: bool = True,
    ) -> None:
        if amsgrad:
            raise NotImplementedError("FusedAdam does not support amsgrad=True (as in DeepSpeed). Fix: set amsgrad=False or use torch.optim.Adam(amsgrad=True).")
        if not bias_correction:
            raise NotImplementedError("FusedAdam: bias_correction=False is not supported by torch's fused Adam. Fix: set bias_correction=True or use DeepSpeedCPUAdam(bias_correction=False).")
        params = list(params)
        kwargs = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, decoupled_weight_decay=adam_w_mode)
        try:
            super().__init__(params, fused=True, **kwargs)
            self.implementation = "fused"
        except (RuntimeError, ValueError):
            # Note: torch refuses fused=True for devices/dtypes without its fused kernel;
            # foreach runs wherever tensors do.
            super().__init__(params, foreach=True, **kwargs)
            self.implementation = "foreach"
        self.adam_w_mode = adam_w_mode
        self.set_grad_none = set_grad_none

    def zero_grad(self, set_to_none: bool | None = None) -> None:
        super().zero_grad(set_to_none=self.set_grad_none if set_to_none is None else set_to_none)

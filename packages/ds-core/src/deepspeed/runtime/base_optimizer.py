"""``DeepSpeedOptimizer``: the base of the optimizers the engine wraps around a torch optimizer
(mixed precision here; ZeRO in ds-zero). Integrations check ``isinstance(opt, DeepSpeedOptimizer)``
to decide whether optimizer state goes through the engine's checkpoints."""

from __future__ import annotations


class DeepSpeedOptimizer:
    """Marker base; subclasses keep the wrapped torch optimizer in ``.optimizer``."""

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


class ZeROOptimizer(DeepSpeedOptimizer):
    """Base of the ZeRO optimizers (provided by ds-zero): subclasses keep ``loss_scaler`` and the
    last global gradient norm in ``_global_grad_norm``."""

    loss_scaler = None
    _global_grad_norm = None

    @property
    def loss_scale(self) -> float:
        return self.loss_scaler.loss_scale

    @property
    def cur_scale(self) -> float:
        return self.loss_scaler.cur_scale

    def get_global_grad_norm(self):
        return self._global_grad_norm

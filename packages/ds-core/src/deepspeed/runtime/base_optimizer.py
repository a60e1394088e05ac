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
    """Base of the ZeRO optimizers (provided by ds-zero)."""

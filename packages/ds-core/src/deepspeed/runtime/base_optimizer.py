"""``deepspeed.runtime.base_optimizer`` (DeepSpeed's path): the optimizer base integrations check
with ``isinstance``. Defined in the contract, :mod:`deepspeed.protocols.optimizer`."""

from deepspeed.protocols.optimizer import DeepSpeedOptimizer, EngineOptimizer

__all__ = ["DeepSpeedOptimizer", "EngineOptimizer"]

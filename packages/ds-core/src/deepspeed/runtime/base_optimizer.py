"""``deepspeed.runtime.base_optimizer`` (DeepSpeed's path): the optimizer bases integrations check
with ``isinstance``. ``DeepSpeedOptimizer`` is defined in the contract
(:mod:`deepspeed.protocols.optimizer`); ``ZeROOptimizer`` is DeepSpeed's base of the ZeRO
optimizers: any engine optimizer that partitions model states (``zero_stage`` 1-3, such as
ds-zero's) is one, without core importing the package that provides it."""

from deepspeed.protocols.optimizer import DeepSpeedOptimizer, EngineOptimizer


class _PartitioningCheck(type):
    def __instancecheck__(cls, obj) -> bool:
        if type.__instancecheck__(cls, obj):
            return True
        stage = getattr(obj, "zero_stage", 0)
        return isinstance(obj, DeepSpeedOptimizer) and isinstance(stage, int) and stage >= 1


class ZeROOptimizer(DeepSpeedOptimizer, metaclass=_PartitioningCheck):
    """``isinstance(opt, ZeROOptimizer)``: ``opt`` partitions model states (its ``zero_stage`` is
    1, 2 or 3). A class check (``issubclass``) only holds for real subclasses."""


__all__ = ["DeepSpeedOptimizer", "EngineOptimizer", "ZeROOptimizer"]

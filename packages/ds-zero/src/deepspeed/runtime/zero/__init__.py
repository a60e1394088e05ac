"""``deepspeed.runtime.zero`` (from ds-zero): the ZeRO optimizers and parameter partitioning."""

from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer

__all__ = ["DeepSpeedZeroOptimizer"]

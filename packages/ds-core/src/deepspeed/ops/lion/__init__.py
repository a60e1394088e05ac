"""``deepspeed.ops.lion``: ``DeepSpeedCPULion`` (native host kernel) and ``FusedLion``
(pure-torch multi-tensor Lion, any device)."""

from deepspeed.ops.lion.cpu_lion import DeepSpeedCPULion
from deepspeed.ops.lion.fused_lion import FusedLion

__all__ = ["DeepSpeedCPULion", "FusedLion"]

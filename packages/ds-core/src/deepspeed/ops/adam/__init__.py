"""``deepspeed.ops.adam``: ``DeepSpeedCPUAdam`` (native host kernel, ZeRO-Offload) and
``FusedAdam`` (torch's fused/foreach Adam under DeepSpeed's signature, any device)."""

from deepspeed.ops.adam.cpu_adam import DeepSpeedCPUAdam
from deepspeed.ops.adam.fused_adam import FusedAdam

__all__ = ["DeepSpeedCPUAdam", "FusedAdam"]

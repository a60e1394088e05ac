"""``deepspeed.ops.adagrad``: ``DeepSpeedCPUAdagrad`` (native host kernel)."""

from deepspeed.ops.adagrad.cpu_adagrad import DeepSpeedCPUAdagrad

__all__ = ["DeepSpeedCPUAdagrad"]

"""``deepspeed.ops.op_builder.cpu_adam`` (DeepSpeed's path): ``CPUAdamBuilder``, the builder of the installed ops
package for the current accelerator (:mod:`deepspeed.ops.op_builder._compat_names`)."""

from deepspeed.ops.op_builder._compat_names import BUILDER_CLASSES

CPUAdamBuilder = BUILDER_CLASSES["CPUAdamBuilder"]

__all__ = ["CPUAdamBuilder"]

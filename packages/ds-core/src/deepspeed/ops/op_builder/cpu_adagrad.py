"""``deepspeed.ops.op_builder.cpu_adagrad`` (DeepSpeed's path): ``CPUAdagradBuilder``, the builder of the installed ops
package for the current accelerator (:mod:`deepspeed.ops.op_builder._compat_names`)."""

from deepspeed.ops.op_builder._compat_names import BUILDER_CLASSES

CPUAdagradBuilder = BUILDER_CLASSES["CPUAdagradBuilder"]

__all__ = ["CPUAdagradBuilder"]

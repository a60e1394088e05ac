"""``deepspeed.ops.op_builder.cpu_lion`` (DeepSpeed's path): ``CPULionBuilder``, the builder of the installed ops
package for the current accelerator (:mod:`deepspeed.ops.op_builder._compat_names`)."""

from deepspeed.ops.op_builder._compat_names import BUILDER_CLASSES

CPULionBuilder = BUILDER_CLASSES["CPULionBuilder"]

__all__ = ["CPULionBuilder"]

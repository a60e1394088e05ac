"""``deepspeed.ops.op_builder.pin_memory`` (DeepSpeed's path): ``PinMemoryBuilder``, the builder of the installed ops
package for the current accelerator (:mod:`deepspeed.ops.op_builder._compat_names`)."""

from deepspeed.ops.op_builder._compat_names import BUILDER_CLASSES

PinMemoryBuilder = BUILDER_CLASSES["PinMemoryBuilder"]

__all__ = ["PinMemoryBuilder"]

"""``deepspeed.ops.op_builder.utils`` (DeepSpeed's path): ``UtilsBuilder``, the builder of the installed ops
package for the current accelerator (:mod:`deepspeed.ops.op_builder._compat_names`)."""

from deepspeed.ops.op_builder._compat_names import BUILDER_CLASSES

UtilsBuilder = BUILDER_CLASSES["UtilsBuilder"]

__all__ = ["UtilsBuilder"]

"""``deepspeed.ops.op_builder.fused_lion`` (DeepSpeed's path): ``FusedLionBuilder``, the builder of the installed ops
package for the current accelerator (:mod:`deepspeed.ops.op_builder._compat_names`)."""

from deepspeed.ops.op_builder._compat_names import BUILDER_CLASSES

FusedLionBuilder = BUILDER_CLASSES["FusedLionBuilder"]

__all__ = ["FusedLionBuilder"]

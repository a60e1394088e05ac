"""``deepspeed.ops.op_builder.fused_lamb`` (DeepSpeed's path): ``FusedLambBuilder``, the builder of the installed ops
package for the current accelerator (:mod:`deepspeed.ops.op_builder._compat_names`)."""

from deepspeed.ops.op_builder._compat_names import BUILDER_CLASSES

FusedLambBuilder = BUILDER_CLASSES["FusedLambBuilder"]

__all__ = ["FusedLambBuilder"]

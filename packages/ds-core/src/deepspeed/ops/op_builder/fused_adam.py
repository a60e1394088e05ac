"""``deepspeed.ops.op_builder.fused_adam`` (DeepSpeed's path): ``FusedAdamBuilder``, the builder of the installed ops
package for the current accelerator (:mod:`deepspeed.ops.op_builder._compat_names`)."""

from deepspeed.ops.op_builder._compat_names import BUILDER_CLASSES

FusedAdamBuilder = BUILDER_CLASSES["FusedAdamBuilder"]

__all__ = ["FusedAdamBuilder"]

"""``deepspeed.ops.op_builder.inference_cutlass_builder`` (DeepSpeed's path): ``InferenceCutlassBuilder``, the builder of the installed ops
package for the current accelerator (:mod:`deepspeed.ops.op_builder._compat_names`)."""

from deepspeed.ops.op_builder._compat_names import BUILDER_CLASSES

InferenceCutlassBuilder = BUILDER_CLASSES["InferenceCutlassBuilder"]

__all__ = ["InferenceCutlassBuilder"]

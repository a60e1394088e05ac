"""``deepspeed.ops.op_builder.inference_core_ops`` (DeepSpeed's path): ``InferenceCoreBuilder``, the builder of the installed ops
package for the current accelerator (:mod:`deepspeed.ops.op_builder._compat_names`)."""

from deepspeed.ops.op_builder._compat_names import BUILDER_CLASSES

InferenceCoreBuilder = BUILDER_CLASSES["InferenceCoreBuilder"]

__all__ = ["InferenceCoreBuilder"]

"""``deepspeed.ops.op_builder.ragged_ops`` (DeepSpeed's path): ``RaggedOpsBuilder``, the builder of the installed ops
package for the current accelerator (:mod:`deepspeed.ops.op_builder._compat_names`)."""

from deepspeed.ops.op_builder._compat_names import BUILDER_CLASSES

RaggedOpsBuilder = BUILDER_CLASSES["RaggedOpsBuilder"]

__all__ = ["RaggedOpsBuilder"]

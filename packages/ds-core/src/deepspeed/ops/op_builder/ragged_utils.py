"""``deepspeed.ops.op_builder.ragged_utils`` (DeepSpeed's path): ``RaggedUtilsBuilder``, the builder of the installed ops
package for the current accelerator (:mod:`deepspeed.ops.op_builder._compat_names`)."""

from deepspeed.ops.op_builder._compat_names import BUILDER_CLASSES

RaggedUtilsBuilder = BUILDER_CLASSES["RaggedUtilsBuilder"]

__all__ = ["RaggedUtilsBuilder"]

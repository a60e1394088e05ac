"""``deepspeed.ops.op_builder.random_ltd`` (DeepSpeed's path): ``RandomLTDBuilder``, the builder of the installed ops
package for the current accelerator (:mod:`deepspeed.ops.op_builder._compat_names`)."""

from deepspeed.ops.op_builder._compat_names import BUILDER_CLASSES

RandomLTDBuilder = BUILDER_CLASSES["RandomLTDBuilder"]

__all__ = ["RandomLTDBuilder"]

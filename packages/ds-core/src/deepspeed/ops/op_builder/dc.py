"""``deepspeed.ops.op_builder.dc`` (DeepSpeed's path): ``DeepCompileBuilder``, the builder of the installed ops
package for the current accelerator (:mod:`deepspeed.ops.op_builder._compat_names`)."""

from deepspeed.ops.op_builder._compat_names import BUILDER_CLASSES

DeepCompileBuilder = BUILDER_CLASSES["DeepCompileBuilder"]

__all__ = ["DeepCompileBuilder"]

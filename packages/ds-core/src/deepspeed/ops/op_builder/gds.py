"""``deepspeed.ops.op_builder.gds`` (DeepSpeed's path): ``GDSBuilder``, the builder of the installed ops
package for the current accelerator (:mod:`deepspeed.ops.op_builder._compat_names`)."""

from deepspeed.ops.op_builder._compat_names import BUILDER_CLASSES

GDSBuilder = BUILDER_CLASSES["GDSBuilder"]

__all__ = ["GDSBuilder"]

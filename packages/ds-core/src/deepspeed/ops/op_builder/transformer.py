"""``deepspeed.ops.op_builder.transformer`` (DeepSpeed's path): ``TransformerBuilder``, the builder of the installed ops
package for the current accelerator (:mod:`deepspeed.ops.op_builder._compat_names`)."""

from deepspeed.ops.op_builder._compat_names import BUILDER_CLASSES

TransformerBuilder = BUILDER_CLASSES["TransformerBuilder"]

__all__ = ["TransformerBuilder"]

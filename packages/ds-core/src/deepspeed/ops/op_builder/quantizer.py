"""``deepspeed.ops.op_builder.quantizer`` (DeepSpeed's path): ``QuantizerBuilder``, the builder of the installed ops
package for the current accelerator (:mod:`deepspeed.ops.op_builder._compat_names`)."""

from deepspeed.ops.op_builder._compat_names import BUILDER_CLASSES

QuantizerBuilder = BUILDER_CLASSES["QuantizerBuilder"]

__all__ = ["QuantizerBuilder"]

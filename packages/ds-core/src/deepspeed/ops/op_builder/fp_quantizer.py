"""``deepspeed.ops.op_builder.fp_quantizer`` (DeepSpeed's path): ``FPQuantizerBuilder``, the builder of the installed ops
package for the current accelerator (:mod:`deepspeed.ops.op_builder._compat_names`)."""

from deepspeed.ops.op_builder._compat_names import BUILDER_CLASSES

FPQuantizerBuilder = BUILDER_CLASSES["FPQuantizerBuilder"]

__all__ = ["FPQuantizerBuilder"]

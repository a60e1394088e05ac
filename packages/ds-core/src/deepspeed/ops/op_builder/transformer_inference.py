"""``deepspeed.ops.op_builder.transformer_inference`` (DeepSpeed's path): ``InferenceBuilder``, the builder of the installed ops
package for the current accelerator (:mod:`deepspeed.ops.op_builder._compat_names`)."""

from deepspeed.ops.op_builder._compat_names import BUILDER_CLASSES

InferenceBuilder = BUILDER_CLASSES["InferenceBuilder"]

__all__ = ["InferenceBuilder"]

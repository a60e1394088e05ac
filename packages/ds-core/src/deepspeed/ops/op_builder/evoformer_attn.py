"""``deepspeed.ops.op_builder.evoformer_attn`` (DeepSpeed's path): ``EvoformerAttnBuilder``, the builder of the installed ops
package for the current accelerator (:mod:`deepspeed.ops.op_builder._compat_names`)."""

from deepspeed.ops.op_builder._compat_names import BUILDER_CLASSES

EvoformerAttnBuilder = BUILDER_CLASSES["EvoformerAttnBuilder"]

__all__ = ["EvoformerAttnBuilder"]

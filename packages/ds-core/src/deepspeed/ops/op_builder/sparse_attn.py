"""``deepspeed.ops.op_builder.sparse_attn`` (DeepSpeed's path): ``SparseAttnBuilder``, the builder of the installed ops
package for the current accelerator (:mod:`deepspeed.ops.op_builder._compat_names`)."""

from deepspeed.ops.op_builder._compat_names import BUILDER_CLASSES

SparseAttnBuilder = BUILDER_CLASSES["SparseAttnBuilder"]

__all__ = ["SparseAttnBuilder"]

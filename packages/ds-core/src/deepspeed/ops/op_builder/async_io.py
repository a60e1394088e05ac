"""``deepspeed.ops.op_builder.async_io`` (DeepSpeed's path): ``AsyncIOBuilder``, the builder of the installed ops
package for the current accelerator (:mod:`deepspeed.ops.op_builder._compat_names`)."""

from deepspeed.ops.op_builder._compat_names import BUILDER_CLASSES

AsyncIOBuilder = BUILDER_CLASSES["AsyncIOBuilder"]

__all__ = ["AsyncIOBuilder"]

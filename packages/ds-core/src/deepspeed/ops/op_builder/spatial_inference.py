"""``deepspeed.ops.op_builder.spatial_inference`` (DeepSpeed's path): ``SpatialInferenceBuilder``, the builder of the installed ops
package for the current accelerator (:mod:`deepspeed.ops.op_builder._compat_names`)."""

from deepspeed.ops.op_builder._compat_names import BUILDER_CLASSES

SpatialInferenceBuilder = BUILDER_CLASSES["SpatialInferenceBuilder"]

__all__ = ["SpatialInferenceBuilder"]

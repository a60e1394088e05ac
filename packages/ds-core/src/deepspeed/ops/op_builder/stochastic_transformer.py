"""``deepspeed.ops.op_builder.stochastic_transformer`` (DeepSpeed's path): ``StochasticTransformerBuilder``, the builder of the installed ops
package for the current accelerator (:mod:`deepspeed.ops.op_builder._compat_names`)."""

from deepspeed.ops.op_builder._compat_names import BUILDER_CLASSES

StochasticTransformerBuilder = BUILDER_CLASSES["StochasticTransformerBuilder"]

__all__ = ["StochasticTransformerBuilder"]

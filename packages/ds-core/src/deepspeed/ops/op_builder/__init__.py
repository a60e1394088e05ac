"""``deepspeed.ops.op_builder``: the op-builder interface. Concrete builders live in the ops
packages and are registered under ``deepspeed.op_builders`` as ``<accelerator>.<op>``; every
build knob is defined in :mod:`deepspeed.ops.op_builder._knobs`. DeepSpeed's builder class names
(``CPUAdamBuilder``, ``FusedAdamBuilder``, ...) resolve to the installed ops package's builder
for the current accelerator (:mod:`deepspeed.ops.op_builder._compat_names`)."""

from deepspeed.ops.op_builder._compat_names import BUILDER_CLASSES as _BUILDER_CLASSES
from deepspeed.ops.op_builder.builder import CompileUnit, OpBuilder

globals().update(_BUILDER_CLASSES)

# Note: written out so the public-surface check can read it; tests/test_compat_ops keeps it equal to
# _compat_names.BUILDER_CLASSES.
__all__ = [
    "CompileUnit", "OpBuilder", "AsyncIOBuilder", "CCLCommBuilder", "CPUAdagradBuilder",
    "CPUAdamBuilder", "CPULionBuilder", "DeepCompileBuilder", "EvoformerAttnBuilder",
    "FPQuantizerBuilder", "FlashAttentionBuilder", "FusedAdamBuilder", "FusedLambBuilder",
    "FusedLionBuilder", "GDSBuilder", "InferenceBuilder", "InferenceCoreBuilder",
    "InferenceCutlassBuilder", "PackbitsBuilder", "PinMemoryBuilder", "QuantizerBuilder",
    "RaggedOpsBuilder", "RaggedUtilsBuilder", "RandomLTDBuilder", "ShareMemCommBuilder",
    "SparseAttnBuilder", "SpatialInferenceBuilder", "StochasticTransformerBuilder",
    "TransformerBuilder", "UtilsBuilder",
]

"""The feature object ds-core finds through the ``deepspeed.features`` entry point."""

from deepspeed.protocols import Cond, DeepSpeedFeature, FeatureProvides, Order, SectionUse

_OFF = (None, 0, 1)


class InferenceFeature(DeepSpeedFeature):
    DS_PLUGIN_API = "2.0"
    name = "inference"
    order = Order.MODEL_REWRITE
    # Note: Hugging Face writes tensor_parallel.autotp_size into training configs; a size of 1 (or
    # none) means no tensor parallelism, which needs nothing from this package.
    provides = FeatureProvides(
        modules=("deepspeed.inference",),
        sections={"tensor_parallel": SectionUse((Cond("autotp_size", "not_in", _OFF),
                                                 Cond("tensor_parallel/tp_size", "not_in", _OFF),
                                                 Cond("tp/tp_size", "not_in", _OFF)))},
        attributes={"tensor_parallel_config": None},
    )


feature = InferenceFeature()

"""The feature object ds-core finds through the ``deepspeed.features`` entry point."""

from deepspeed.protocols import DeepSpeedFeature, FeatureProvides, Order, SectionUse


class MoeFeature(DeepSpeedFeature):
    DS_PLUGIN_API = "2.0"
    name = "moe"
    order = Order.PARAMETER_GROUPS
    provides = FeatureProvides(
        modules=("deepspeed.moe",),
        sections={"moe": SectionUse(), "expert_parallel": SectionUse()},
        attributes={"expert_parallel_config": None},
    )


feature = MoeFeature()

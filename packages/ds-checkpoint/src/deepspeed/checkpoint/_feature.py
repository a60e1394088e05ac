"""The feature object ds-core finds through the ``deepspeed.features`` entry point."""

from deepspeed.protocols import DeepSpeedFeature, FeatureProvides, Order, SectionUse


class CheckpointFeature(DeepSpeedFeature):
    DS_PLUGIN_API = "2.0"
    name = "checkpoint"
    order = Order.DEFAULT
    # Note: the sections are declared (so ds-core names this package when they are enabled) but not
    # implemented yet: an enabled one is refused by ds-core as "not implemented by ds-checkpoint".
    provides = FeatureProvides(
        modules=("deepspeed.checkpoint",),
        sections={"nebula": SectionUse(), "datastates_ckpt": SectionUse()},
        attributes={"nebula_config": None, "datastates_config": None},
    )


feature = CheckpointFeature()

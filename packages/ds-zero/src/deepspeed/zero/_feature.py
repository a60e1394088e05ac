"""The feature object ds-core finds through the ``deepspeed.features`` entry point."""

from deepspeed.runtime.feature import DeepSpeedFeature


class ZeroFeature(DeepSpeedFeature):
    name = "zero"


feature = ZeroFeature()

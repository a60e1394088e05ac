"""The feature object ds-core finds through the ``deepspeed.features`` entry point."""

from deepspeed.runtime.feature import DeepSpeedFeature


class CheckpointFeature(DeepSpeedFeature):
    name = "checkpoint"


feature = CheckpointFeature()

"""The feature object ds-core finds through the ``deepspeed.features`` entry point.

Only declarations and checks live here. ``sequence_parallel_size`` is a core ds_config key: core
builds the sequence-parallel and sequence-data-parallel groups from it (``engine.topology``,
``deepspeed.utils.groups._get_sequence_parallel_group()``) and reduces gradients over the
sequence-data-parallel group, under ZeRO too; a size that does not divide the world is refused
there, while the config is parsed. This package adds the layers that use those groups.
"""

from deepspeed.protocols import DeepSpeedFeature, FeatureProvides, Order


class SequenceFeature(DeepSpeedFeature):
    DS_PLUGIN_API = "2.0"
    name = "sequence"
    order = Order.DEFAULT
    provides = FeatureProvides(modules=("deepspeed.sequence", "deepspeed.runtime.sequence_parallel"))

    def is_active(self, config):
        return int(getattr(config, "sequence_parallel_size", 1) or 1) > 1


feature = SequenceFeature()

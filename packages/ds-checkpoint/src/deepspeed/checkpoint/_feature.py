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

    def load_checkpoint(self, engine, load_dir, tag, options):
        """ds_config ``checkpoint.load_universal: true``: load ``ds_to_universal``'s layout at any
        data-parallel size and ZeRO stage; otherwise leave loading to core."""
        if not getattr(engine._config, "load_universal_checkpoint", False):
            return None
        from deepspeed.checkpoint import universal_checkpoint

        return universal_checkpoint.load(engine, load_dir, tag, options)


feature = CheckpointFeature()

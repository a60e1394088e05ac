"""The feature object ds-core finds through the ``deepspeed.features`` entry point."""

from deepspeed.protocols import Cond, DeepSpeedFeature, FeatureProvides, Order, SectionUse


class PipeFeature(DeepSpeedFeature):
    DS_PLUGIN_API = "2.0"
    name = "pipe"
    order = Order.SCHEDULE
    provides = FeatureProvides(
        modules=("deepspeed.pipe",),
        sections={"pipeline": SectionUse((Cond("", "not_in", ()),))},
        attributes={"pipeline": None},
    )

    def config_sections(self) -> dict[str, type]:
        from deepspeed.pipe.config import DeepSpeedPipelineConfig

        return {"pipeline": DeepSpeedPipelineConfig}

    def config_attributes(self, config) -> dict:
        # DeepSpeed's DeepSpeedConfig.pipeline: the section as a dict with its defaults filled in
        return {"pipeline": config.model.pipeline.model_dump()}


feature = PipeFeature()

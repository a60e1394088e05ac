"""The feature object ds-core finds through the ``deepspeed.features`` entry point."""

from deepspeed.runtime.feature import DeepSpeedFeature


class PipeFeature(DeepSpeedFeature):
    name = "pipe"

    def config_sections(self) -> dict[str, type]:
        from deepspeed.pipe.config import DeepSpeedPipelineConfig

        return {"pipeline": DeepSpeedPipelineConfig}


feature = PipeFeature()

"""The feature object ds-core finds through the ``deepspeed.features`` entry point."""

from deepspeed.runtime.feature import DeepSpeedFeature


class CompressionFeature(DeepSpeedFeature):
    name = "compression"

    def config_sections(self) -> dict[str, type]:
        from deepspeed.compression.config import DeepSpeedCompressionConfig

        return {"compression_training": DeepSpeedCompressionConfig}


feature = CompressionFeature()

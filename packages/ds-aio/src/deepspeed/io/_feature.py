"""The feature object ds-core finds through the ``deepspeed.features`` entry point."""

from deepspeed.runtime.feature import DeepSpeedFeature


class IoFeature(DeepSpeedFeature):
    name = "io"

    def config_sections(self) -> dict[str, type]:
        from deepspeed.io.config import DeepSpeedAIOConfig

        return {"aio": DeepSpeedAIOConfig}


feature = IoFeature()

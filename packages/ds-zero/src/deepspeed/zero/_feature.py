"""The feature object ds-core finds through the ``deepspeed.features`` entry point."""

from deepspeed.runtime.feature import DeepSpeedFeature


class ZeroFeature(DeepSpeedFeature):
    name = "zero"

    def config_sections(self) -> dict[str, type]:
        from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

        return {"zero_optimization": DeepSpeedZeroConfig}


feature = ZeroFeature()

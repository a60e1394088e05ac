"""The feature object ds-core finds through the ``deepspeed.features`` entry point."""

from deepspeed.protocols import Cond, DeepSpeedFeature, FeatureProvides, Order, SectionUse


class CompressionFeature(DeepSpeedFeature):
    DS_PLUGIN_API = "2.0"
    name = "compression"
    order = Order.MODEL_REWRITE
    provides = FeatureProvides(
        modules=("deepspeed.compression",),
        sections={
            # a technique matters once its shared_parameters.enabled is true
            "compression_training": SectionUse((Cond("*/shared_parameters/enabled", "in", (True,)),)),
            "weight_quantization": SectionUse((Cond("", "not_in", ()),)),
            "quantize_training": SectionUse(),
        },
        attributes={"compression_config": None, "weight_quantization_config": None,
                    "quantize_training_config": None},
    )

    def config_sections(self) -> dict[str, type]:
        from deepspeed.compression.config import DeepSpeedCompressionConfig

        return {"compression_training": DeepSpeedCompressionConfig}

    def config_attributes(self, config) -> dict:
        return {"compression_config": config.model.compression_training.model_dump(),
                "weight_quantization_config": None, "quantize_training_config": None}


feature = CompressionFeature()

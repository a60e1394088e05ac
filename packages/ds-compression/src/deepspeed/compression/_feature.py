"""The feature object ds-core finds through the ``deepspeed.features`` entry point."""

from deepspeed.protocols import Cond, DeepSpeedFeature, FeatureProvides, Order, SectionUse


class CompressionFeature(DeepSpeedFeature):
    DS_PLUGIN_API = "2.0"
    name = "compression"
    order = Order.MODEL_REWRITE
    provides = FeatureProvides(
        modules=("deepspeed.compression", "deepspeed.ops.quantizer", "deepspeed.ops.fp_quantizer"),
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

    def is_active(self, config) -> bool:
        return bool(config.model.compression_training.enabled_techniques)

    def transform_model(self, model, config):
        """With an enabled technique in ``compression_training``: ``init_compression`` (modules the
        user already converted keep their settings) and a ``compression_scheduler`` the engine's
        steps drive through :meth:`after_step`. Layer reduction needs the teacher, so it stays
        the user's ``init_compression(model, config, teacher_model)`` call."""
        section = config.model.compression_training
        if not [t for t in section.enabled_techniques if t != "layer_reduction"]:
            return model
        from deepspeed.compression.basic_layer import COMPRESS_LAYERS
        from deepspeed.compression.compress import init_compression
        from deepspeed.compression.scheduler import compression_scheduler

        body = section.model_dump()
        body["layer_reduction"] = {**body["layer_reduction"], "enabled": False}
        if not any(isinstance(m, COMPRESS_LAYERS) for m in model.modules()):
            init_compression(model, {"compression_training": body})
        model.__dict__["_ds_compression_scheduler"] = compression_scheduler(model, {"compression_training": body})
        return model

    def after_step(self, engine) -> None:
        scheduler = engine.module.__dict__.get("_ds_compression_scheduler")
        if scheduler is not None:
            scheduler.step()

    def checkpoint_state(self, engine) -> dict | None:
        scheduler = engine.module.__dict__.get("_ds_compression_scheduler")
        return None if scheduler is None else scheduler.state_dict()

    def load_checkpoint_state(self, engine, state, load_dir, tag, load_optimizer_states=True,
                              load_module_only=False) -> None:
        scheduler = engine.module.__dict__.get("_ds_compression_scheduler")
        if scheduler is not None and state is not None:
            scheduler.load_state_dict(state)

    def config_attributes(self, config) -> dict:
        return {"compression_config": config.model.compression_training.model_dump(),
                "weight_quantization_config": None, "quantize_training_config": None}


feature = CompressionFeature()

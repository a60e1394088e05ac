"""The feature object ds-core finds through the ``deepspeed.features`` entry point."""

from deepspeed.protocols import Cond, DeepSpeedFeature, FeatureProvides, Order, SectionUse


class IoFeature(DeepSpeedFeature):
    DS_PLUGIN_API = "2.0"
    name = "io"
    order = Order.DEFAULT
    # Note: Lightning writes an `aio` block into every config it generates; it only matters when
    # something offloads to NVMe, so without ds-aio it is ignored unless an offload device is nvme.
    provides = FeatureProvides(
        modules=("deepspeed.io",),
        sections={"aio": SectionUse((Cond("/zero_optimization/offload_param/device", "in", ("nvme",)),
                                     Cond("/zero_optimization/offload_optimizer/device", "in", ("nvme",))))},
        attributes={"aio_config": None},
    )

    def config_sections(self) -> dict[str, type]:
        from deepspeed.io.config import DeepSpeedAIOConfig

        return {"aio": DeepSpeedAIOConfig}

    def config_attributes(self, config) -> dict:
        return {"aio_config": config.model.aio.model_dump()}


feature = IoFeature()

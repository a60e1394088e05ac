"""The xpu plugin: registration, clear refusal where no xpu device exists, and the
conformance kit where one does."""

from deepspeed.testing.conformance import AcceleratorConformance, PluginRegistration


class TestRegistration(PluginRegistration):
    accelerator_name = "xpu"
    distribution = "ds-ops-xpu"
    communication_backend = "xccl"
    visible_devices_env = "ZE_AFFINITY_MASK"
    sdk_modules = ()


class TestConformance(AcceleratorConformance):
    """Skips, naming the reason, on a machine without a xpu device."""

    accelerator_name = "xpu"
    distribution = "ds-ops-xpu"
    op_builders = ()  # this package ships no op builders yet

"""The hpu plugin: registration, clear refusal where no hpu device exists, and the
conformance kit where one does."""

from deepspeed.testing.conformance import AcceleratorConformance, PluginRegistration


class TestRegistration(PluginRegistration):
    accelerator_name = "hpu"
    distribution = "ds-ops-hpu"
    communication_backend = "hccl"
    visible_devices_env = "HABANA_VISIBLE_MODULES"
    sdk_modules = ('habana_frameworks',)


class TestConformance(AcceleratorConformance):
    """Skips, naming the reason, on a machine without a hpu device."""

    accelerator_name = "hpu"
    distribution = "ds-ops-hpu"
    op_builders = ()  # this package ships no op builders yet

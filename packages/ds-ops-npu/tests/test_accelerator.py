"""The npu plugin: registration, clear refusal where no npu device exists, and the
conformance kit where one does."""

from deepspeed.testing.conformance import AcceleratorConformance, PluginRegistration


class TestRegistration(PluginRegistration):
    accelerator_name = "npu"
    distribution = "ds-ops-npu"
    communication_backend = "hccl"
    visible_devices_env = "ASCEND_RT_VISIBLE_DEVICES"
    sdk_modules = ('torch_npu',)


class TestConformance(AcceleratorConformance):
    """Skips, naming the reason, on a machine without a npu device."""

    accelerator_name = "npu"
    distribution = "ds-ops-npu"
    op_builders = ()  # this package ships no op builders yet

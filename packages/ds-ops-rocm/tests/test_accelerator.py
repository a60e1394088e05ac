"""The rocm plugin: registration, clear refusal where no rocm device exists, and the
conformance kit where one does."""

from deepspeed.testing.conformance import AcceleratorConformance, PluginRegistration


class TestRegistration(PluginRegistration):
    accelerator_name = "rocm"
    distribution = "ds-ops-rocm"
    communication_backend = "nccl"
    visible_devices_env = "HIP_VISIBLE_DEVICES"
    sdk_modules = ()


class TestConformance(AcceleratorConformance):
    """Skips, naming the reason, on a machine without a rocm device."""

    accelerator_name = "rocm"
    distribution = "ds-ops-rocm"
    op_builders = ()  # this package ships no op builders yet

"""The cuda plugin: registration, clear refusal where no cuda device exists, and the
conformance kit where one does."""

from deepspeed.testing.conformance import AcceleratorConformance, PluginRegistration


class TestRegistration(PluginRegistration):
    accelerator_name = "cuda"
    distribution = "ds-ops-cuda"
    communication_backend = "nccl"
    visible_devices_env = "CUDA_VISIBLE_DEVICES"
    sdk_modules = ()


class TestConformance(AcceleratorConformance):
    """Skips, naming the reason, on a machine without a cuda device."""

    accelerator_name = "cuda"
    distribution = "ds-ops-cuda"
    op_builders = ()  # this package ships no op builders yet

"""ds-ops-cpu's accelerator passes core's conformance kit and is what ds-core selects here."""

from deepspeed.testing.conformance import AcceleratorConformance, PluginRegistration


class TestCPUConformance(AcceleratorConformance):
    accelerator_name = "cpu"
    distribution = "ds-ops-cpu"
    op_builders = ("cpu_adam", "cpu_adagrad", "cpu_lion")


class TestCPURegistration(PluginRegistration):
    accelerator_name = "cpu"
    distribution = "ds-ops-cpu"
    communication_backend = "gloo"
    visible_devices_env = "CUDA_VISIBLE_DEVICES"
    sdk_modules = ()  # the host needs no SDK beyond torch

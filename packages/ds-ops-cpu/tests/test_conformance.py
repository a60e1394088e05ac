"""ds-ops-cpu's accelerator passes core's conformance kit and is what ds-core selects here."""

from deepspeed.testing.conformance import AcceleratorConformance


class TestCPUConformance(AcceleratorConformance):
    accelerator_name = "cpu"
    distribution = "ds-ops-cpu"

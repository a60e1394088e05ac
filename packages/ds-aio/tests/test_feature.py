"""ds-aio installs into the `deepspeed` namespace and registers its feature."""

from deepspeed.testing.conformance import FeatureRegistration


class TestFeatureRegistration(FeatureRegistration):
    feature = "io"
    distribution = "ds-aio"

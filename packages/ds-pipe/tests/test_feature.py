"""ds-pipe installs into the `deepspeed` namespace and registers its feature."""

from deepspeed.testing.conformance import FeatureRegistration


class TestFeatureRegistration(FeatureRegistration):
    feature = "pipe"
    distribution = "ds-pipe"

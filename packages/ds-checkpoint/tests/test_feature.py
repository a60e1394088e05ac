"""ds-checkpoint installs into the `deepspeed` namespace and registers its feature."""

from deepspeed.testing.conformance import FeatureRegistration


class TestFeatureRegistration(FeatureRegistration):
    feature = "checkpoint"
    distribution = "ds-checkpoint"

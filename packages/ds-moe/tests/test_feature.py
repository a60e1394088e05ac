"""ds-moe installs into the `deepspeed` namespace and registers its feature."""

from deepspeed.testing.conformance import FeatureRegistration


class TestFeatureRegistration(FeatureRegistration):
    feature = "moe"
    distribution = "ds-moe"

"""ds-inference installs into the `deepspeed` namespace and registers its feature."""

from deepspeed.testing.conformance import FeatureRegistration


class TestFeatureRegistration(FeatureRegistration):
    feature = "inference"
    distribution = "ds-inference"

"""ds-sequence installs into the `deepspeed` namespace and registers its feature."""

from deepspeed.testing.conformance import FeatureRegistration


class TestFeatureRegistration(FeatureRegistration):
    feature = "sequence"
    distribution = "ds-sequence"

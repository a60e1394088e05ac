"""``deepspeed.runtime.feature``: the feature object's base class (kept at its first path).
The contract lives in :mod:`deepspeed.protocols.feature`."""

from deepspeed.protocols.feature import DeepSpeedFeature, FeatureProvides, Order, SectionUse

__all__ = ["DeepSpeedFeature", "FeatureProvides", "Order", "SectionUse"]

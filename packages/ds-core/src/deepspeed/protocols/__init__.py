"""``deepspeed.protocols``: the contract between ds-core and the packages that plug into it.

Only interfaces live here, no implementation: :mod:`.feature` (the feature object and its hooks,
how they compose), :mod:`.optimizer` (the optimizer the engine drives), :mod:`.engine` (what a
hook may read from the engine). The ds-core README's feature-author guide explains them.
"""

from deepspeed.protocols.engine import EngineView
from deepspeed.protocols.feature import (
    HOOKS,
    Cond,
    DeepSpeedFeature,
    FeatureProvides,
    GradientGroup,
    HookSpec,
    Order,
    SectionUse,
)
from deepspeed.protocols.optimizer import DeepSpeedOptimizer, EngineOptimizer, Fragment

__all__ = ["HOOKS", "Cond", "DeepSpeedFeature", "DeepSpeedOptimizer", "EngineOptimizer", "EngineView",
           "FeatureProvides", "Fragment", "GradientGroup", "HookSpec", "Order", "SectionUse"]

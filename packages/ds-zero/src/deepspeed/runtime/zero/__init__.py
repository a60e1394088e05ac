"""``deepspeed.runtime.zero`` (from ds-zero): the ZeRO optimizers and parameter partitioning.

DeepSpeed's names here: ``DeepSpeedZeroOptimizer`` and, from :mod:`.partition_parameters` (imported
on first use), ``Init``, ``GatheredParameters``, ``ZeroParamStatus``, ``ZeroParamType``,
``register_external_parameter``, ``unregister_external_parameter``.
"""

import importlib

from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer

_PARTITIONING = ("Init", "GatheredParameters", "ZeroParamStatus", "ZeroParamType", "register_external_parameter",
                 "unregister_external_parameter")


def __getattr__(name):
    if name in _PARTITIONING:
        value = getattr(importlib.import_module("deepspeed.runtime.zero.partition_parameters"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'deepspeed.runtime.zero' has no attribute '{name}'")


__all__ = ["DeepSpeedZeroOptimizer", *_PARTITIONING]  # noqa: F822 (module __getattr__)

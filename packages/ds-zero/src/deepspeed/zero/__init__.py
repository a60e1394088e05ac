"""``deepspeed.zero`` (from ds-zero): ZeRO stages 1-3, ZeRO-Offload, ``zero.Init`` and zero_to_fp32.

Public names (DeepSpeed's): :class:`Init`, :class:`GatheredParameters`,
:func:`register_external_parameter`, :func:`unregister_external_parameter`,
:class:`ZeroParamStatus`, :class:`ZeroParamType`. The optimizers live in
``deepspeed.runtime.zero`` (``stage_1_and_2.DeepSpeedZeroOptimizer``, ``stage3``).
"""

from deepspeed.zero._version import __version__

_LAZY = {
    "Init": "deepspeed.runtime.zero.partition_parameters",
    "GatheredParameters": "deepspeed.runtime.zero.partition_parameters",
    "register_external_parameter": "deepspeed.runtime.zero.partition_parameters",
    "unregister_external_parameter": "deepspeed.runtime.zero.partition_parameters",
    "ZeroParamStatus": "deepspeed.runtime.zero.partition_parameters",
    "ZeroParamType": "deepspeed.runtime.zero.partition_parameters",
    "MiCS_Init": "deepspeed.runtime.zero.mics",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    # Note: lazy, so `import deepspeed.zero` (ds_report, the plugin registry) does not import torch.
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'deepspeed.zero' has no attribute {name!r}")

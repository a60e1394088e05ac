"""``deepspeed.compression`` (from ds-compression): quantization-aware training, pruning, layer
reduction (``init_compression`` / ``redundancy_clean`` / ``compression_scheduler``) and
ZeroQuant post-training quantization (:mod:`deepspeed.compression.zeroquant`)."""

from deepspeed.compression._version import __version__

_LAZY = {
    "init_compression": "deepspeed.compression.compress",
    "redundancy_clean": "deepspeed.compression.compress",
    "compression_scheduler": "deepspeed.compression.scheduler",
    "convert_conv1d_to_linear": "deepspeed.compression.helper",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'deepspeed.compression' has no attribute {name!r}")

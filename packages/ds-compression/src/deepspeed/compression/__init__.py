"""``deepspeed.compression`` (from ds-compression): quantization-aware training, pruning, layer reduction, post-training quantization.

Not implemented yet: this release installs the namespace and registers the feature with
ds-core so configs and ``ds_report`` see it; it offers no compression API until the feature lands.
"""

from deepspeed.compression._version import __version__

__all__ = ["__version__"]

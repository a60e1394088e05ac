"""``deepspeed.zero`` (from ds-zero): ZeRO stages 1-3, ZeRO-Offload, ZeRO++, MiCS, `zero.Init`, zero_to_fp32.

Not implemented yet: this release installs the namespace and registers the feature with
ds-core so configs and ``ds_report`` see it; it offers no zero API until the feature lands.
"""

from deepspeed.zero._version import __version__

__all__ = ["__version__"]

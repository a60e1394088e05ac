"""``deepspeed.io`` (from ds-aio): async I/O handles, tensor swapping (ZeRO-Infinity), the `ds_io` tool.

Not implemented yet: this release installs the namespace and registers the feature with
ds-core so configs and ``ds_report`` see it; it offers no io API until the feature lands.
"""

from deepspeed.io._version import __version__

__all__ = ["__version__"]
